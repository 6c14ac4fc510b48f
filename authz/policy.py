"""The DMP access rules (DMP-RULES.md R1–R20) as decisions and query filters.

For one request the policy builds an :class:`Access`: who the actor is, the state of the DMP the
token is about, and what the actor may do there. Reads get a per-type **filter** that the store
adds inside every query — totals, paging, includes, chains and ``_has`` included — so nothing
hidden is ever counted, listed or hinted at. Writes are checked one resource at a time against
the same facts. Every method either returns or raises :class:`Denied`; nothing is allowed by
falling through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz import lifecycle
from authz.actor import Actor
from authz.lifecycle import DEFAULT_RETENTION_YEARS, Change, LifecycleError
from authz.matrix import AuthorisationMatrix
from authz.state import Ident, PatientState, decision_of
from authz.terms import (
    ACCESS,
    ADMINISTRATION,
    BLOCK,
    BREAK_THE_GLASS,
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
    REGULATION_CENTRE,
    REPRESENTATIVE,
    SYSTEM,
    VISIBILITY_SYSTEM,
)
from fhirmodel.dates import us_to_date
from fhirmodel.indexing import patient_id_in
from storage.query import (
    EVERYTHING,
    NOTHING,
    Chain,
    Expr,
    Has,
    Not,
    Reference,
    ReferenceIdentifier,
    String,
    Token,
    TokenIn,
    all_of,
    any_of,
)

#: Resource types that hold no patient data: any identified caller reads them.
DIRECTORY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Device"})
#: Resource types of a patient's record, each bound to the patient by one reference parameter.
RECORD_TYPES = {
    "DocumentReference": "subject",
    "List": "subject",
    "Consent": "patient",
    "AuditEvent": "patient",
    "RelatedPerson": "patient",
}
#: The parameters that name the patient, one of which every search of these types must carry
#: (CONTRACT §7; IHE MHD ITI-67 and ITI-66 require ``patient`` or ``patient.identifier``).
PATIENT_PARAMETERS = {
    "DocumentReference": frozenset({"patient", "subject"}),
    "List": frozenset({"patient", "subject"}),
    "Consent": frozenset({"patient"}),
    "AuditEvent": frozenset({"patient", "entity-identifier"}),
}
#: Content resources reachable only through the DocumentReference that points at them.
CONTENT_TYPES = frozenset({"Binary", "Bundle"})
#: Who asks for alerts on a DMP (R22): the patient, or a representative acting for them (R8).
SUBSCRIBERS = frozenset({PATIENT, LEGAL_REPRESENTATIVE})


class Denied(Exception):
    """A refusal. ``status`` 403 where the record's existence is no secret, 404 otherwise; 422 for
    a change the rules refuse whoever asks. ``code`` and ``expression`` say more when the refusal is
    about one element of the resource sent."""

    def __init__(
        self,
        message: str,
        status: int = 403,
        rule: str | None = None,
        *,
        code: str | None = None,
        expression: tuple[str, ...] = (),
    ):
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.code = code
        self.expression = expression


def subscription_criteria(state: PatientState) -> tuple[str, ...]:
    """The criteria a Subscription of this DMP may have: its documents, the patient named by the
    Patient's id or by the INS (R22). Exact strings, so that the stored criteria alone binds a
    Subscription to one DMP (R1) and the filter of :meth:`DmpPolicy.subscriptions` can match them."""
    by_id = (f"DocumentReference?patient=Patient/{pid}" for pid in state.patient_ids)
    return (*by_id, f"DocumentReference?patient.identifier={state.ins[0]}|{state.ins[1]}")


@dataclass(frozen=True)
class Access:
    """What one actor may do in one DMP, decided once per request."""

    actor: Actor
    state: PatientState | None  # None: no DMP for this INS (or no patient in the token)
    now: int  # UTC microseconds: every rule of the request is judged at the same instant
    reads_record: bool  # may read the record's documents (R3, R5, R7, R8)
    emergency: bool  # reached through R5 only
    medecin_traitant: bool  # R6

    @property
    def ins(self) -> Ident | None:
        return self.state.ins if self.state else self.actor.patient

    @property
    def role(self) -> str:
        return self.actor.role

    @property
    def reads_patient(self) -> bool:
        """R2: a closed DMP's Patient is read by the patient, their representatives and ADM only."""
        return self.state is not None and (
            self.state.active or self.role in (PATIENT, LEGAL_REPRESENTATIVE, ADMINISTRATION)
        )

    @property
    def reads_trail(self) -> bool:
        """R17: the patient, the representatives and the médecin traitant read the trail."""
        return self.reads_record and (self.role in (PATIENT, LEGAL_REPRESENTATIVE) or self.medecin_traitant)


