"""The facts of one request the DMP rules decide on: who, which record, what they reach.

:class:`Access` is built once per request by the reach rules (:mod:`authz.policy.reach`) and read
by the read filters and the write rules; :class:`Denied` is how any of them refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.actor import Actor
from authz.state import Ident, PatientState
from authz.terms import (
    ADMINISTRATION,
    LEGAL_REPRESENTATIVE,
    PATIENT,
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


def same_person(actor: Actor, ins: Ident) -> bool:
    """``sub`` is the caller's INS, bare or as ``system|value`` (CONTRACT §2)."""
    subject = actor.subject
    return subject == ins[1] or subject == f"{ins[0]}|{ins[1]}"
