"""What a caller may write (R1, R6, R8, R11–R20), one resource at a time, against the facts of
the request's :class:`Access`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz import lifecycle
from authz.lifecycle import Change, LifecycleError
from authz.matrix import AuthorisationMatrix
from authz.policy.access import (
    CONTENT_TYPES,
    DIRECTORY_TYPES,
    RECORD_TYPES,
    SUBSCRIBERS,
    Access,
    Denied,
    same_person,
    subscription_criteria,
)
from authz.policy.documents import (
    archived,
    authored_by_patient,
    is_the_patient,
    labels,
    names_author,
    replacements,
    without_labels_and_archive,
)
from authz.state import Ident, PatientState, decision_of
from authz.terms import (
    ACCESS,
    ADMINISTRATION,
    BLOCK,
    DOCTOR,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    LEGAL_REPRESENTATIVE,
    MASKED_FROM_PROFESSIONALS,
    MEDECIN_TRAITANT,
    PATIENT,
    PATIENT_DOCUMENT_CLASS,
    PROFESSIONAL,
    REPRESENTATIVE,
    SYSTEM,
)
from fhirmodel.dates import us_to_date
from fhirmodel.indexing import patient_id_in


class WriteRules:
    matrix: AuthorisationMatrix
    retention_years: int

    def check_write(
        self,
        access: Access,
        method: str,
        resource_type: str,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        facts: WriteFacts,
    ) -> None:
        """Refuse a create, update, patch or delete the rules do not allow (R1, R2, R15–R20)."""
        role = access.role
        if resource_type in DIRECTORY_TYPES:
            # The directory says who authored a document (R10, R19) and who is a doctor (R6): a
            # professional rewriting it would make themselves the author of others' documents, and
            # a feed only creates documents (R9). The administration keeps it.
            if role == ADMINISTRATION:
                return
            raise Denied(f"{role} may not change the directory of professionals")
        if resource_type == "AuditEvent":
            raise Denied("the access trail is written by the server only", status=405, rule="R17")
        ins = access.actor.patient
        if ins is None:
            raise Denied("this request needs a person_id naming the patient", rule="R1")
        for resource in (new, old):
            if resource is not None and not about(resource, ins, access.state):
                raise Denied("the resource is about another patient than the token's", rule="R1")
        if resource_type == "Patient":
            return self._patient_write(access, method, new, old, facts)
        state = access.state
        if state is None:
            raise Denied("there is no DMP for this patient", status=404)
        if not state.active:
            raise Denied("this DMP is closed", rule="R2")
        if resource_type == "Consent":
            return self._consent_write(access, method, new, old, facts)
        if resource_type == "DocumentReference":
            return self._document_write(access, method, new, old, facts)
        if resource_type == "Subscription":
            return self._subscription_write(access, method, new, old)
        if resource_type in ("List", *CONTENT_TYPES):
            if method == "POST" and role in (PROFESSIONAL, SYSTEM, PATIENT, LEGAL_REPRESENTATIVE):
                return  # submission sets and content travel with documents (R15)
            raise Denied(f"{role} may not {method} a {resource_type}", rule="R15")
        if resource_type == "RelatedPerson" and role in (PATIENT, LEGAL_REPRESENTATIVE):
            return
        raise Denied(f"{role} may not write {resource_type} in a DMP")

    def _patient_write(
        self,
        access: Access,
        method: str,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        facts: WriteFacts,
    ) -> None:
        """Create (R20), close and reopen (R2, R20), or amend a DMP's Patient."""
        role = access.role
        if method == "DELETE" or new is None:
            raise Denied("a DMP is closed, never deleted", rule="R20")
        if old is None:
            if access.state is not None:
                raise Denied("this patient already has a DMP", status=409, rule="R20")
            by_the_patient = role == PATIENT and _creates_own_dmp_with_a_code(access, facts)
            if role not in (PROFESSIONAL, ADMINISTRATION) and not by_the_patient:
                raise Denied(f"{role} may not create a DMP", rule="R20")
            if not lifecycle.is_open(new):
                raise Denied("a DMP is created open (R20)", status=422, rule="R20", expression=("Patient.active",))
            return _lifecycle_consistent(lifecycle.check_no_closure, new)
        match lifecycle.change_of(old, new):
            case Change.CLOSE:
                # The patient, a representative, or a professional who reaches the record at the
                # patient's request; an emergency access is no such request.
                at_request = role == PROFESSIONAL and access.reads_record and not access.emergency
                if role not in (PATIENT, LEGAL_REPRESENTATIVE) and not at_request:
                    raise Denied(f"{role} may not close this DMP", rule="R20")
                _lifecycle_consistent(lambda p: lifecycle.check_closure(p, access.now), new)
            case Change.REOPEN:
                if role not in (PATIENT, LEGAL_REPRESENTATIVE):
                    raise Denied("a DMP is reopened by the patient or a legal representative only", rule="R20")
                _lifecycle_consistent(lifecycle.check_no_closure, new)
                too_late = lifecycle.check_reopening(old, us_to_date(access.now), self.retention_years)
                if too_late:
                    raise Denied(too_late, rule="R20")
            case Change.STAYS_CLOSED:
                raise Denied("this DMP is closed: it may only be reopened (Patient.active = true)", rule="R2")
            case Change.STAYS_OPEN:
                if role not in (PATIENT, LEGAL_REPRESENTATIVE, ADMINISTRATION) and not (
                    role == PROFESSIONAL and access.reads_record
                ):
                    raise Denied(f"{role} may not change this DMP", rule="R20")
                _lifecycle_consistent(lifecycle.check_no_closure, new)

    def _consent_write(
        self,
        access: Access,
        method: str,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        facts: WriteFacts,
    ) -> None:
        decision = decision_of(new) if new is not None else None
        previous = decision_of(old) if old is not None else None
        if new is not None and decision is None:
            raise Denied("a DMP Consent has exactly one category of dmp-consent-type", status=422, rule="R16")
        if decision and previous and decision.category != previous.category:
            raise Denied("a Consent's category cannot change", status=422, rule="R16")
        known = decision or previous
        category = known.category if known else ""
        role = access.role
        creating = method == "POST"
        allowed = (
            (
                role in (PATIENT, LEGAL_REPRESENTATIVE)
                and category in (ACCESS, BLOCK, EMERGENCY_ACCESS, MEDECIN_TRAITANT)
            )
            or (role == ADMINISTRATION and category == REPRESENTATIVE)
            or (role == PROFESSIONAL and category == REPRESENTATIVE and creating and facts.dmp_created_here)
            or (role == PROFESSIONAL and access.medecin_traitant and creating and category in (BLOCK, MEDECIN_TRAITANT))
        )
        if not allowed:
            raise Denied(f"{role} may not {method} a '{category}' Consent", rule="R16" if category != BLOCK else "R6")
        if decision and category == MEDECIN_TRAITANT and decision.permit and method != "DELETE":
            self._check_designation(access, decision.actors, facts)

    @staticmethod
    def _check_designation(access: Access, actors: tuple[Ident, ...], facts: WriteFacts) -> None:
        """R6: the médecin traitant is one doctor who already holds R3 access."""
        assert access.state is not None
        if len(actors) != 1 or actors[0][0] != IDNATPS_SYSTEM:
            raise Denied("the médecin traitant is one professional named by idNatPs", status=422, rule="R6")
        if not access.state.granted(actors[0], access.now):
            raise Denied("the médecin traitant must first be authorised (R3)", status=422, rule="R6")
        professions = facts.professions_of(actors[0][1])
        if professions is None:
            message = (
                f"the médecin traitant {actors[0][1]} is not in the server's directory of professionals (a Practitioner"
                " with this idNatPs, written by ADM or loaded by 'dmp-server directory import'), where R6 checks that"
                " they are a doctor"
            )
            raise Denied(message, status=422, rule="R6")
        if DOCTOR not in professions:
            recorded = ", ".join(sorted(professions)) or "no profession"
            message = f"the médecin traitant must be a doctor (TRE_G15 10): the directory records {recorded} for them"
            raise Denied(message, status=422, rule="R6")

    @staticmethod
    def _subscription_write(
        access: Access, method: str, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        """R22: the patient, or a representative acting for them (R8), asks for alerts about the
        documents of their own DMP, and of no other (R1)."""
        if access.role not in SUBSCRIBERS:
            raise Denied(f"{access.role} may not {method} a Subscription: alerts are the patient's", rule="R22")
        assert access.state is not None
        allowed = subscription_criteria(access.state)
        if old is not None and old.get("criteria") not in allowed:
            raise Denied("no such Subscription in this DMP", status=404, rule="R1")
        if new is not None and new.get("criteria") not in allowed:
            forms = " or ".join(allowed)
            raise Denied(
                f"Subscription.criteria must be one of: {forms} (this DMP's documents)",
                status=422,
                rule="R22",
                expression=("Subscription.criteria",),
            )

    def _document_write(
        self,
        access: Access,
        method: str,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        facts: WriteFacts,
    ) -> None:
        role = access.role
        state = access.state
        assert state is not None
        if new is not None:
            _check_attachments(state, new, facts)
            self._check_replacements(access, new, old, facts)
        if method == "POST" or old is None:
            assert new is not None
            if role in (PROFESSIONAL, SYSTEM):
                pass  # R15: feeding needs no authorisation (a blocked professional was refused already)
            elif role in (PATIENT, LEGAL_REPRESENTATIVE):
                self._check_patient_document(role, new, state)
            else:
                raise Denied(f"{role} may not add documents to a DMP", rule="R15")
            # A new document's labels are labels set by its creator (R18), who reads it.
            _check_labels_and_content(role, {}, new, is_author=True)
            return
        is_author = self._is_author(access, old, facts)
        if method == "DELETE":
            if is_author:
                return
            raise Denied("only a document's author deletes it", rule="R19")
        assert new is not None
        if role == PROFESSIONAL and not self._sees(access, old, facts):
            raise Denied("the document is not visible to this professional", status=404)
        _check_labels_and_content(role, old, new, is_author)
        rewritten = without_labels_and_archive(old) != without_labels_and_archive(new)
        if rewritten and role in (PATIENT, LEGAL_REPRESENTATIVE):
            self._check_patient_document(role, new, state)  # their own document stays what R15 lets them add

    def _check_patient_document(self, role: str, document: dict[str, Any], state: PatientState) -> None:
        """R15: what the patient, or a representative for them, adds is the patient's own — every
        author is this DMP's Patient, so that no professional is made the author of it (and thereby
        its reader and the one who may delete it, R10, R19) — and of class 90, the class kept for
        documents patients deposit. The class is the type's (the matrix's type → class map)."""
        authors = document.get("author") or []
        if not authors or not all(is_the_patient(a, document, state) for a in authors):
            message = f"{role}: the author of a document the patient adds is this DMP's Patient, and only they"
            raise Denied(message, rule="R15", expression=("DocumentReference.author",))
        classes = self._classes_of(document)
        if classes != {PATIENT_DOCUMENT_CLASS}:
            kind = f"is of class {', '.join(sorted(classes))}" if classes else "has no DMP class"
            message = (
                f"{role}: the patient adds documents of class {PATIENT_DOCUMENT_CLASS} only (Autres documents "
                f"déposés par le patient); this DocumentReference.type {kind}"
            )
            raise Denied(message, rule="R15", expression=("DocumentReference.type",))

    def _check_replacements(
        self, access: Access, new: dict[str, Any], old: dict[str, Any] | None, facts: WriteFacts
    ) -> None:
        """R19: only a document's author replaces it (``relatesTo`` ``replaces``).

        A feed (TCU), staff and the administration author no document — a feed does not say which
        professional it acts for — so they replace none, whatever the target (403). Otherwise a
        target that does not exist, is another patient's, or is hidden from a caller who did not
        author it gets one and the same answer (422, not found): whether a document one may not see
        exists is no one's business (R10–R13). A target the caller sees but did not author: 403.
        """
        state = access.state
        assert state is not None
        before = replacements(old) if old else {}
        added = {target: where for target, where in replacements(new).items() if target not in before}
        if not added:
            return
        if access.role not in (PROFESSIONAL, PATIENT, LEGAL_REPRESENTATIVE):
            raise Denied(f"{access.role} authors no document, so replaces none", rule="R19")
        for target, where in sorted(added.items()):
            replaced = facts.read("DocumentReference", target)
            ours = replaced is not None and about(replaced, state.ins, state)
            author = ours and replaced is not None and self._is_author(access, replaced, facts)
            if not author and not (ours and facts.visible("DocumentReference", target)):
                message = f"{where}: DocumentReference/{target} is no document of this patient known here"
                raise Denied(message, status=422, rule="R19", code="not-found", expression=(where,))
            if not author:
                raise Denied(f"DocumentReference/{target}: only a document's author replaces it", rule="R19")

    @staticmethod
    def _is_author(access: Access, document: dict[str, Any], facts: WriteFacts) -> bool:
        """Whether the actor authored ``document``: the professional it names, or the patient
        (acting themselves or through a representative) for a patient-authored one."""
        assert access.state is not None
        if access.role == PROFESSIONAL:
            return names_author(document, access.actor.idnatps, facts.read)
        if access.role in (PATIENT, LEGAL_REPRESENTATIVE):
            return authored_by_patient(document, access.state)
        return False

    def _classes_of(self, document: dict[str, Any]) -> set[str]:
        """The TRE_A03 classes of the document's type codings (JDV_J66 map); empty for none."""
        classes = {
            self.matrix.class_of(str(c.get("system")), str(c.get("code")))
            for c in (document.get("type") or {}).get("coding") or []
        }
        return {c for c in classes if c is not None}

    def _sees(self, access: Access, document: dict[str, Any], facts: WriteFacts) -> bool:
        """Whether a professional may read ``document`` (R10, R11): for R18's "can read it"."""
        if names_author(document, access.actor.idnatps, facts.read):
            return True
        profession = access.actor.profession
        types = {(c.get("system"), c.get("code")) for c in (document.get("type") or {}).get("coding") or []}
        readable = bool(profession) and any(self.matrix.may_read(profession or "", str(s), str(c)) for s, c in types)
        masked = MASKED_FROM_PROFESSIONALS in labels(document)
        return readable and (access.medecin_traitant or not masked)


def _lifecycle_consistent(check: Callable[[dict[str, Any]], None], patient: dict[str, Any]) -> None:
    """A closure or reopening that is not consistent is an invalid change (422), not a refusal."""
    try:
        check(patient)
    except LifecycleError as exc:
        raise Denied(str(exc), status=422, rule="R20", expression=(exc.element,)) from None


@dataclass(frozen=True)
class WriteFacts:
    """Facts about the request a write rule needs besides the access decision."""

    dmp_created_here: bool  # the request created this DMP (R16: representatives recorded at creation)
    # TRE_G15 professions of an idNatPs, from the directory; None when the directory does not know them
    professions_of: Callable[[str], frozenset[str] | None]
    read: Callable[[str, str], dict[str, Any] | None]  # a stored resource by type and id, whoever may see it
    visible: Callable[[str, str], bool]  # whether the caller may see that stored resource (the read filter)
    attaching: Callable[[str, str], list[dict[str, Any]]]  # the documents whose content is that resource
    # R20: whether this request's transaction consumed a DMP creation code for that INS
    creation_code_consumed: Callable[[Ident], bool]


def _check_labels_and_content(role: str, old: dict[str, Any], new: dict[str, Any], is_author: bool) -> None:
    """A write changes visibility labels, the archive flag, or — its author only — the rest (R18, R19).

    A creation goes through here too, from no labels at all: the labels a new document carries are
    set by whoever creates it.
    """
    before, after = labels(old), labels(new)
    if INVISIBLE_TO_PATIENT in after and MASKED_FROM_PROFESSIONALS in after:
        raise Denied("a document is never both INVISIBLE_PATIENT and MASQUE_PS", status=422, rule="R18")
    changed = before ^ after
    if MASKED_FROM_PROFESSIONALS in changed and role not in (PATIENT, LEGAL_REPRESENTATIVE):
        raise Denied("MASQUE_PS is set and removed by the patient", rule="R18")
    if changed & {INVISIBLE_TO_PATIENT, INVISIBLE_TO_REPRESENTATIVES} and role != PROFESSIONAL:
        raise Denied("invisibility labels are set by a professional who can read the document", rule="R18")
    if archived(old) != archived(new) and role not in (PATIENT, LEGAL_REPRESENTATIVE):
        raise Denied("archiving is the patient's decision", rule="R19")
    if without_labels_and_archive(old) != without_labels_and_archive(new) and not is_author:
        raise Denied("only a document's author changes it", rule="R19")


def _creates_own_dmp_with_a_code(access: Access, facts: WriteFacts) -> bool:
    """R20, CONTRACT §3: the patient creates their own DMP only with a creation code, consumed in
    the very transaction of the creation (authz.authserver.creation_codes)."""
    ins = access.actor.patient
    return ins is not None and same_person(access.actor, ins) and facts.creation_code_consumed(ins)


def about(resource: dict[str, Any], ins: Ident, state: PatientState | None) -> bool:
    """Whether a resource written under a token about ``ins`` is about that patient (R1)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        # Every INS the Patient carries is the token's: a second one would merge another
        # patient's record into this DMP. (A person known by both an INS-NIR and an INS-NIA is
        # thereby refused too; the reading that keeps records apart wins.)
        carried = [
            (i.get("system"), i.get("value"))
            for i in resource.get("identifier") or []
            if isinstance(i, dict) and i.get("system") in INS_SYSTEMS
        ]
        return ins in carried and all(ident == ins for ident in carried)
    param = RECORD_TYPES.get(str(rtype))
    if param is None or rtype == "AuditEvent":
        return True
    ref = resource.get(param)
    if not isinstance(ref, dict):
        return rtype == "List"  # a folder need not name a subject
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("system") and (ident.get("system"), ident.get("value")) != ins:
        return False
    literal = ref.get("reference")
    if isinstance(literal, str):
        return patient_id_in(literal) in (state.patient_ids if state else ())
    return isinstance(ident, dict) and bool(ident.get("value"))


def _check_attachments(state: PatientState, doc: dict[str, Any], facts: WriteFacts) -> None:
    """R1: a document points only at content no other patient's document points at."""
    for attachment in (c.get("attachment") or {} for c in doc.get("content") or []):
        parts = str(attachment.get("url", "")).rstrip("/").split("/")
        if len(parts) < 2 or parts[-2] not in CONTENT_TYPES:
            continue
        if any(not about(other, state.ins, state) for other in facts.attaching(parts[-2], parts[-1])):
            raise Denied("this content belongs to another patient's document", rule="R1")
