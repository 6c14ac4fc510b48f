"""The majority job (R7, R8) and the access of a minor's representatives at the day boundary.

Real parts only: the DMP test world (real server, real ES256 tokens, real SQLite) with its movable
clock, the job run as the runner runs it, and mail delivered over SMTP to a real sink on loopback.
Tokens are minted at the real time, before the world's clock is moved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from authz.consents import new_consent
from authz.lifecycle import LIFECYCLE_SYSTEM
from authz.terms import ACCESS, IDNATPS_SYSTEM, REPRESENTATIVE
from fhir_server.app import JOBS
from fhir_server.cli import main
from fhir_server.dmp.jobs import JobContext, run_jobs
from fhir_server.runtime.mail import Mailer, SmtpMailer
from fhirmodel.dates import add_months, add_years
from storage.query import OPEN_SCOPE
from tests.dmp import INS_SYSTEM, As, World, ins_of
from tests.smtp_sink import SmtpSink, free_port

MINOR = "115037512345874"
WARD = "206037512345184"  # an adult under a protection measure that runs past 18
PARENT_1 = "275017500000135"  # known by a RelatedPerson with an address
PARENT_2 = "175017500000284"  # known only by the Consent's actor display
PARENT_3 = "275017500000333"  # no address anywhere
GUARDIAN = "165017500000487"
DR = "810000000001"
ADO, P1, P2, G = "ado@example.org", "parent1@example.org", "parent2@example.org", "tuteur@example.org"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def at(day: date, hour: int = 10) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def representation(world: World, ins: str, rep: str, end: date, display: str | None = None) -> str:
    """A legal-representative Consent ending on ``end`` (a date, as CONTRACT §4 writes it)."""
    consent = new_consent(REPRESENTATIVE, ins_of(ins), world.clock.now - timedelta(days=3000), actor=(INS_SYSTEM, rep))
    consent["provision"]["period"] = {"start": "2010-01-01", "end": end.isoformat()}
    if display:
        consent["provision"]["actor"][0]["reference"]["display"] = display
    world.store.create(consent)
    return str(consent["id"])


def seed_minor(world: World, majority: date) -> dict[str, Any]:
    """A minor coming of age on ``majority`` with three representatives, a document and a grant."""
    pid = world.seed_patient(
        MINOR,
        pid="minor",
        birth_date=add_years(majority, -18).isoformat(),
        name=[{"family": "Martin", "given": ["Léa"]}],
        telecom=[{"system": "phone", "value": "0600000000"}, {"system": "email", "value": ADO}],
    )
    doc = world.seed_document(pid)
    world.seed_consent(ACCESS, MINOR, (IDNATPS_SYSTEM, DR))
    consents = [
        representation(world, MINOR, PARENT_1, majority),
        representation(world, MINOR, PARENT_2, majority, display=P2),
        representation(world, MINOR, PARENT_3, majority, display="Parent sans adresse"),
    ]
    world.store.create(
        {
            "resourceType": "RelatedPerson",
            "id": "parent-1",
            "patient": {"reference": f"Patient/{pid}"},
            "identifier": [{"system": INS_SYSTEM, "value": PARENT_1}],
            "telecom": [
                {"system": "email", "value": "ancienne@example.org", "use": "old"},
                {"system": "email", "value": P1},
            ],
        }
    )
    return {"pid": pid, "doc": doc, "consents": consents}


def seed_ward(world: World, majority: date) -> str:
    """Someone coming of age the same way, whose representative's measure runs on after 18."""
    world.seed_patient(WARD, pid="ward", birth_date=add_years(majority, -18).isoformat())
    return representation(world, WARD, GUARDIAN, add_years(majority, 5), display=G)


def job(world: World, mailer: Mailer) -> int:
    done = run_jobs(JobContext(world.service, mailer, world.clock), JOBS, ["majority"])
    assert done is not None and done["majority"] >= 0
    return done["majority"]


def sink_mailer(sink: SmtpSink) -> SmtpMailer:
    return SmtpMailer(sink.host, sink.port, "dmp@localhost")


def legrep(world: World, rep: str) -> As:
    return world.as_("LEGREP", patient=MINOR, sub=rep)


def subject(message: Message) -> str:
    return str(make_header(decode_header(str(message["Subject"]))))


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


def consent_status(world: World, cid: str) -> str:
    return str(world.store.read("Consent", cid, OPEN_SCOPE).json()["status"])