def _now_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _same_person(actor: Actor, ins: Ident) -> bool:
    """``sub`` is the caller's INS, bare or as ``system|value`` (CONTRACT §2)."""
    subject = actor.subject
    return subject == ins[1] or subject == f"{ins[0]}|{ins[1]}"


def _person_idents(actor: Actor) -> list[Ident]:
    """The INS a person is known by in Consents: ``sub`` as ``system|value``, or a bare value
    under any INS system."""
    system, sep, value = actor.subject.rpartition("|")
    if sep:
        return [(system, value)]
    return [(s, value) for s in sorted(INS_SYSTEMS)]


class DmpPolicy:
    def __init__(self, matrix: AuthorisationMatrix, retention_years: int = DEFAULT_RETENTION_YEARS):
        self.matrix = matrix
        self.retention_years = retention_years  # how long a closed DMP may be reopened (R20)

    # -- reaching the record ---------------------------------------------------------------------

    def access(self, actor: Actor, state: PatientState | None, moment: datetime) -> Access:
        """Decide what ``actor`` may do in the DMP ``state`` describes (R1–R9)."""
        now = _now_us(moment)
        if state is None:
            return Access(actor, None, now, False, False, False)
        reads, emergency, mt = False, False, False
        match actor.role:
            case "PAT":
                if not _same_person(actor, state.ins):
                    raise Denied("this token is about another patient", rule="R1")
                if state.is_minor(moment.date()) and state.has_representative(now):
                    raise Denied("a minor's DMP is accessed through their legal representative", rule="R7")
                reads = state.active
            case "LEGREP":
                if not any(state.representative(i, now) for i in _person_idents(actor)):
                    raise Denied("not a legal representative of this patient", rule="R8")
                reads = state.active
            case "HCP":
                reads, emergency, mt = self._professional(actor, state, now)
        return Access(actor, state, now, reads, emergency, mt)

    def _professional(self, actor: Actor, state: PatientState, now: int) -> tuple[bool, bool, bool]:
        if not state.active:
            raise Denied("this DMP is closed", rule="R2")
        me = (IDNATPS_SYSTEM, actor.idnatps) if actor.idnatps else None
        if state.blocked(me, now):
            raise Denied("the patient has blocked this professional", rule="R4")
        mt = me is not None and state.medecin_traitant(now) == me
        if mt or state.granted(me, now) or state.granted(actor.organization, now):
            return True, False, mt
        purpose = actor.purpose
        if purpose == BREAK_THE_GLASS or (purpose == REGULATION_CENTRE and actor.profession == DOCTOR):
            if state.emergency_allowed(purpose, now):
                return True, True, False
            raise Denied("the patient opposed emergency access", rule="R5")
        return False, False, False

    # -- reading ---------------------------------------------------------------------------------

    def check_read(self, access: Access, resource_type: str) -> None:
        """Refuse, up front, reading a type the actor may never read in this DMP (R2, R9, R14, R17)."""
        if resource_type in DIRECTORY_TYPES:
            return
        if access.actor.patient is None:
            raise Denied("this request needs a person_id naming the patient", rule="R1")
        if access.state is None:
            return  # no DMP: searches find nothing, reads are not found
        if resource_type == "Patient":
            if access.reads_patient:
                return
            raise Denied("this DMP is closed", rule="R2")
        if not access.reads_record:
            raise Denied(f"{access.role} may not read this patient's {resource_type}", rule="R9")
        if resource_type == "AuditEvent" and not access.reads_trail:
            raise Denied("the access trail is read by the patient and the médecin traitant", rule="R17")
        if resource_type == "Subscription" and access.role not in SUBSCRIBERS:
            raise Denied("a DMP's alerts are read by the patient and their representatives", rule="R22")

    def check_operation(self, access: Access, resource_type: str, name: str) -> None:
        """Refuse an operation the actor may not invoke at all; what it then reads or writes is
        filtered and checked like any other read or write. Unknown operations are refused."""
        match (resource_type, name):
            case ("DocumentReference", "generate-metadata"):
                return  # a document's creation: the write rules decide (R1, R15)
            case ("Patient", "everything"):
                self._check_record_reader(access)
            case (_, "validate"):
                return  # what it stands for is checked as that read or write would be
            case ("Patient", "dmp-export"):
                self._check_record_reader(access)
                if access.role not in (PATIENT, LEGAL_REPRESENTATIVE):
                    raise Denied("the record is downloaded by the patient and their legal representatives", rule="R22")
            case _:
                raise Denied(f"${name} on {resource_type} is not open in a DMP")

    def _check_record_reader(self, access: Access) -> None:
        """The whole record is read by those who reach it (R1–R9); a closed one by nobody (R2)."""
        self.check_read(access, "Patient")
        if access.state is None:
            return  # no DMP: the operation finds no Patient (404)
        if not access.state.active:
            raise Denied("this DMP is closed", rule="R2")
        if not access.reads_record:
            raise Denied(f"{access.role} may not read this patient's record", rule="R9")

    @staticmethod
    def check_search(resource_type: str, parameters: list[str]) -> None:
        """Searches of a record's documents, decisions and trail name the patient (CONTRACT §7)."""
        required = PATIENT_PARAMETERS.get(resource_type)
        if required and not required & {p.split(".")[0].split(":")[0] for p in parameters}:
            names = " or ".join(sorted(required))
            raise Denied(f"a {resource_type} search must name the patient ({names})", status=400)

    def filter(self, access: Access, resource_type: str) -> Expr:
        """What of ``resource_type`` the actor sees: a predicate added inside every query.

        It restates every refusal of :meth:`check_read` as well, since includes, ``_has`` and
        system history reach types the request never named.
        """
        if resource_type in DIRECTORY_TYPES:
            return EVERYTHING
        state = access.state
        if state is None:
            return NOTHING
        if resource_type == "Patient":
            return Token("identifier", state.ins[0], state.ins[1]) if access.reads_patient else NOTHING
        if not access.reads_record:
            return NOTHING
        if resource_type == "DocumentReference":
            return self.documents(access)
        if resource_type in CONTENT_TYPES:
            return self._content(access)
        if resource_type == "Subscription":
            return self.subscriptions(state) if access.role in SUBSCRIBERS else NOTHING
        param = RECORD_TYPES.get(resource_type)
        if param is None:
            return NOTHING
        own = self._belongs(state, param)
        if resource_type == "Consent" and access.role == PROFESSIONAL and not access.medecin_traitant:
            return all_of(own, ReferenceIdentifier("actor", IDNATPS_SYSTEM, access.actor.idnatps or ""))
        if resource_type == "AuditEvent":
            return all_of(own, self._trail_hides(access)) if access.reads_trail else NOTHING
        return own

    @staticmethod
    def _belongs(state: PatientState, param: str) -> Expr:
        return any_of(
            ReferenceIdentifier(param, state.ins[0], state.ins[1]),
            *(Reference(param, "Patient", pid) for pid in state.patient_ids),
        )

    @staticmethod
    def subscriptions(state: PatientState) -> Expr:
        """The Subscriptions of a DMP: those whose criteria name it (R22), the only ones its
        patient and representatives see; never another DMP's (R1)."""
        return any_of(*(String("criteria", criteria, "exact") for criteria in subscription_criteria(state)))

    def documents(self, access: Access) -> Expr:
        """The patient's documents the actor sees (R10–R13)."""
        assert access.state is not None
        own = self._belongs(access.state, "subject")
        match access.role:
            case "PAT":
                return all_of(own, Not(_label(INVISIBLE_TO_PATIENT)))
            case "LEGREP":
                return all_of(own, Not(_label(INVISIBLE_TO_PATIENT)), Not(_label(INVISIBLE_TO_REPRESENTATIVES)))
            case "HCP":
                profession = access.actor.profession
                readable = self.matrix.readable_types(profession) if profession else frozenset()
                allowed: Expr = TokenIn("type", readable) if readable else NOTHING
                if not access.medecin_traitant:
                    allowed = all_of(allowed, Not(_label(MASKED_FROM_PROFESSIONALS)))
                return all_of(own, any_of(_authored_by(access.actor), allowed))
        return NOTHING

    def _content(self, access: Access) -> Expr:
        """Content (Binary, Bundle) is seen through a document the actor sees (R10–R13), and never
        when a document of another patient points at it: attaching someone else's content to a
        document of one's own must not open it (R1)."""
        assert access.state is not None
        foreign = Not(self._belongs(access.state, "subject"))
        return all_of(
            Has("DocumentReference", "attachment", self.documents(access)),
            Not(Has("DocumentReference", "attachment", foreign, scoped=False)),
        )

    def _trail_hides(self, access: Access) -> Expr:
        """Trail entries about a document hidden from the reader, or about its content, are hidden
        too (R12, R13)."""
        assert access.state is not None
        hidden = all_of(self._belongs(access.state, "subject"), Not(self.documents(access)))
        content = tuple(sorted(CONTENT_TYPES))
        return Not(
            any_of(
                Chain("entity", ("DocumentReference",), hidden, scoped=False),
                Chain("entity", content, Has("DocumentReference", "attachment", hidden, scoped=False), scoped=False),
            )
        )

    # -- writing ---------------------------------------------------------------------------------

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
            if resource is not None and not _about(resource, ins, access.state):
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
        if DOCTOR not in facts.professions_of(actors[0][1]):
            raise Denied("the médecin traitant must be a doctor (TRE_G15 10)", status=422, rule="R6")

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
        rewritten = _without_labels_and_archive(old) != _without_labels_and_archive(new)
        if rewritten and role in (PATIENT, LEGAL_REPRESENTATIVE):
            self._check_patient_document(role, new, state)  # their own document stays what R15 lets them add

    def _check_patient_document(self, role: str, document: dict[str, Any], state: PatientState) -> None:
        """R15: what the patient, or a representative for them, adds is the patient's own — every
        author is this DMP's Patient, so that no professional is made the author of it (and thereby
        its reader and the one who may delete it, R10, R19) — and of class 90, the class kept for
        documents patients deposit. The class is the type's (the matrix's type → class map)."""
        authors = document.get("author") or []
        if not authors or not all(_is_the_patient(a, document, state) for a in authors):
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
        before = _replaced(old) if old else {}
        added = {target: where for target, where in _replaced(new).items() if target not in before}
        if not added:
            return
        if access.role not in (PROFESSIONAL, PATIENT, LEGAL_REPRESENTATIVE):
            raise Denied(f"{access.role} authors no document, so replaces none", rule="R19")
        for target, where in sorted(added.items()):
            replaced = facts.read("DocumentReference", target)
            ours = replaced is not None and _about(replaced, state.ins, state)
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
            return _names_author(document, access.actor.idnatps, facts.read)
        if access.role in (PATIENT, LEGAL_REPRESENTATIVE):
            return _authored_by_patient(document, access.state)
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
        if _names_author(document, access.actor.idnatps, facts.read):
            return True
        profession = access.actor.profession
        types = {(c.get("system"), c.get("code")) for c in (document.get("type") or {}).get("coding") or []}
        readable = bool(profession) and any(self.matrix.may_read(profession or "", str(s), str(c)) for s, c in types)
        masked = MASKED_FROM_PROFESSIONALS in _labels(document)
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
    professions_of: Callable[[str], frozenset[str]]  # TRE_G15 professions of an idNatPs, from the directory
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
    before, after = _labels(old), _labels(new)
    if INVISIBLE_TO_PATIENT in after and MASKED_FROM_PROFESSIONALS in after:
        raise Denied("a document is never both INVISIBLE_PATIENT and MASQUE_PS", status=422, rule="R18")
    changed = before ^ after
    if MASKED_FROM_PROFESSIONALS in changed and role not in (PATIENT, LEGAL_REPRESENTATIVE):
        raise Denied("MASQUE_PS is set and removed by the patient", rule="R18")
    if changed & {INVISIBLE_TO_PATIENT, INVISIBLE_TO_REPRESENTATIVES} and role != PROFESSIONAL:
        raise Denied("invisibility labels are set by a professional who can read the document", rule="R18")
    if _archived(old) != _archived(new) and role not in (PATIENT, LEGAL_REPRESENTATIVE):
        raise Denied("archiving is the patient's decision", rule="R19")
    if _without_labels_and_archive(old) != _without_labels_and_archive(new) and not is_author:
        raise Denied("only a document's author changes it", rule="R19")


