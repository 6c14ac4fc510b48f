"""The patients' access states a worker keeps, and the stamps that tell when one is out of date.

Reading a patient's access state (:func:`authz.state.load_state`: their Patient, their active
Consents, each decrypted and parsed) took about a millisecond of every request about a record.
Each worker process now keeps the states it read, by INS (at most :data:`STATES`). Before using
one it reads the patient's *stamp*, one primary-key read among the store's private records: a
random value replaced, in the same store transaction, by every write that can change that
patient's state. The store tells of every write of a Patient or a Consent (:meth:`Store.observe`),
whatever its path — REST, conditional, transaction Bundles, the majority job, imports, purges, a
request's own follow-up writes — so no writer can forget to, and a change committed through one
worker is seen by every other worker's next request.

Why the stamp is read first: a state kept under a stamp is then at least as new as the write that
set that stamp (a write landing in between only makes the next use read the state again).

Why random rather than a counter: a worker may read a stamp inside a transaction that is then
rolled back (a request re-deciding after its own writes); that stamp is never committed and never
comes back, where a counter would be reused by the next write and could vouch for a state that
never was.

A patient's stamp is keyed by their INS, so it goes with their Patient (a purge leaves no trace of
the INS, R20): when a Patient is deleted or expunged, the stamps of its INS are removed and the
*common stamp* gets a new value. A patient without a stamp of their own (none yet, or a DMP written
before stamps existed) is judged by the common stamp, so a stamp, once left, never comes back.

Only the facts are kept: the rules judge them against each request's own instant (a Consent's
period, majority at 18, emergencies), so nothing that depends on time is frozen here.
"""

from __future__ import annotations

import secrets
from contextlib import suppress
from typing import Any

from authz.lru import Lru
from authz.state import Ident, PatientState, ins_of, load_state
from storage.interface import Gone, NotFound, Store
from storage.query import OPEN_SCOPE

#: The store's private records holding the stamps, one per INS with a Patient (never expiring).
STAMP_KIND = "access-state-stamp"
#: The key of the common stamp, for the patients without a stamp of their own (not an INS).
COMMON = "*"
#: What :func:`authz.state.load_state` reads: a write of any other type changes no state.
WATCHED_TYPES = frozenset({"Patient", "Consent"})
#: States one worker keeps by default (about 2 KB each; ``DMP_STATE_CACHE`` sets it). A state
#: forgotten is read again (Patient and Consents, decrypted and parsed) at its patient's next request.
STATES = 4096


class AccessStates:
    """The access states of this process, each used only while its patient's stamp is unchanged."""

    def __init__(self, store: Store, size: int = STATES):
        self._store = store
        self._states: Lru[Ident, tuple[bytes | None, PatientState | None]] = Lru(size)
        store.observe(WATCHED_TYPES, self._written)

    def load(self, ins: Ident) -> PatientState | None:
        """The access state of the DMP of ``ins`` as committed now (None: there is no such DMP)."""
        stamp = self._stamp(ins)
        kept = self._states.get(ins)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        state = load_state(self._store, ins)
        self._states.put(ins, (stamp, state))
        return state

    def _stamp(self, ins: Ident) -> bytes | None:
        """The patient's own stamp, or the common one (None: neither was ever written)."""
        found = self._store.get_record(STAMP_KIND, _key(ins)) or self._store.get_record(STAMP_KIND, COMMON)
        return found[0] if found else None

    def _written(self, resource_type: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """A new stamp for every patient whose state the write may change, as it was and as it is;
        a Patient gone takes its INS's stamps with it, and the common stamp changes instead."""
        store = self._store
        if resource_type == "Patient" and after is None:
            gone = _patients(store, resource_type, before)
            for ins in sorted(gone):
                store.delete_record(STAMP_KIND, _key(ins))
            if gone:
                store.put_record(STAMP_KIND, COMMON, secrets.token_bytes(16))
            return
        touched = _patients(store, resource_type, before) | _patients(store, resource_type, after)
        for ins in sorted(touched):
            store.put_record(STAMP_KIND, _key(ins), secrets.token_bytes(16))


def _key(ins: Ident) -> str:
    return f"{ins[0]}|{ins[1]}"


def _patients(store: Store, resource_type: str, content: dict[str, Any] | None) -> set[Ident]:
    """The INS whose state ``content`` is part of: a Patient's own; a Consent's patient, named by
    identifier or by reference to a Patient (whose INS are read, inside the write's transaction).
    Generous on purpose: a needless new stamp costs one reread, a missed one a stale decision."""
    if content is None:
        return set()
    if resource_type == "Patient":
        return set(ins_of(content))
    patient = content.get("patient")
    if not isinstance(patient, dict):
        return set()
    found: set[Ident] = set()
    ident = patient.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
        found.add((ident["system"], ident["value"]))
    pid = _patient_id(patient.get("reference"))
    if pid is not None:
        # No such Patient: the Consent is in no state until one is written (which stamps).
        with suppress(NotFound, Gone):
            found.update(ins_of(store.read("Patient", pid, OPEN_SCOPE).json()))
    return found


def _patient_id(reference: Any) -> str | None:
    """The id of a ``Patient/{id}`` reference, relative or absolute, with or without a version."""
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] else None
