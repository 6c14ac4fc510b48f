"""What a caller reads, as per-type filters the store adds inside every query (R3–R18).

Totals, paging, includes, chains and ``_has`` are computed inside the filtered query, so nothing
hidden is ever counted, listed or hinted at.
"""

from __future__ import annotations

from authz.matrix import AuthorisationMatrix
from authz.policy.access import CONTENT_TYPES, DIRECTORY_TYPES, RECORD_TYPES, SUBSCRIBERS, Access, subscription_criteria
from authz.policy.documents import authored_by, visibility_label
from authz.state import PatientState
from authz.terms import (
    IDNATPS_SYSTEM,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    MASKED_FROM_PROFESSIONALS,
    PROFESSIONAL,
)
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


class ReadFilters:
    matrix: AuthorisationMatrix

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
                return all_of(own, Not(visibility_label(INVISIBLE_TO_PATIENT)))
            case "LEGREP":
                return all_of(
                    own,
                    Not(visibility_label(INVISIBLE_TO_PATIENT)),
                    Not(visibility_label(INVISIBLE_TO_REPRESENTATIVES)),
                )
            case "HCP":
                profession = access.actor.profession
                readable = self.matrix.readable_types(profession) if profession else frozenset()
                allowed: Expr = TokenIn("type", readable) if readable else NOTHING
                if not access.medecin_traitant:
                    allowed = all_of(allowed, Not(visibility_label(MASKED_FROM_PROFESSIONALS)))
                return all_of(own, any_of(authored_by(access.actor), allowed))
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