def _creates_own_dmp_with_a_code(access: Access, facts: WriteFacts) -> bool:
    """R20, CONTRACT §3: the patient creates their own DMP only with a creation code, consumed in
    the very transaction of the creation (authz.authserver.creation_codes)."""
    ins = access.actor.patient
    return ins is not None and _same_person(access.actor, ins) and facts.creation_code_consumed(ins)


def _about(resource: dict[str, Any], ins: Ident, state: PatientState | None) -> bool:
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


def _label(code: str) -> Expr:
    return Token("security-label", VISIBILITY_SYSTEM, code)


def _authored_by(actor: Actor) -> Expr:
    """Documents naming the professional as author: inline, or as the Practitioner or
    PractitionerRole (or the role's Practitioner) they contain or reference (chains read contained
    resources too)."""
    if not actor.idnatps:
        return NOTHING
    ident = Token("identifier", IDNATPS_SYSTEM, actor.idnatps)
    return any_of(
        Token("author-identifier", IDNATPS_SYSTEM, actor.idnatps),
        Chain("author", ("Practitioner",), ident),
        Chain("author", ("PractitionerRole",), any_of(ident, Chain("practitioner", ("Practitioner",), ident))),
    )


def _labels(resource: dict[str, Any]) -> set[str]:
    return {
        c.get("code")
        for label in resource.get("securityLabel") or []
        for c in label.get("coding") or []
        if c.get("system") == VISIBILITY_SYSTEM
    }


