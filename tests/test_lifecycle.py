"""The life of a DMP (R2, R20): closure, reopening within the retention period, purge after it.

Over real HTTP (the Flask test client of a real server with the DMP gatekeeper), with real ES256
tokens and a real SQLite file. Tokens are minted before the world's clock is moved (the verifier
checks them against the real time), as in tests/test_dmp_rules.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.lifecycle import CLOSURE_URL, LIFECYCLE_SYSTEM
from authz.terms import ACCESS, BREAK_THE_GLASS, IDNATPS_SYSTEM, REPRESENTATIVE
from fhir_server.config import Config
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier
from tests.dmp import INS_SYSTEM, As, World, closed, closure, reopened

INS_A = "1800175123456"
INS_B = "2850375123457"
REP = "2750175000001"
DR = "810000000001"  # granted
DR_OUT = "810000000003"  # no grant
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def status(response: TestResponse, expected: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == expected, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json() or {}
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body


def stored(world: World, rtype: str, rid: str) -> dict[str, Any]:
    return world.store.read(rtype, rid, OPEN_SCOPE).json()


def open_dmp(world: World, ins: str = INS_A) -> tuple[str, str]:
    """A DMP with a document, a doctor's grant and a representative: (patient id, document id)."""
    pid = world.seed_patient(ins)
    doc = world.seed_document(pid)
    world.seed_consent(ACCESS, ins, (IDNATPS_SYSTEM, DR))
    world.seed_consent(REPRESENTATIVE, ins, (INS_SYSTEM, REP))
    return pid, doc


def client(world: World, who: str, ins: str = INS_A) -> As:
    match who:
        case "PAT":
            return world.patient(ins)
        case "LEGREP":
            return world.as_("LEGREP", patient=ins, sub=REP)
        case "HCP":
            return world.doctor(DR, ins)
        case "HCP-without-access":
            return world.doctor(DR_OUT, ins)
        case "HCP-break-the-glass":
            return world.doctor(DR_OUT, ins, purpose=BREAK_THE_GLASS)
    return world.as_(who, patient=ins)


def lifecycle_events(world: World, ins: str) -> list[str]:
    """The ISO 21089 lifecycle events of the patient's trail, oldest first, as the server wrote them."""
    about = ReferenceIdentifier("patient", INS_SYSTEM, ins)
    events = world.store.search(Query("AuditEvent", about, count=1000), OPEN_SCOPE).matches
    return [
        subtype["code"]
        for event in sorted((e.json() for e in events), key=lambda e: str(e["recorded"]))
        for subtype in event["subtype"]
        if subtype["system"] == LIFECYCLE_SYSTEM
    ]


