"""The patients' access states a worker keeps, and the stamps that tell when one is out of date.

Reading a patient's access state (:func:`authz.state.load_state`: their Patient, their active
Consents, two searches, each match decrypted and parsed) took about a millisecond of every request
about a record. Each worker process now keeps the states it read, by INS (at most
:data:`STATES`). Before using one it reads the patient's *stamp*, one primary-key read among the
store's private records, replaced, in the same store transaction, by every write that can change
that patient's state. The store tells of every write of a Patient or a Consent
(:meth:`Store.observe`), whatever its path — REST, conditional, transaction Bundles, the majority
job, imports, purges, a request's own follow-up writes — so no writer can forget to, and a change
committed through one worker is seen by every other worker's next request.

The stamp *is* the state: the write reads it, inside its transaction, and stores it encoded
(:data:`STATE_TAG`, :func:`authz.state.encode_state`). So a worker that has not kept a patient's
state (a first request about them, or one forgotten to keep the cache bounded) decodes it from the
stamp it has just read, about 7 µs, where reading it again from the Patient and the Consents took
300 µs at a million documents (``bench/README.md``). And a state kept is used only while the stamp
is the very sealed blob it was decoded from (compared by the store's mark of it, a digest of the
blob, so a kept state costs no decryption): equal blobs, equal states, whatever happened between —
a stamp read inside a transaction later rolled back included.

A stamp without the tag is a random one, written by a server older than this encoding: the state
of its patient is read from the store, as then, and kept under that stamp. A patient without a
stamp of their own (none yet, or a DMP written before stamps existed) is judged by the *common
stamp*, a random value: when a Patient is deleted or expunged, the stamps of its INS are removed
(a stamp is keyed by the INS, and a purge leaves no trace of it, R20) and the common stamp gets a
new value, so a stamp, once left, never comes back. A patient's next write gives them a stamp
holding their state.

Only the facts are kept: the rules judge them against each request's own instant (a Consent's
period, majority at 18, emergencies), so nothing that depends on time is frozen here.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import suppress
from typing import Any

from authz.lru import Lru
from authz.state import Ident, PatientState, decode_state, encode_state, ins_of, load_state
from storage.interface import Gone, NotFound, Store
from storage.query import OPEN_SCOPE, Query

log = logging.getLogger(__name__)

#: The store's private records holding the stamps, one per INS with a Patient (never expiring).
STAMP_KIND = "access-state-stamp"
#: What begins a stamp holding its patient's state (then :func:`authz.state.encode_state`'s bytes).
STATE_TAG = b"DMP-STATE-1\n"
#: The private record saying that every patient's stamp holds their state (:func:`encode_older_stamps`).
ENCODED_KIND, ENCODED_KEY = "access-state-stamps-encoded", "all"
#: Patients read, and stamped in one transaction, per page by :func:`encode_older_stamps`.
PAGE = 100
#: The key of the common stamp, for the patients without a stamp of their own (not an INS).
COMMON = "*"
#: What :func:`authz.state.load_state` reads: a write of any other type changes no state.
WATCHED_TYPES = frozenset({"Patient", "Consent"})
#: States one worker keeps by default (about 2 KB each; ``DMP_STATE_CACHE`` sets it). A state
#: forgotten is decoded again from its stamp at its patient's next request.
STATES = 4096


class AccessStates:
    """The access states of this process, each used only while its patient's stamp is unchanged."""

    def __init__(self, store: Store, size: int = STATES):
        self._store = store
        self._states: Lru[Ident, tuple[bytes | None, PatientState | None]] = Lru(size)
        store.observe(WATCHED_TYPES, self._written)

    def load(self, ins: Ident) -> PatientState | None:
        """The access state of the DMP of ``ins`` as committed now (None: there is no such DMP).

        A state is kept under its stamp's mark (:meth:`Store.record_mark`, a digest of the sealed
        value): a kept state is used on the mark alone, without opening the stamp (about 20 µs a
        request). Otherwise the stamp is read after its mark, so the state kept is at least as new
        as the mark it is kept under; a mark never comes back, since every write seals anew."""
        own = self._store.record_mark(STAMP_KIND, _key(ins))
        key = _key(ins) if own is not None else COMMON
        mark = own if own is not None else self._store.record_mark(STAMP_KIND, COMMON)
        kept = self._states.get(ins)
        if kept is not None and kept[0] == mark:
            return kept[1]
        found = None if mark is None else self._store.get_record(STAMP_KIND, key)
        state = self._fresh(ins, found[0] if found else None)
        self._states.put(ins, (mark, state))
        return state

    def _fresh(self, ins: Ident, stamp: bytes | None) -> PatientState | None:
        """The state under ``stamp``: the one it holds, else (a random stamp) the one the store
        holds — read after the stamp, so at least as new as the write that set it."""
        if stamp is not None and stamp.startswith(STATE_TAG):
            try:
                return decode_state(stamp[len(STATE_TAG) :])
            except ValueError as exc:  # never written so; read where it came from instead
                log.error("the access-state stamp of an INS does not decode (%s): read from the store", exc)
        return load_state(self._store, ins)

    def _written(self, resource_type: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """A new stamp for every patient whose state the write may change, as it was and as it is,
        holding that state as the write leaves it (read inside its transaction); a Patient gone
        takes its INS's stamps with it, and the common stamp changes instead."""
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
            _restamp(store, ins)


def _restamp(store: Store, ins: Ident) -> None:
    """The patient's stamp made to hold their state as the store holds it now (in the caller's
    transaction)."""
    store.put_record(STAMP_KIND, _key(ins), STATE_TAG + encode_state(load_state(store, ins)))


def encode_older_stamps(store: Store) -> int:
    """Give every patient whose stamp an older server wrote (a random one, or none) a stamp
    holding their state; returns how many it gave. Once every patient has one, a record says so
    and later runs return at once. Why: such a patient's state is read from the store at every
    first request about them in a worker (:meth:`AccessStates._fresh`) until their next write; a
    store upgraded in place would otherwise stay that slow for years."""
    if store.get_record(ENCODED_KIND, ENCODED_KEY) is not None:
        return 0
    given, offset, watermark = 0, 0, None
    while True:
        query = Query("Patient", offset=offset, count=PAGE, total=False, watermark=watermark)
        result = store.search(query, OPEN_SCOPE)
        with store.transaction():  # a commit (a sync) per page: 50 001 patients took 23 s
            for stored in result.matches:
                given += sum(_encode_stamp(store, ins) for ins in ins_of(stored.json()))
        if len(result.matches) < PAGE:
            break
        offset, watermark = offset + PAGE, result.watermark
    store.put_record(ENCODED_KIND, ENCODED_KEY, b"")
    return given


def _encode_stamp(store: Store, ins: Ident) -> int:
    """1 when the patient's stamp was given their state, 0 when it held it already. Inside the
    transaction that writes it, as a write's: no write of their Patient or Consents lands between
    the state's read and its stamp."""
    found = store.get_record(STAMP_KIND, _key(ins))
    if found is not None and found[0].startswith(STATE_TAG):
        return 0
    _restamp(store, ins)
    return 1


def _key(ins: Ident) -> str:
    return f"{ins[0]}|{ins[1]}"


def _patients(store: Store, resource_type: str, content: dict[str, Any] | None) -> set[Ident]:
    """The INS whose state ``content`` is part of: a Patient's own; a Consent's patient, named by
    identifier or by reference to a Patient (whose INS are read, inside the write's transaction).
    Generous on purpose: a needless new stamp costs a state read, a missed one a stale decision."""
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
