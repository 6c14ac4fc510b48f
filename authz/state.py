"""A patient's access state: what the patient decided (Consents) and the DMP's own state.

Read from the store (two indexed queries) by every write that can change it, and kept encoded
(:func:`encode_state`) where :mod:`authz.state_cache` reads it at each request, so a decision the
patient takes is in force for the very next request. The policy reads this; it never reads
Consents itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from sys import intern
from typing import Any

import orjson

from authz.terms import (
    ACCESS,
    BLOCK,
    CONSENT_TYPE_SYSTEM,
    EMERGENCY_ACCESS,
    INS_SYSTEMS,
    MEDECIN_TRAITANT,
    PURPOSE_SYSTEMS,
    REPRESENTATIVE,
)
from fhirmodel.dates import MAX_US, MIN_US, DateFormatError, add_years, date_range
from storage.interface import Store
from storage.query import ANY_SYSTEM, OPEN_SCOPE, Query, Reference, ReferenceIdentifier, Token, all_of, any_of

Ident = tuple[str, str]  # (system, value)

#: More Consents than this for one patient is not a real record: refuse rather than truncate.
MAX_CONSENTS = 1000


@dataclass(frozen=True)
class Decision:
    """One active patient decision about one actor (a professional, a care team, a person)."""

    category: str
    permit: bool
    actors: tuple[Ident, ...]
    start: int  # UTC microseconds
    end: int
    purposes: tuple[str, ...]
    consent_id: str

    def covers(self, now: int) -> bool:
        return self.start <= now < self.end

    def names(self, ident: Ident | None) -> bool:
        return ident is not None and ident in self.actors


@dataclass(frozen=True)
class PatientState:
    ins: Ident
    patient_ids: tuple[str, ...]  # Patient resources carrying that INS
    active: bool
    birth_date: str | None
    decisions: tuple[Decision, ...] = field(default=())

    def of(self, category: str, now: int) -> list[Decision]:
        return [d for d in self.decisions if d.category == category and d.covers(now)]

    def granted(self, ident: Ident | None, now: int) -> bool:
        return any(d.permit and d.names(ident) for d in self.of(ACCESS, now))

    def blocked(self, ident: Ident | None, now: int) -> bool:
        return any(d.names(ident) for d in self.of(BLOCK, now))

    def medecin_traitant(self, now: int) -> Ident | None:
        current = [d for d in self.of(MEDECIN_TRAITANT, now) if d.permit and d.actors]
        return max(current, key=lambda d: d.start).actors[0] if current else None

    def emergency_allowed(self, purpose: str, now: int) -> bool:
        """The patient's emergency setting for ``purpose`` (R5): a DMP starts with one ``permit``
        setting per purpose; the patient opposes by turning it to ``deny``, or revokes it
        (CONTRACT §4: revoke by DELETE). No setting left means no permission: deny by default."""
        settings = [d for d in self.of(EMERGENCY_ACCESS, now) if purpose in d.purposes]
        return bool(settings) and all(d.permit for d in settings)

    def representative(self, ident: Ident | None, now: int) -> bool:
        return any(d.permit and d.names(ident) for d in self.of(REPRESENTATIVE, now))

    def has_representative(self, now: int) -> bool:
        return any(d.permit for d in self.of(REPRESENTATIVE, now))

    def is_minor(self, today: date) -> bool:
        majority = majority_of(self.birth_date)
        return majority is not None and today < majority


#: The age of majority (R7, R8).
MAJORITY_AGE = 18


def majority_of(birth_date: str | None) -> date | None:
    """The 18th birthday of someone born on ``birth_date`` (a FHIR date), None when the date is
    not a full day (a year or a month alone says too little to judge)."""
    if not birth_date or len(birth_date) < 10:
        return None
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return None
    return add_years(born, MAJORITY_AGE)


def ins_of(patient: dict[str, Any]) -> list[Ident]:
    """The INS a Patient carries (one, in a DMP: R1 refuses a second)."""
    return [
        (str(i["system"]), str(i["value"]))
        for i in patient.get("identifier") or []
        if isinstance(i, dict) and i.get("system") in INS_SYSTEMS and i.get("value")
    ]


def minor_on(born: date, today: date) -> bool:
    """Whether someone born on ``born`` is under 18 on ``today``."""
    return today < add_years(born, MAJORITY_AGE)


def _period(provision: dict[str, Any]) -> tuple[int, int]:
    period = provision.get("period") or {}
    try:
        start = date_range(period["start"])[0] if period.get("start") else MIN_US
        end = date_range(period["end"])[1] if period.get("end") else MAX_US
    except DateFormatError:
        return MIN_US, MIN_US  # an unreadable period grants nothing
    return start, end


def decision_of(consent: dict[str, Any]) -> Decision | None:
    categories = [
        c.get("code")
        for concept in consent.get("category") or []
        for c in concept.get("coding") or []
        if c.get("system") == CONSENT_TYPE_SYSTEM
    ]
    provision = consent.get("provision") or {}
    if len(categories) != 1 or not isinstance(categories[0], str):
        return None
    actors = []
    for actor in provision.get("actor") or []:
        ident = ((actor.get("reference") or {}).get("identifier")) or {}
        if ident.get("system") and ident.get("value"):
            actors.append((ident["system"], ident["value"]))
    purposes = tuple(
        p["code"] for p in provision.get("purpose") or [] if p.get("system") in PURPOSE_SYSTEMS and "code" in p
    )
    start, end = _period(provision)
    return Decision(
        category=categories[0],
        permit=provision.get("type") == "permit",
        actors=tuple(actors),
        start=start,
        end=end,
        purposes=purposes,
        consent_id=str(consent.get("id")),
    )


def load_state(store: Store, ins: Ident) -> PatientState | None:
    """The access state of the DMP of ``ins``, or None when there is no such DMP."""
    patients = store.search(
        Query("Patient", Token("identifier", ins[0], ins[1]), count=10, total=False), OPEN_SCOPE
    ).matches
    if not patients:
        return None
    patient_ids = tuple(p.id for p in patients)
    record = patients[0].json()
    about_patient = any_of(
        ReferenceIdentifier("patient", ins[0], ins[1]),
        *(Reference("patient", "Patient", pid) for pid in patient_ids),
    )
    consents = store.search(
        Query("Consent", all_of(about_patient, Token("status", ANY_SYSTEM, "active")), count=MAX_CONSENTS, total=False),
        OPEN_SCOPE,
    ).matches
    decisions = tuple(d for d in (decision_of(c.json()) for c in consents) if d is not None)
    return PatientState(
        ins=ins,
        patient_ids=patient_ids,
        active=record.get("active", True) is not False,
        birth_date=record.get("birthDate"),
        decisions=decisions,
    )


def encode_state(state: PatientState | None) -> bytes:
    """The state as bytes that tell it whole: :func:`decode_state` gives it back. Facts only, as
    the state holds them (the rules judge them at each request's own instant), so the bytes stay
    true until a write changes the Patient or the Consents they were read from."""
    if state is None:
        return orjson.dumps(None)
    decisions = [[d.category, d.permit, d.actors, d.start, d.end, d.purposes, d.consent_id] for d in state.decisions]
    return orjson.dumps([state.ins, state.patient_ids, state.active, state.birth_date, decisions])


def decode_state(data: bytes) -> PatientState | None:
    """The state :func:`encode_state` encoded (ValueError: these bytes are not one). Codes and
    systems, few and repeated in every state a worker keeps, are shared (``sys.intern``)."""
    try:
        raw = orjson.loads(data)
        if raw is None:
            return None
        (system, value), patient_ids, active, birth_date, decisions = raw
        return PatientState(
            ins=(system, value),
            patient_ids=tuple(patient_ids),
            active=active,
            birth_date=birth_date,
            decisions=tuple(
                Decision(
                    intern(category),
                    permit,
                    tuple((intern(system), value) for system, value in actors),
                    start,
                    end,
                    tuple(intern(p) for p in purposes),
                    consent_id,
                )
                for category, permit, actors, start, end, purposes, consent_id in decisions
            ),
        )
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"not an encoded access state: {exc}") from None