ARCHIVED_URL = "https://dmp.example.org/fhir/StructureDefinition/dmp-archived"


def _archived(resource: dict[str, Any]) -> bool:
    return any(e.get("url") == ARCHIVED_URL and e.get("valueBoolean") for e in resource.get("extension") or [])


def _without_labels_and_archive(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", "securityLabel")}
    out["extension"] = [e for e in resource.get("extension") or [] if e.get("url") != ARCHIVED_URL]
    out["securityLabel"] = [
        label
        for label in resource.get("securityLabel") or []
        if not any(c.get("system") == VISIBILITY_SYSTEM for c in label.get("coding") or [])
    ]
    return out


def _names_author(doc: dict[str, Any], idnatps: str | None, read: Callable[[str, str], dict[str, Any] | None]) -> bool:
    """Whether ``doc`` names the professional as author: inline, or as the Practitioner or
    PractitionerRole (or the role's Practitioner) it contains or references in the directory, as
    the read filter's ``_authored_by`` does."""
    if not idnatps:
        return False
    wanted = (IDNATPS_SYSTEM, idnatps)
    return any(
        wanted in _identifiers(person)
        for author in doc.get("author") or []
        if isinstance(author, dict)
        for person in (author, *_author_entries(doc, author, read))
    )


def _author_entries(
    doc: dict[str, Any], author: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """What an author Reference names: its Practitioner or PractitionerRole and, for a role, the
    role's practitioner Reference and the Practitioner it names."""
    entry = _entry(author, read, doc)
    if entry is None or entry.get("resourceType") != "PractitionerRole":
        return [entry] if entry else []
    person = entry.get("practitioner")
    person = person if isinstance(person, dict) else {}
    return [entry, person, _entry(person, read, doc, entry) or {}]


def _entry(
    reference: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None], *holders: dict[str, Any]
) -> dict[str, Any] | None:
    """The Practitioner or PractitionerRole a Reference names: contained in one of ``holders``
    (the document, the role), or a directory entry."""
    ref = str(reference.get("reference", ""))
    for holder in holders:
        for contained in holder.get("contained") or []:
            if isinstance(contained, dict) and f"#{contained.get('id')}" == ref:
                return contained
    rtype, _, rid = ref.partition("/")
    if rtype in ("Practitioner", "PractitionerRole") and rid and "/" not in rid:
        return read(rtype, rid)
    return None


def _identifiers(person: dict[str, Any]) -> list[tuple[Any, Any]]:
    """``(system, value)`` of a Reference's identifier, or of a resource's identifiers."""
    found = person.get("identifier")
    items = found if isinstance(found, list) else [found]
    return [(i.get("system"), i.get("value")) for i in items if isinstance(i, dict)]


def _authored_by_patient(doc: dict[str, Any], state: PatientState) -> bool:
    """A patient-authored document names this DMP's Patient as an author, by reference or as a
    contained Patient carrying the INS (R15, R19); another patient as author is not "their own"."""
    return any(_is_the_patient(author, doc, state) for author in doc.get("author") or [])


def _is_the_patient(author: Any, doc: dict[str, Any], state: PatientState) -> bool:
    """Whether one ``author`` Reference of ``doc`` designates this DMP's Patient."""
    if not isinstance(author, dict):
        return False
    ref = str(author.get("reference", ""))
    if patient_id_in(ref) in state.patient_ids:
        return True
    contained = {f"#{c.get('id')}": c for c in doc.get("contained") or [] if isinstance(c, dict)}
    target = contained.get(ref) or {}
    return target.get("resourceType") == "Patient" and any(
        (i.get("system"), i.get("value")) == state.ins for i in target.get("identifier") or []
    )


def _replaced(doc: dict[str, Any]) -> dict[str, str]:
    """The ids of the local documents ``doc`` replaces (``relatesTo`` ``replaces``), each with the
    element that names it (the first, when several do)."""
    out: dict[str, str] = {}
    for k, relation in enumerate(doc.get("relatesTo") or []):
        ref = str((relation.get("target") or {}).get("reference", ""))
        parts = ref.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if relation.get("code") == "replaces" and len(parts) >= 2 and parts[-2] == "DocumentReference":
            out.setdefault(parts[-1], f"DocumentReference.relatesTo[{k}].target")
    return out


def _check_attachments(state: PatientState, doc: dict[str, Any], facts: WriteFacts) -> None:
    """R1: a document points only at content no other patient's document points at."""
    for attachment in (c.get("attachment") or {} for c in doc.get("content") or []):
        parts = str(attachment.get("url", "")).rstrip("/").split("/")
        if len(parts) < 2 or parts[-2] not in CONTENT_TYPES:
            continue
        if any(not _about(other, state.ins, state) for other in facts.attaching(parts[-2], parts[-1])):
            raise Denied("this content belongs to another patient's document", rule="R1")
