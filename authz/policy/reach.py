"""Who reaches a DMP, and with which interactions (R1–R9): the decision an :class:`Access` holds.

Every path either returns or raises :class:`Denied`; nothing is allowed by falling through.
"""

from __future__ import annotations

from datetime import UTC, datetime

from authz.actor import Actor
from authz.matrix import AuthorisationMatrix
from authz.policy.access import DIRECTORY_TYPES, PATIENT_PARAMETERS, SUBSCRIBERS, Access, Denied, same_person
from authz.state import Ident, PatientState
from authz.terms import (
    BREAK_THE_GLASS,
    DOCTOR,
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
    LEGAL_REPRESENTATIVE,
    PATIENT,
    REGULATION_CENTRE,
)


def _now_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _person_idents(actor: Actor) -> list[Ident]:
    """The INS a person is known by in Consents: ``sub`` as ``system|value``, or a bare value
    under any INS system."""
    system, sep, value = actor.subject.rpartition("|")
    if sep:
        return [(system, value)]
    return [(s, value) for s in sorted(INS_SYSTEMS)]


class Reach:
    matrix: AuthorisationMatrix

    # -- reaching the record ---------------------------------------------------------------------

    def access(self, actor: Actor, state: PatientState | None, moment: datetime) -> Access:
        """Decide what ``actor`` may do in the DMP ``state`` describes (R1–R9)."""
        now = _now_us(moment)
        if state is None:
            return Access(actor, None, now, False, False, False)
        reads, emergency, mt = False, False, False
        match actor.role:
            case "PAT":
                if not same_person(actor, state.ins):
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