def test_the_representatives_are_told_once_a_month_before(
    world: World, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    majority = world.clock.now.date() + timedelta(days=20)
    seed_minor(world, majority)
    seed_ward(world, majority)
    mailer = sink_mailer(smtp_sink)
    world.clock.now = at(add_months(majority, -1) - timedelta(days=1))
    assert job(world, mailer) == 0 and smtp_sink.received == []
    world.clock.now = at(add_months(majority, -1))
    with caplog.at_level(logging.INFO, logger="fhir_server.dmp.lifecycle.majority"):
        assert job(world, mailer) == 2
    assert "no e-mail address" in caplog.text  # the third parent: logged, not an error
    first, second = smtp_sink.to(P1), smtp_sink.to(P2)
    assert len(first) == len(second) == 1 and len(smtp_sink.received) == 2  # not to an address marked old
    assert subject(first[0]) == f"DMP : fin de votre représentation légale le {majority.strftime('%d/%m/%Y')}"
    assert "(Léa Martin) aura 18 ans" in body(first[0])
    world.clock.now += timedelta(days=3)
    assert job(world, mailer) == 0 and len(smtp_sink.received) == 2  # sent once across runs


def test_a_notice_that_could_not_be_sent_is_sent_at_the_next_run(world: World, smtp_sink: SmtpSink) -> None:
    majority = world.clock.now.date() + timedelta(days=20)
    seed_minor(world, majority)
    world.clock.now = at(majority - timedelta(days=10))
    nobody_listening = SmtpMailer("127.0.0.1", free_port(), "dmp@localhost", timeout=5)
    assert job(world, nobody_listening) == 0
    assert job(world, sink_mailer(smtp_sink)) == 2
    assert len(smtp_sink.to(P1)) == len(smtp_sink.to(P2)) == 1


def test_at_18_the_representatives_access_ends_and_the_adult_takes_over(world: World, smtp_sink: SmtpSink) -> None:
    majority = world.clock.now.date() + timedelta(days=20)
    minor = seed_minor(world, majority)
    guardian_consent = seed_ward(world, majority)
    mailer = sink_mailer(smtp_sink)
    parent, patient = legrep(world, PARENT_1), world.patient(MINOR)
    pid, doc = minor["pid"], minor["doc"]
    world.clock.now = at(majority - timedelta(days=1), 23)
    assert parent.ids(f"DocumentReference?patient={pid}") == {doc}  # R8: the day before
    assert patient.get(f"Patient/{pid}").status_code == 403  # R7: not yet
    world.clock.now = at(majority, 9)
    handled = job(world, mailer)
    assert handled == 3 + 1  # three Consents ended, one mail to the adult
    assert [consent_status(world, c) for c in minor["consents"]] == ["inactive"] * 3
    assert consent_status(world, guardian_consent) == "active"  # the measure for an adult stays
    assert parent.get(f"DocumentReference?patient={pid}").status_code == 403
    assert parent.get(f"Patient/{pid}").status_code == 403
    assert patient.ids(f"DocumentReference?patient={pid}") == {doc}  # the adult reads their record
    adult_mail = smtp_sink.to(ADO)
    assert len(adult_mail) == 1 and "vos propres identifiants" in body(adult_mail[0])
    assert smtp_sink.to(G) == []
    # The patient sees what the server did: a new version of each Consent, an entry in the trail.
    history = patient.get(f"Consent/{minor['consents'][0]}/_history").get_json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["inactive", "active"]
    trail = patient.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{MINOR}&_count=200").get_json()
    by_server = [
        e["resource"]
        for e in trail["entry"]
        if e["resource"]["agent"][0]["who"].get("display", "").startswith("dmp-server majority")
    ]
    assert len(by_server) == 3
    assert {"system": LIFECYCLE_SYSTEM, "code": "deprecate"} in by_server[0]["subtype"]
    world.clock.now = at(majority + timedelta(days=1))
    assert job(world, mailer) == 0 and len(smtp_sink.to(ADO)) == 1  # nothing twice
    assert parent.get(f"DocumentReference?patient={pid}").status_code == 403


def test_without_the_job_the_representation_still_ends_with_the_birthday(world: World) -> None:
    """R8 holds by the Consents' period.end alone: the job only tidies up and tells people."""
    majority = world.clock.now.date() + timedelta(days=20)
    minor = seed_minor(world, majority)
    parent, patient = legrep(world, PARENT_1), world.patient(MINOR)
    world.clock.now = at(majority - timedelta(days=1), 23)
    assert parent.get(f"Patient/{minor['pid']}").status_code == 200
    world.clock.now = at(majority, 23)
    assert parent.get(f"Patient/{minor['pid']}").status_code == 200  # period.end is the whole birthday
    assert patient.get(f"Patient/{minor['pid']}").status_code == 200
    world.clock.now = at(majority + timedelta(days=1), 0)
    assert parent.get(f"Patient/{minor['pid']}").status_code == 403
    assert parent.get(f"DocumentReference?patient={minor['pid']}").status_code == 403
    assert [consent_status(world, c) for c in minor["consents"]] == ["active"] * 3


def test_the_jobs_command_runs_the_majority_job(
    world: World, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dmp-server jobs --only majority``, by the real clock, mailing through DMP_SMTP_*."""
    seed_minor(world, datetime.now(UTC).date() + timedelta(days=10))
    world.close()
    monkeypatch.setenv("DMP_DATA_DIR", str(world.config.data_dir))
    monkeypatch.setenv("DMP_SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("DMP_SMTP_PORT", str(smtp_sink.port))
    assert main(["jobs", "--only", "majority"]) == 0
    assert capsys.readouterr().out.strip() == "majority: 2"
    assert len(smtp_sink.to(P1)) == len(smtp_sink.to(P2)) == 1
    assert main(["jobs", "--only", "majority"]) == 0
    assert capsys.readouterr().out.strip() == "majority: 0"
    assert len(smtp_sink.received) == 2