# -- closure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["PAT", "LEGREP", "HCP"])
def test_the_patient_a_representative_or_a_professional_with_access_closes_the_dmp(world: World, who: str) -> None:
    pid, doc = open_dmp(world)
    today = world.clock.now.date()
    closer, patient, doctor = client(world, who), client(world, "PAT"), client(world, "HCP")
    status(closer.put(f"Patient/{pid}", closed(stored(world, "Patient", pid), today)), 200)
    kept = stored(world, "Patient", pid)
    assert kept["active"] is False and [e["url"] for e in kept["extension"]] == [CLOSURE_URL]
    assert lifecycle_events(world, INS_A) == ["deprecate"]
    # R2: professionals reach nothing; the patient and the representative read the Patient only.
    status(doctor.get(f"Patient/{pid}"), 403, "forbidden")
    status(doctor.get(f"DocumentReference/{doc}"), 403, "forbidden")
    status(doctor.get(f"DocumentReference?patient={pid}"), 403, "forbidden")
    for reader in (patient, client(world, "LEGREP")):
        assert status(reader.get(f"Patient/{pid}"), 200)["active"] is False
        status(reader.get(f"DocumentReference?patient={pid}"), 403, "forbidden")
        status(reader.get(f"Consent?patient={pid}"), 403, "forbidden")
        status(reader.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"), 403, "forbidden")
    assert stored(world, "DocumentReference", doc)["id"] == doc  # kept for the retention period


@pytest.mark.parametrize("who", ["HCP-without-access", "HCP-break-the-glass", "ASS", "TCU", "ADM"])
def test_nobody_else_closes_a_dmp(world: World, who: str) -> None:
    pid, doc = open_dmp(world)
    response = client(world, who).put(f"Patient/{pid}", closed(stored(world, "Patient", pid), world.clock.now.date()))
    status(response, 403, "forbidden")
    assert stored(world, "Patient", pid)["active"] is True
    assert client(world, "HCP").ids(f"DocumentReference?patient={pid}") == {doc}


def test_a_closure_is_explicit_and_dated_today(world: World) -> None:
    pid, _ = open_dmp(world)
    patient, today = client(world, "PAT"), world.clock.now.date()
    current = stored(world, "Patient", pid)
    body = status(patient.put(f"Patient/{pid}", {**current, "active": False}), 422, "business-rule")
    assert body["issue"][0]["expression"] == ["Patient.extension"] and CLOSURE_URL in body["issue"][0]["diagnostics"]
    body = status(patient.put(f"Patient/{pid}", {**current, "extension": [closure(today)]}), 422, "business-rule")
    assert body["issue"][0]["expression"] == ["Patient.extension"]
    backdated = patient.put(f"Patient/{pid}", closed(current, today - timedelta(days=400)))
    body = status(backdated, 422, "business-rule")
    assert body["issue"][0]["expression"] == ["Patient.extension:dmp-fermeture.extension:date"]
    dated_only = {**closure(today), "extension": closure(today)["extension"][:1]}
    no_motif = {**current, "active": False, "extension": [dated_only]}
    body = status(patient.put(f"Patient/{pid}", no_motif), 422)
    assert body["issue"][0]["expression"] == ["Patient.extension[0].extension:motif"]
    twice = {**current, "active": False, "extension": [closure(today), closure(today)]}
    status(patient.put(f"Patient/{pid}", twice), 422, "business-rule")
    assert stored(world, "Patient", pid)["meta"]["versionId"] == "1"  # nothing of it was stored
    assert lifecycle_events(world, INS_A) == []


def test_a_closure_may_come_with_other_changes_and_by_json_patch(world: World) -> None:
    pid, _ = open_dmp(world)
    today = world.clock.now.date()
    patch = [
        {"op": "replace", "path": "/active", "value": False},
        {"op": "add", "path": "/extension", "value": [closure(today, "décès")]},
        {"op": "add", "path": "/telecom", "value": [{"system": "email", "value": "a@example.org"}]},
    ]
    status(client(world, "LEGREP").request("PATCH", f"Patient/{pid}", patch, headers=JSON_PATCH), 200)
    kept = stored(world, "Patient", pid)
    assert kept["active"] is False and kept["telecom"][0]["value"] == "a@example.org"
    assert kept["extension"][0]["extension"][1] == {"url": "motif", "valueString": "décès"}


def test_a_closed_dmp_is_only_reopened(world: World) -> None:
    pid, _ = open_dmp(world)
    patient, admin = client(world, "PAT"), client(world, "ADM")
    status(patient.put(f"Patient/{pid}", closed(stored(world, "Patient", pid), world.clock.now.date())), 200)
    current = stored(world, "Patient", pid)
    status(patient.put(f"Patient/{pid}", {**current, "name": [{"family": "Autre"}]}), 403, "forbidden")
    status(admin.put(f"Patient/{pid}", {**current, "name": [{"family": "Autre"}]}), 403, "forbidden")
    assert status(admin.get(f"Patient/{pid}"), 200)["active"] is False  # R2: ADM reads it


# -- reopening -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_the_patient_or_a_representative_reopens_within_the_retention(world: World, who: str) -> None:
    pid, doc = open_dmp(world)
    closer, reopener = client(world, "PAT"), client(world, who)
    doctor, admin = client(world, "HCP"), client(world, "ADM")
    status(closer.put(f"Patient/{pid}", closed(stored(world, "Patient", pid), world.clock.now.date())), 200)
    world.clock.now += timedelta(days=200)  # the grants seeded for a year still hold
    status(doctor.put(f"Patient/{pid}", reopened(stored(world, "Patient", pid))), 403, "forbidden")
    status(admin.put(f"Patient/{pid}", reopened(stored(world, "Patient", pid))), 403, "forbidden")
    still_closed = {**stored(world, "Patient", pid), "active": True}  # the extension left behind
    body = status(reopener.put(f"Patient/{pid}", still_closed), 422, "business-rule")
    assert body["issue"][0]["expression"] == ["Patient.extension"]
    status(reopener.put(f"Patient/{pid}", reopened(stored(world, "Patient", pid))), 200)
    kept = stored(world, "Patient", pid)
    assert kept["active"] is True and "extension" not in kept
    assert doctor.ids(f"DocumentReference?patient={pid}") == {doc}
    # The closure is not forgotten: the Patient's history and the trail keep it.
    history = status(reopener.get(f"Patient/{pid}/_history"), 200)
    assert [e["resource"].get("active") for e in history["entry"]] == [True, False, True]
    trail = status(reopener.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}&_count=500"), 200)
    events = [s["code"] for e in trail["entry"] for s in e["resource"]["subtype"] if s["system"] == LIFECYCLE_SYSTEM]
    assert sorted(events) == ["deprecate", "reactivate"]


def test_after_the_retention_period_a_dmp_is_no_longer_reopened(world: World) -> None:
    today = world.clock.now.date()
    late = world.seed_patient(INS_A, pid="late", closed_on=date(today.year - 10, today.month, 1))
    in_time = world.seed_patient(INS_B, pid="in-time", closed_on=today - timedelta(days=365 * 10 - 5))
    body = status(world.patient(INS_A).put("Patient/late", reopened(stored(world, "Patient", late))), 403, "forbidden")
    assert "retention period ended" in body["issue"][0]["diagnostics"]
    assert stored(world, "Patient", late)["active"] is False
    status(world.patient(INS_B).put("Patient/in-time", reopened(stored(world, "Patient", in_time))), 200)


def test_the_retention_period_is_configured(tmp_path: Path) -> None:
    assert Config.from_env({}).retention_years == 10
    assert Config.from_env({"DMP_RETENTION_YEARS": "12"}).retention_years == 12
    for wrong in ("0", "ten"):
        with pytest.raises(ValueError, match="DMP_RETENTION_YEARS"):
            Config.from_env({"DMP_RETENTION_YEARS": wrong})
    world = World(tmp_path, retention_years=2)
    try:
        today = world.clock.now.date()
        pid = world.seed_patient(INS_A, pid="closed", closed_on=today - timedelta(days=800))
        status(world.patient(INS_A).put(f"Patient/{pid}", reopened(stored(world, "Patient", pid))), 403, "forbidden")
    finally:
        world.close()
