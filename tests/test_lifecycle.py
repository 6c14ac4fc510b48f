"""The life of a DMP (R2, R20): closure, reopening within the retention period, purge after it.

Over real HTTP (the Flask test client of a real server with the DMP gatekeeper), with real ES256
tokens and a real SQLite file. Tokens are minted before the world's clock is moved (the verifier
checks them against the real time), as in tests/test_dmp_rules.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.authserver.accounts import ACCOUNT_KIND, Account, AccountBook, Contact, ins_key
from authz.lifecycle import CLOSURE_URL, LIFECYCLE_SYSTEM
from authz.subscribers import KIND as SUBSCRIBER_KIND
from authz.terms import ACCESS, BREAK_THE_GLASS, IDNATPS_SYSTEM, REPRESENTATIVE
from fhir_server.cli import main
from fhir_server.dmp.lifecycle.purge import purge
from fhir_server.runtime.config import Config
from fhirmodel.dates import add_years
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier
from tests.dmp import INS_SYSTEM, As, World, closed, closure, reopened

INS_A = "180017512345660"
INS_B = "285037512345787"
REP = "275017500000135"
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
    no_reason = {**current, "active": False, "extension": [dated_only]}
    body = status(patient.put(f"Patient/{pid}", no_reason), 422, "business-rule")
    assert body["issue"][0]["expression"] == ["Patient.extension:dmp-fermeture.extension:reason"]
    both = {**closure(today), "extension": [*closure(today)["extension"], {"url": "motif", "valueString": "x"}]}
    body = status(patient.put(f"Patient/{pid}", {**current, "active": False, "extension": [both]}), 422)
    assert body["issue"][0]["expression"] == ["Patient.extension:dmp-fermeture.extension:reason"]
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
    assert kept["extension"][0]["extension"][1] == {"url": "reason", "valueString": "décès"}


def test_a_closure_in_the_former_form_is_still_accepted(world: World) -> None:
    """CONTRACT §3 names ``date`` (valueDate or valueDateTime) and ``reason``; ``motif`` (the former
    name of ``reason``) with a valueDateTime, as clients of the first version sent it, still closes."""
    pid, _ = open_dmp(world)
    now = world.clock.now
    former = {
        "url": CLOSURE_URL,
        "extension": [
            {"url": "date", "valueDateTime": now.isoformat(timespec="seconds")},
            {"url": "motif", "valueCoding": {"system": "https://example.org/motifs", "code": "deces"}},
        ],
    }
    current = stored(world, "Patient", pid)
    status(client(world, "PAT").put(f"Patient/{pid}", {**current, "active": False, "extension": [former]}), 200)
    assert stored(world, "Patient", pid)["active"] is False
    assert lifecycle_events(world, INS_A) == ["deprecate"]


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


# -- purge ---------------------------------------------------------------------------------------

OLD_DOC_ID = "urn:oid:1.2.250.1.213.1.1.9.424242"  # the purged document's unique id
OLD_DESCRIPTION = "Bilan neuropsychologique Zephyrine"


def seed_old_dmp(world: World, today: date) -> dict[str, str]:
    """A DMP closed 11 years ago holding one of everything (ids free of its INS, as the server's
    own ids are): documents with content in several versions, a deleted one, a folder, decisions
    (one revoked), a relative, provenance, a subscription, a notice record, and trail entries."""
    pid = world.seed_patient(INS_A, pid="dmp-old", closed_on=date(today.year - 11, 1, 15))
    doc = world.seed_document(
        pid, doc_id="old-doc", with_binary=True, masterIdentifier={"system": "urn:ietf:rfc:3986", "value": OLD_DOC_ID}
    )
    first = stored(world, "DocumentReference", doc)
    world.store.create({"resourceType": "Binary", "id": "old-bin-2", "contentType": "text/plain", "data": "eQ=="})
    second = {**first, "description": OLD_DESCRIPTION}
    second["content"] = [
        {"attachment": {"contentType": "text/plain", "url": f"{world.config.base_url}/Binary/old-bin-2"}}
    ]
    world.store.update(second)
    gone = world.seed_document(pid, doc_id="old-deleted")
    world.store.delete("DocumentReference", gone)
    world.store.create(
        {
            "resourceType": "List",
            "id": "old-list",
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{pid}"},
            "entry": [{"item": {"reference": f"DocumentReference/{doc}"}}],
        }
    )
    grant = world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
    revoked = world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_OUT))
    world.store.delete("Consent", revoked)
    world.store.create(
        {
            "resourceType": "RelatedPerson",
            "id": "old-parent",
            "patient": {"reference": f"Patient/{pid}"},
            "identifier": [{"system": INS_SYSTEM, "value": REP}],
        }
    )
    world.store.create(
        {
            "resourceType": "Provenance",
            "id": "old-prov",
            "target": [{"reference": f"Patient/{pid}"}],
            "recorded": "2014-01-15T10:00:00Z",
            "agent": [{"who": {"display": "import"}}],
        }
    )
    world.store.create(
        {
            "resourceType": "Subscription",
            "id": "old-sub",
            "status": "off",
            "reason": "alertes",
            "criteria": f"DocumentReference?patient=Patient/{pid}",
            "channel": {"type": "email"},
        }
    )
    world.store.create(
        {**stored(world, "Subscription", "old-sub"), "id": "not-old-sub", "criteria": f"List?subject={pid}0"}
    )
    world.store.put_record("majority-notice", f"{pid}/adult", b'{"status": "sent"}')
    world.store.put_record(SUBSCRIBER_KIND, "old-sub", b"{}")
    book = AccountBook(world.store)
    for ins, role in ((INS_A, "PAT"), (REP, "LEGREP")):  # the patient's login goes, the parent's stays
        contact = Contact(f"{role.lower()}@example.org", None, "email")
        book.put(Account((INS_SYSTEM, ins), role, "scrypt$hash", False, contact))
    return {"pid": pid, "doc": doc, "grant": grant}


def world_with_three_dmps(world: World) -> dict[str, str]:
    """The DMP due for purge, an open one and one closed 9 years ago; trail entries about each."""
    today = world.clock.now.date()
    old = seed_old_dmp(world, today)
    other = world.seed_patient(INS_B, pid="dmp-other")
    other_doc = world.seed_document(other, doc_id="other-doc", with_binary=True, description="Compte rendu de Basile")
    recent = world.seed_patient("169017512345023", pid="dmp-recent", closed_on=date(today.year - 9, 1, 15))
    status(world.patient(INS_A).get(f"Patient/{old['pid']}"), 200)  # R2: the patient still reads it
    status(world.doctor(DR, INS_A).get(f"Patient/{old['pid']}"), 403)  # a refusal is in the trail too
    assert world.patient(INS_B).ids(f"DocumentReference?patient={other}") == {other_doc}
    return {**old, "other": other, "other_doc": other_doc, "recent": recent}


def everything(world: World) -> set[tuple[str, str, int]]:
    """Every version the store holds, deleted ones included."""
    history = world.store.history(OPEN_SCOPE, count=100_000)
    return {(s.resource_type, s.id, s.version) for s in history.entries}


def on_disk(world: World, *needles: str) -> set[str]:
    """Which of ``needles`` the database files hold, once the WAL is written back."""
    with world.store.transaction():
        pass
    conn = sqlite3.connect(world.config.sqlite_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    files = [world.config.sqlite_path, world.config.sqlite_path.with_name(world.config.sqlite_path.name + "-wal")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    return {n for n in needles if n.encode() in raw}


def test_a_dry_run_lists_what_would_go_and_changes_nothing(world: World) -> None:
    ids = world_with_three_dmps(world)
    before = everything(world)
    report = purge(world.service, today=world.clock.now.date(), years=10, dry_run=True, operator="test")
    assert [d.patient_id for d in report.dmps] == [ids["pid"]]
    counts = report.dmps[0].counts
    assert counts == {
        "AuditEvent": 2,
        "Binary": 2,
        "Consent": 4,
        "DocumentReference": 2,
        "List": 1,
        "Patient": 1,
        "Provenance": 1,
        "RelatedPerson": 1,
        "Subscription": 1,
    }
    assert report.dmps[0].records == (
        ("majority-notice", f"{ids['pid']}/adult"),
        (SUBSCRIBER_KIND, "old-sub"),
        (ACCOUNT_KIND, ins_key((INS_SYSTEM, INS_A))),
    )
    lines = list(report.lines())
    assert any(line.startswith(f"  Patient/{ids['pid']} closed on ") and "would remove 15" in line for line in lines)
    assert everything(world) == before and report.compaction is None
    assert world.store.get_record("majority-notice", f"{ids['pid']}/adult") is not None


def test_a_purge_leaves_no_trace_of_the_dmp_and_keeps_the_others(world: World) -> None:
    ids = world_with_three_dmps(world)
    traces = (INS_A, OLD_DOC_ID, OLD_DESCRIPTION)
    assert on_disk(world, *traces, INS_B) == {*traces, INS_B}  # the check below can fail
    before = everything(world)
    report = purge(world.service, today=world.clock.now.date(), years=10, dry_run=False, operator="alice")
    assert [d.patient_id for d in report.dmps] == [ids["pid"]] and "truncated" in (report.compaction or "")
    assert on_disk(world, *traces, INS_B) == {INS_B}
    left = everything(world)
    removed = {(rtype, rid) for rtype, rid, _ in before - left}
    assert removed == set(report.dmps[0].resources)  # every version of exactly these, nothing else
    assert {("Binary", "bin-old-doc"), ("Binary", "old-bin-2"), ("DocumentReference", "old-deleted")} <= removed
    assert {("Consent", ids["grant"]), ("Subscription", "old-sub"), ("Patient", ids["pid"])} <= removed
    assert not {(rtype, rid) for rtype, rid, _ in left} & removed
    assert world.store.exists("Subscription", "not-old-sub") == 1  # "dmp-old0" is another patient
    purge_events = [v for v in left - before if v[0] == "AuditEvent"]
    assert len(left - before) == len(purge_events) == 1  # the only thing the purge added
    event = stored(world, "AuditEvent", purge_events[0][1])
    assert event["subtype"] == [{"system": LIFECYCLE_SYSTEM, "code": "destroy"}] and event["action"] == "D"
    assert event["entity"][0]["what"] == {"type": "Patient", "reference": f"Patient/{ids['pid']}"}
    assert {d["type"]: d["valueString"] for d in event["entity"][0]["detail"]}["DocumentReference"] == "2"
    assert "alice" in event["agent"][0]["who"]["display"] and INS_A not in json.dumps(event)
    assert world.store.get_record("majority-notice", f"{ids['pid']}/adult") is None
    assert world.store.get_record(SUBSCRIBER_KIND, "old-sub") is None
    book = AccountBook(world.store)
    assert book.get((INS_SYSTEM, INS_A)) is None and book.get((INS_SYSTEM, REP)) is not None
    # The other DMPs are untouched: the open one is read as before, the recent closure is kept.
    assert world.patient(INS_B).ids(f"DocumentReference?patient={ids['other']}") == {ids["other_doc"]}
    assert status(world.patient(INS_B).get("Binary/bin-other-doc"), 200)["id"] == "bin-other-doc"
    assert stored(world, "Patient", ids["recent"])["active"] is False
    # The purged patient has no DMP any more; a second purge finds nothing.
    assert world.patient(INS_A).ids(f"Patient?identifier={INS_SYSTEM}|{INS_A}") == set()
    assert purge(world.service, today=world.clock.now.date(), years=10, dry_run=False, operator="alice").dmps == []


def test_the_purge_command(world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``dmp-server purge`` against the data directory, by the real clock."""
    today = datetime.now(UTC).date()
    world.seed_patient(INS_A, pid="eleven", closed_on=add_years(today, -11))
    world.seed_patient(INS_B, pid="nine", closed_on=add_years(today, -9))
    world.close()
    monkeypatch.setenv("DMP_DATA_DIR", str(world.config.data_dir))
    assert main(["purge", "--dry-run"]) == 0
    assert "Patient/eleven closed on" in capsys.readouterr().out
    assert main(["purge", "--older-than-years", "12"]) == 0
    assert "Patient/eleven" not in capsys.readouterr().out
    assert main(["purge", "--older-than-years", "5"]) == 2
    assert "shorter than the retention period" in capsys.readouterr().err
    assert main(["purge"]) == 0
    out = capsys.readouterr().out
    assert "Patient/eleven closed on" in out and "removed 3 (Consent 2, Patient 1)" in out and "Patient/nine" not in out
    again = World(world.config.data_dir.parent)
    try:
        assert again.store.exists("Patient", "eleven") is None and again.store.exists("Patient", "nine") == 1
    finally:
        again.close()


def test_a_dmp_closed_before_the_closure_extension_is_purged_from_its_last_write(world: World) -> None:
    """A DMP closed without the extension (before it was required) counts from the day its Patient
    was last written: nothing but a reopening writes a closed DMP's Patient."""
    world.seed_patient(INS_A, pid="legacy", active=False)
    world.seed_patient(INS_B, pid="open")
    today = world.clock.now.date()
    later = purge(world.service, today=add_years(today, 10) - timedelta(days=1), years=10, dry_run=True, operator="t")
    assert later.dmps == []
    due = purge(world.service, today=add_years(today, 10), years=10, dry_run=True, operator="t")
    assert [d.patient_id for d in due.dmps] == ["legacy"] and due.dmps[0].closed_on == today
