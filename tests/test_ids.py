"""The ids the server assigns (``fhirmodel/ids.py``): UUIDs version 7, so that what is created
later sorts later and every index of ids grows at its end instead of on random pages."""

from __future__ import annotations

import time
import uuid

import pytest

from fhirmodel.ids import new_id
from tests.conftest import Fhir


def test_ids_are_time_ordered_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids of later calls sort after earlier ones, and ids of the same millisecond still differ."""
    clock = iter([1_796_000_000_000_000_000, 1_796_000_000_000_000_000, 1_796_000_000_002_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    first, same_millisecond, later = new_id(), new_id(), new_id()
    parsed = [uuid.UUID(i) for i in (first, same_millisecond, later)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [u.int >> 80 for u in parsed] == [1_796_000_000_000, 1_796_000_000_000, 1_796_000_000_002]
    assert first != same_millisecond and max(first, same_millisecond) < later


def test_a_create_and_a_transaction_get_time_ordered_ids(fhir: Fhir) -> None:
    """Both ways a client creates (R4 3.1.0.8 create, and a transaction's POST entries)."""
    created = fhir.create({"resourceType": "Patient", "name": [{"family": "Martin"}]})["id"]
    time.sleep(0.002)  # the next millisecond: ids of one millisecond are ordered by chance only
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    response = fhir.request("POST", "", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    location = response.get_json()["entry"][0]["response"]["location"]  # [base/]Patient/<id>/_history/1
    in_bundle = location.split("Patient/")[1].split("/")[0]
    assert [uuid.UUID(i).version for i in (created, in_bundle)] == [7, 7]
    assert created < in_bundle
