"""``--trail N``: a long access trail, added directly before the server starts.

Issue 11 asks for read and ITI-67 figures at 10 000 000 trail events, which no measured run
reaches (each request adds one: a 1 000 000-document run ends near 500 000). So the bench writes
them the way the server does: the gatekeeper's own ``audit_event`` for the bench's doctor,
about a random patient of the data set, one interaction of the mix a professional makes (reads,
searches, creates), through ``store.log`` by :data:`TRAIL_BATCH`: to the journal, then into the
database as the server's own requests' events go. Events are dated in order over the past
:data:`TRAIL_DAYS` days, as a trail that grew with the record.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from authz.actor import Actor, Known, actor_from_claims
from authz.audit import AuditRecord, audit_event
from authz.devtoken import iua_claims
from authz.terms import PROFESSIONAL
from bench.auth import DOCTOR
from bench.datagen import patient_id, patient_ins
from bench.loader import Progress
from storage.query import OPEN_SCOPE, Query

#: Events per ``store.log`` call (one append to the journal; it is moved in once it holds enough).
TRAIL_BATCH = 2000
#: How far back the added events go.
TRAIL_DAYS = 365
#: (interaction, share) of what a professional's requests are, as in the bench's own scenarios.
MIX = (("read", 6), ("search-type", 3), ("create", 1))


@dataclass(frozen=True)
class TrailStats:
    added: int
    seconds: float
    events: int  # in the trail once added: the figures are measured at this length


def format_trail(stats: TrailStats) -> str:
    rate = stats.added / stats.seconds if stats.seconds else 0.0
    return (
        f"trail: added {stats.added} AuditEvents in {stats.seconds:.0f}s ({rate:.0f}/s); "
        f"the trail now holds {stats.events}"
    )


def add_trail(config: Any, events: int, patients: int, seed: int) -> TrailStats:
    """Add ``events`` AuditEvents about patients ``0 … patients - 1``."""
    from fhir_server.app import create_service

    service = create_service(config)
    store = service.store
    rng = random.Random(seed)
    doctor = _doctor(service.terminology.has_code, config.base_url)
    interactions = [name for name, share in MIX for _ in range(share)]
    end = datetime.now(UTC)
    step = timedelta(days=TRAIL_DAYS) / max(events, 1)
    progress = Progress("trail events (direct)", events)
    started = time.perf_counter()
    try:
        done = 0
        while done < events:
            batch = []
            for n in range(done, min(done + TRAIL_BATCH, events)):
                index = rng.randrange(patients)
                recorded = (end - (events - n) * step).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                patient = patient_ins(index)
                record = _record(rng.choice(interactions), patient, rng)
                actor = replace(doctor, patient=patient)
                batch.append(audit_event(actor, patient, patient_id(index), record, recorded, config.base_url))
            store.log(batch)
            done += len(batch)
            progress.update(done)
        progress.update(done, force=True)
        seconds = time.perf_counter() - started
        return TrailStats(done, seconds, _size(store))
    finally:
        store.close()


def _size(store: Any) -> int:
    """AuditEvents in the store, counted by its own search."""
    return int(store.search(Query("AuditEvent", count=0), OPEN_SCOPE).total or 0)


def _doctor(known: Known, base_url: str) -> Actor:
    """The bench's doctor as the gatekeeper sees them once the token is verified."""
    iua = iua_claims(role=PROFESSIONAL, profession=DOCTOR.profession, idnatps=DOCTOR.idnatps, person_id=None)
    return actor_from_claims({"iss": base_url, "sub": DOCTOR.idnatps, "extensions": {"ihe_iua": iua}}, known)


def _record(interaction: str, patient: tuple[str, str], rng: random.Random) -> AuditRecord:
    """What the request was: an ITI-67 search by INS, or a read or create of one document."""
    if interaction == "search-type":
        query = f"patient.identifier={patient[0]}|{patient[1]}&status=current"
        return AuditRecord(interaction, 200, "DocumentReference", None, query)
    rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return AuditRecord(interaction, 201 if interaction == "create" else 200, "DocumentReference", rid, None)
