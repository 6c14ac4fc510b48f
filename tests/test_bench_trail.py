"""The bench's long trail (``bench/trail.py``, ``--trail N``): the events it adds must be the
server's own — found by the trail's search of each patient, dated in the order they were added —
or its figures at 10 000 000 events would measure something the server never holds."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

import bench.trail
from bench.datagen import patient_id, patient_ins
from bench.trail import add_trail
from fhir_server.app import create_service
from fhir_server.runtime.config import Config
from storage.query import OPEN_SCOPE, Query, Reference, ReferenceIdentifier, SortKey


def test_the_added_events_are_each_patients_trail_dated_in_order(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench.trail, "TRAIL_BATCH", 10)  # several journal appends and moves
    stats = add_trail(config, 25, 3, seed=1)
    assert (stats.added, stats.events) == (25, 25)

    service = create_service(config)
    try:
        store = service.store
        everything = store.search(Query("AuditEvent", sort=(SortKey("date"),), count=100), OPEN_SCOPE).matches
        per_patient: Counter[str] = Counter()
        for index in range(3):
            system, value = patient_ins(index)
            by_ins = store.search(Query("AuditEvent", ReferenceIdentifier("patient", system, value)), OPEN_SCOPE)
            by_id = store.search(Query("AuditEvent", Reference("patient", "Patient", patient_id(index))), OPEN_SCOPE)
            assert by_ins.total == by_id.total
            per_patient[patient_id(index)] = by_ins.total or 0
    finally:
        service.store.close()
    assert sum(per_patient.values()) == 25 and min(per_patient.values()) > 0
    recorded = [datetime.fromisoformat(s.json()["recorded"]) for s in everything]
    assert recorded == sorted(recorded) and len(set(recorded)) == 25
    now = datetime.now(UTC)
    assert now - timedelta(days=bench.trail.TRAIL_DAYS + 1) < recorded[0] and recorded[-1] <= now
    kinds = Counter(s.json()["subtype"][0]["code"] for s in everything)
    assert set(kinds) <= {"read", "search-type", "create"} and kinds["read"] > 0
