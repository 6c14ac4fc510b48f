"""Alerts (R22, R5): FHIR R4 Subscriptions written over HTTP with real tokens, and their delivery
by the ``alerts`` job to a real SMTP server and a real HTTP server on loopback.

Time is the world's movable clock (the gatekeeper's and the job's): retries become due by moving
it, never by sleeping. The SMTP sink's ``wait_for`` polls only because aiosmtpd stores a message on
its own thread.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from werkzeug.test import TestResponse

from authz.outbox import EMERGENCY_TOPIC, SUBSCRIPTION_TOPIC
from authz.terms import IDNATPS_SYSTEM, VISIBILITY_SYSTEM
from fhir_server.app import JOBS
from fhir_server.cli import main
from fhir_server.dmp.alerts import resthook
from fhir_server.dmp.alerts.channel import FHIR_JSON
from fhir_server.dmp.alerts.resthook import DeliveryError
from fhir_server.dmp.alerts.retry import MAX_ATTEMPTS, delay
from fhir_server.dmp.jobs import JobContext, run_jobs
from fhir_server.runtime.mail import DisabledMailer, Mailer, SmtpMailer
from storage.interface import Queued
from tests.dmp import CR_CONSULTATION, INS_SYSTEM, LOINC, As, World
from tests.paths import EXAMPLES
from tests.smtp_sink import SmtpSink, free_port
from tests.test_mhd_provide import created, entry_of, example

INS_A = "180017512345660"
INS_B = "285037512345787"
REP = "275017500000135"  # a legal representative of A (their own INS)
DR = "810000000001"
HOSPITAL = "urn:oid:1.2.250.1.71.4.2.2|330780038"
PATIENT_MAIL = "patient.a@example.org"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, subscription_allow_http=True)
    yield w
    w.close()


def refused(response: TestResponse, status: int, code: str, element: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == code, issue
    if element is not None:
        assert issue["expression"] == [element], issue


def subscription(criteria: str, channel: dict[str, Any], status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": status,
        "reason": "Être prévenu des nouveaux documents",
        "criteria": criteria,
        "channel": channel,
    }


def by_id(pid: str) -> str:
    return f"DocumentReference?patient=Patient/{pid}"


def by_ins(ins: str) -> str:
    return f"DocumentReference?patient.identifier={INS_SYSTEM}|{ins}"


def email(address: str = PATIENT_MAIL) -> dict[str, Any]:
    return {"type": "email", "endpoint": f"mailto:{address}"}


def subscribe(client: As, criteria: str, channel: dict[str, Any]) -> dict[str, Any]:
    response = client.post("Subscription", subscription(criteria, channel))
    assert response.status_code == 201, response.get_data(as_text=True)
    created: dict[str, Any] = response.get_json()
    return created


def legrep(world: World, ins: str = INS_A, rep: str = REP) -> As:
    return world.as_("LEGREP", patient=ins, sub=rep)


# -- writing Subscriptions ---------------------------------------------------------------------


def test_the_patient_subscribes_and_the_server_activates_the_subscription(world: World) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    created = subscribe(patient, by_id(pid), email())
    assert created["status"] == "active"
    read = patient.get(f"Subscription/{created['id']}")
    assert read.status_code == 200 and read.get_json()["status"] == "active"
    by_identifier = subscribe(patient, by_ins(INS_A), {**email(), "payload": "application/fhir+json"})
    assert patient.ids("Subscription?status=active") == {created["id"], by_identifier["id"]}


def test_the_client_pauses_with_off_and_never_sets_error(world: World) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    created = subscribe(patient, by_id(pid), email())
    paused = patient.put(f"Subscription/{created['id']}", {**created, "status": "off", "error": "made up"})
    assert paused.status_code == 200 and paused.get_json()["status"] == "off"
    assert "error" not in paused.get_json()
    refused(patient.put(f"Subscription/{created['id']}", {**created, "status": "error"}), 422, "invalid")
    again = patient.put(f"Subscription/{created['id']}", {**created, "status": "requested"})
    assert again.get_json()["status"] == "active"


@pytest.mark.parametrize(
    "criteria",
    [
        "DocumentReference?patient=Patient/pat-285037512345787",  # another patient, by id
        f"DocumentReference?patient.identifier={INS_SYSTEM}|285037512345787",  # another patient, by INS
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_A}&patient=Patient/pat-285037512345787",
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_A},285037512345787",
        "DocumentReference?status=current",  # everyone's documents
        f"AuditEvent?patient=Patient/pat-{INS_A}",  # not documents
        "DocumentReference",
    ],
)
def test_criteria_reaching_beyond_the_patients_documents_are_422(world: World, criteria: str) -> None:
    """R1: a Subscription never names another patient's documents, whatever the spelling."""
    world.seed_patient(INS_A)
    world.seed_patient(INS_B)
    patient = world.patient(INS_A)
    response = patient.post("Subscription", subscription(criteria, email()))
    refused(response, 422, "business-rule", "Subscription.criteria")
    assert patient.ids("Subscription") == set()


def test_only_the_patient_and_their_representatives_subscribe(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_consent("legal-representative", INS_A, (INS_SYSTEM, REP))
    world.seed_consent("access", INS_A, ("urn:oid:1.2.250.1.71.4.2.1", DR))
    doctor = world.doctor(DR, INS_A)
    refused(doctor.post("Subscription", subscription(by_id(pid), email("dr@example.org"))), 403, "forbidden")
    staff = world.as_("ASS", patient=INS_A)
    refused(staff.post("Subscription", subscription(by_id(pid), email())), 403, "forbidden")
    mine = subscribe(world.patient(INS_A), by_id(pid), email())
    refused(doctor.get("Subscription"), 403, "forbidden")
    refused(doctor.delete(f"Subscription/{mine['id']}"), 404, "not-found")  # not among what they see
    theirs = subscribe(legrep(world), by_ins(INS_A), email("parent@example.org"))
    assert world.patient(INS_A).ids("Subscription") == {mine["id"], theirs["id"]}
    assert legrep(world).ids("Subscription") == {mine["id"], theirs["id"]}
    refused(legrep(world, rep="175017500000284").get("Subscription"), 403, "forbidden")  # not a representative


def test_another_patients_subscriptions_are_invisible_and_untouchable(world: World) -> None:
    pid_a = world.seed_patient(INS_A)
    pid_b = world.seed_patient(INS_B)
    a, b = world.patient(INS_A), world.patient(INS_B)
    of_a = subscribe(a, by_id(pid_a), email())
    of_b = subscribe(b, by_id(pid_b), email("b@example.org"))
    assert a.ids("Subscription") == {of_a["id"]}
    assert b.ids("Subscription") == {of_b["id"]}
    assert a.ids(f"Subscription?criteria:exact={by_id(pid_b)}") == set()
    assert a.total("Subscription?_total=accurate") == 1
    refused(a.get(f"Subscription/{of_b['id']}"), 404, "not-found")
    refused(a.put(f"Subscription/{of_b['id']}", {**of_b, "channel": email()}), 404, "not-found")
    refused(a.delete(f"Subscription/{of_b['id']}"), 404, "not-found")
    assert b.get(f"Subscription/{of_b['id']}").get_json()["channel"] == email("b@example.org")


HOOK = "https://hooks.example.org/dmp"
CHANNEL = "Subscription.channel"


def hook(**more: Any) -> dict[str, Any]:
    return {"type": "rest-hook", "endpoint": HOOK, **more}


@pytest.mark.parametrize(
    ("channel", "element"),
    [
        ({"type": "websocket", "endpoint": "wss://example.org/ws"}, f"{CHANNEL}.type"),
        ({"type": "sms", "endpoint": "tel:+33600000000"}, f"{CHANNEL}.type"),
        ({"type": "email", "endpoint": "mailto:a@example.org,b@example.org"}, f"{CHANNEL}.endpoint"),
        ({"type": "email", "endpoint": "mailto:a@example.org?subject=x"}, f"{CHANNEL}.endpoint"),
        ({"type": "email", "endpoint": HOOK}, f"{CHANNEL}.endpoint"),
        ({**email(), "header": ["X-Token: 1"]}, f"{CHANNEL}.header"),
        ({**email(), "payload": "application/fhir+xml"}, f"{CHANNEL}.payload"),
        ({"type": "rest-hook"}, f"{CHANNEL}.endpoint"),
        (hook(endpoint="http://example.org/hook"), f"{CHANNEL}.endpoint"),
        (hook(endpoint="ftp://example.org/hook"), f"{CHANNEL}.endpoint"),
        (hook(endpoint="https://user:pw@example.org/hook"), f"{CHANNEL}.endpoint"),
        (hook(endpoint="https://example.org:99999/hook"), f"{CHANNEL}.endpoint"),
        (hook(payload="text/plain"), f"{CHANNEL}.payload"),
        (hook(header=["Host: evil.example.org"]), f"{CHANNEL}.header"),
        (hook(header=["no colon"]), f"{CHANNEL}.header"),
        (hook(header=["A: b\r\nC: d"]), f"{CHANNEL}.header"),
        (hook(header=[f"H{i}: v" for i in range(11)]), f"{CHANNEL}.header"),
    ],
)
def test_channels_the_server_does_not_serve_are_422_naming_the_element(
    world: World, channel: dict[str, Any], element: str
) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    response = patient.post("Subscription", subscription(by_id(pid), channel))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == [element]
    assert patient.ids("Subscription") == set()


def test_clear_http_only_to_loopback_and_only_when_the_server_allows_it(world: World, tmp_path: Path) -> None:
    pid = world.seed_patient(INS_A)
    clear = hook(endpoint="http://127.0.0.1:8081/hook")
    assert subscribe(world.patient(INS_A), by_id(pid), clear)["status"] == "active"
    strict = World(tmp_path / "strict")  # the default: DMP_SUBSCRIPTION_ALLOW_HTTP unset
    try:
        pid = strict.seed_patient(INS_A)
        response = strict.patient(INS_A).post("Subscription", subscription(by_id(pid), clear))
        refused(response, 422, "invalid", "Subscription.channel.endpoint")
        https = hook(header=["Authorization: Bearer x"])
        assert subscribe(strict.patient(INS_A), by_id(pid), https)["status"] == "active"
    finally:
        strict.close()


def test_a_dmp_holds_a_bounded_number_of_subscriptions(world: World) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    for n in range(20):
        subscribe(patient, by_id(pid), email(f"p{n}@example.org"))
    refused(patient.post("Subscription", subscription(by_id(pid), email())), 422, "business-rule", "Subscription")
    assert patient.total("Subscription?_total=accurate") == 20


# -- matching: a document that becomes current queues one message per active Subscription ------


def document(pid: str, labels: tuple[str, ...] = (), status: str = "current") -> dict[str, Any]:
    """A document as a professional submits it (class 10, authored by DR)."""
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": status,
        "type": {"coding": [{"system": LOINC, "code": CR_CONSULTATION}]},
        "subject": {"reference": f"Patient/{pid}"},
        "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}],
        "description": "Compte rendu de consultation de cardiologie",
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"secret").decode()}}],
    }
    if labels:
        doc["securityLabel"] = [{"coding": [{"system": VISIBILITY_SYSTEM, "code": label}]} for label in labels]
    return doc


def add_document(world: World, pid: str, labels: tuple[str, ...] = (), by: As | None = None) -> str:
    """A professional adds a document over HTTP (tokens are minted at the world's time: one
    minted before the clock moved stays valid)."""
    response = (by or world.doctor(DR, INS_A)).post("DocumentReference", document(pid, labels))
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.get_json()["id"])


def queued(world: World) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in world.store.pending(SUBSCRIPTION_TOPIC)]


def test_a_new_document_queues_ids_only_for_each_active_subscription(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_patient(INS_B)
    patient = world.patient(INS_A)
    first = subscribe(patient, by_id(pid), email())
    second = subscribe(patient, by_ins(INS_A), hook(endpoint="http://127.0.0.1:9/hook"))
    paused = subscribe(patient, by_id(pid), email("paused@example.org"))
    assert patient.put(f"Subscription/{paused['id']}", {**paused, "status": "off"}).status_code == 200
    subscribe(world.patient(INS_B), by_id(f"pat-{INS_B}"), email("b@example.org"))
    doc = add_document(world, pid)
    messages = queued(world)
    assert sorted(m["subscription"] for m in messages) == sorted([first["id"], second["id"]])
    assert {m["document"] for m in messages} == {doc} and all(m["created"] for m in messages)
    assert all(set(m) == {"subscription", "document", "created", "at"} for m in messages)


def test_documents_of_a_dmp_without_subscription_queue_nothing(world: World) -> None:
    pid = world.seed_patient(INS_A)
    add_document(world, pid)
    assert queued(world) == []


def test_a_refused_document_queues_nothing(world: World) -> None:
    """The message lands in the transaction of the write, or not at all."""
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), email())
    both = document(pid, labels=("INVISIBLE_PATIENT", "MASQUE_PS"))  # R18: refused
    assert world.doctor(DR, INS_A).post("DocumentReference", both).status_code in (403, 422)
    assert queued(world) == []


def test_an_update_that_makes_a_document_current_is_announced_once(world: World) -> None:
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), email())
    world.seed_consent("access", INS_A, (IDNATPS_SYSTEM, DR))
    doctor = world.doctor(DR, INS_A)
    draft = doctor.post("DocumentReference", document(pid, status="entered-in-error")).get_json()
    assert queued(world) == []
    assert doctor.put(f"DocumentReference/{draft['id']}", {**draft, "status": "current"}).status_code == 200
    again = doctor.get(f"DocumentReference/{draft['id']}").get_json()
    assert doctor.put(f"DocumentReference/{draft['id']}", {**again, "description": "v3"}).status_code == 200
    assert [(m["document"], m["created"]) for m in queued(world)] == [(draft["id"], False)]


def test_documents_of_a_transaction_are_announced(world: World) -> None:
    pid = world.seed_patient(INS_A)
    subscription_id = subscribe(world.patient(INS_A), by_id(pid), email())["id"]
    bundle = example(EXAMPLES / "ihe-mhd/examples/Bundle-ex-minimalProvideDocumentBundleSimpleContained.json", pid)
    for rtype in ("List", "DocumentReference"):
        entry_of(bundle, rtype)["resource"]["subject"] = {"reference": f"Patient/{pid}"}
    targets = created(world.doctor(DR, INS_A).post("", bundle))
    documents = [t.split("/")[1] for t in targets if t.startswith("DocumentReference/")]
    assert len(documents) == 1
    assert [(m["subscription"], m["document"]) for m in queued(world)] == [(subscription_id, documents[0])]


# -- delivery: the alerts job ------------------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that hangs up early (see the large reply test) is no error here


class Hook:
    """A real HTTP endpoint on loopback that records each POST it receives, answering ``status``.

    While answering it also checks that the server holds no write lock on its database: a
    delivery talks to the network outside any transaction (both the writer's ``flock`` and
    SQLite's own lock must be free)."""

    def __init__(self, database: Path | None = None):
        self.database = database
        self.status = 200
        self.extra: dict[str, str] = {}
        self.reply = b""
        self.hold = threading.Event()  # with ``holding``, the answer stays open until set
        self.holding = False
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.writer_free: list[bool] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.writer_free.append(hook._writer_is_free())
                hook.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(hook.status)
                sizes = {"Content-Length": str(len(hook.reply))}
                for name, value in {**sizes, **hook.extra}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(hook.reply)
                self.wfile.flush()
                if hook.holding:
                    hook.hold.wait(30)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dmp/notify?tenant=t1"

    def _writer_is_free(self) -> bool:
        if self.database is None:
            return True
        fd = os.open(f"{self.database}.writer", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        with closing(sqlite3.connect(self.database, timeout=0, isolation_level=None)) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False
            conn.execute("ROLLBACK")
        return True

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(world: World) -> Iterator[Hook]:
    hook = Hook(world.config.sqlite_path)
    yield hook
    hook.close()


@pytest.fixture
def mailer(smtp_sink: SmtpSink) -> SmtpMailer:
    return SmtpMailer(smtp_sink.host, smtp_sink.port, "dmp@example.org", timeout=5)


def run_alerts(world: World, mailer: Mailer) -> int:
    """One run of the ``alerts`` job, at the world's time."""
    done = run_jobs(JobContext(world.service, mailer, clock=world.clock), JOBS, ["alerts"])
    assert done is not None and done["alerts"] >= 0, done
    return done["alerts"]


def waiting(world: World, topic: str = SUBSCRIPTION_TOPIC) -> list[Queued]:
    return world.store.pending(topic)


def text_of(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return f"{mail['Subject']}\n{payload.decode(mail.get_content_charset() or 'utf-8')}"


def test_a_new_document_is_mailed_once_and_names_nothing_of_it(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    pid = world.seed_patient(INS_A)
    sub = subscribe(world.patient(INS_A), by_id(pid), email())
    doc = add_document(world, pid)
    assert run_alerts(world, mailer) == 1
    [mail] = smtp_sink.wait_for(PATIENT_MAIL)
    assert mail["From"] == "dmp@example.org"
    text = text_of(mail)
    assert "nouveau document" in text and sub["id"] in text
    for detail in (doc, "cardiologie", "Compte rendu", CR_CONSULTATION, DR, "secret", pid, INS_A):
        assert detail not in text
    assert run_alerts(world, mailer) == 0  # delivered once: acknowledged
    assert len(smtp_sink.to(PATIENT_MAIL)) == 1 and waiting(world) == []


def test_documents_hidden_from_the_patient_are_never_announced(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    """R12: an alert never reveals an INVISIBLE_PATIENT document; the next visible one is told."""
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), email())
    add_document(world, pid, labels=("INVISIBLE_PATIENT",))
    assert len(waiting(world)) == 1
    assert run_alerts(world, mailer) == 0
    assert waiting(world) == [] and smtp_sink.to(PATIENT_MAIL) == []
    add_document(world, pid)
    assert run_alerts(world, mailer) == 1
    assert len(smtp_sink.wait_for(PATIENT_MAIL)) == 1


def test_a_representative_is_not_told_of_documents_hidden_from_representatives(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    """R13: the representative's Subscription stays silent; the patient's own one is told."""
    pid = world.seed_patient(INS_A)
    world.seed_consent("legal-representative", INS_A, (INS_SYSTEM, REP))
    subscribe(legrep(world), by_ins(INS_A), email("parent@example.org"))
    subscribe(world.patient(INS_A), by_id(pid), email())
    add_document(world, pid, labels=("INVISIBLE_REPRESENTANTS_LEGAUX",))
    assert run_alerts(world, mailer) == 1
    assert len(smtp_sink.wait_for(PATIENT_MAIL)) == 1
    assert smtp_sink.to("parent@example.org") == []
    add_document(world, pid)
    assert run_alerts(world, mailer) == 2
    assert len(smtp_sink.wait_for("parent@example.org")) == 1


def test_the_last_writer_of_a_subscription_is_its_subscriber(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    """A representative who redirects the patient's Subscription gets only what they may see."""
    pid = world.seed_patient(INS_A)
    world.seed_consent("legal-representative", INS_A, (INS_SYSTEM, REP))
    sub = subscribe(world.patient(INS_A), by_id(pid), email())
    redirected = {**sub, "channel": email("parent@example.org")}
    assert legrep(world).put(f"Subscription/{sub['id']}", redirected).status_code == 200
    add_document(world, pid, labels=("INVISIBLE_REPRESENTANTS_LEGAUX",))
    assert run_alerts(world, mailer) == 0
    assert smtp_sink.received == []


def test_a_representative_whose_term_ended_is_not_told(world: World, smtp_sink: SmtpSink, mailer: SmtpMailer) -> None:
    """R8: the subscriber is judged at delivery, as things stand then."""
    pid = world.seed_patient(INS_A)
    world.seed_consent("legal-representative", INS_A, (INS_SYSTEM, REP), until=world.clock.now + timedelta(days=1))
    subscribe(legrep(world), by_ins(INS_A), email("parent@example.org"))
    add_document(world, pid)
    world.clock.now += timedelta(days=2)
    assert run_alerts(world, mailer) == 0
    assert smtp_sink.received == [] and waiting(world) == []


def test_a_deleted_or_paused_subscription_is_not_notified(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    gone = subscribe(patient, by_id(pid), email("gone@example.org"))
    paused = subscribe(patient, by_id(pid), email("paused@example.org"))
    add_document(world, pid)
    assert patient.delete(f"Subscription/{gone['id']}").status_code == 204
    assert patient.put(f"Subscription/{paused['id']}", {**paused, "status": "off"}).status_code == 200
    assert len(waiting(world)) == 2
    assert run_alerts(world, mailer) == 0
    assert smtp_sink.received == [] and waiting(world) == []


def test_a_rest_hook_receives_an_id_only_history_bundle_with_its_headers(world: World, endpoint: Hook) -> None:
    pid = world.seed_patient(INS_A)
    headers = ["Authorization: Bearer hook-secret", "X-Tenant: dmp-test"]
    channel = hook(endpoint=endpoint.url, payload="application/fhir+json", header=headers)
    subscribe(world.patient(INS_A), by_id(pid), channel)
    doc = add_document(world, pid)
    assert run_alerts(world, DisabledMailer()) == 1
    [(path, received, body)] = endpoint.received
    assert path == "/dmp/notify?tenant=t1"
    assert received["Authorization"] == "Bearer hook-secret" and received["X-Tenant"] == "dmp-test"
    assert received["Content-Type"] == "application/fhir+json"
    bundle = orjson.loads(body)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert bundle["entry"] == [
        {
            "fullUrl": f"{world.config.base_url}/DocumentReference/{doc}",
            "request": {"method": "POST", "url": "DocumentReference"},
            "response": {"status": "201 Created"},
        }
    ]
    assert set(bundle) == {"resourceType", "id", "type", "timestamp", "entry"}  # ids only, nothing else
    assert endpoint.writer_free == [True]
    assert run_alerts(world, DisabledMailer()) == 0 and len(endpoint.received) == 1


def test_a_rest_hook_without_payload_gets_an_empty_post(world: World, endpoint: Hook) -> None:
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), hook(endpoint=endpoint.url))
    add_document(world, pid)
    assert run_alerts(world, DisabledMailer()) == 1
    [(_, received, body)] = endpoint.received
    assert body == b"" and "Content-Type" not in received


def test_a_failing_rest_hook_is_retried_with_backoff_then_put_in_error(world: World, endpoint: Hook) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    sub = subscribe(patient, by_id(pid), hook(endpoint=endpoint.url))
    endpoint.status = 500
    doctor = world.doctor(DR, INS_A)
    add_document(world, pid, by=doctor)
    for attempt in range(1, MAX_ATTEMPTS):
        assert run_alerts(world, DisabledMailer()) == 0
        assert len(endpoint.received) == attempt
        assert [m.attempts for m in waiting(world)] == [attempt]
        world.clock.now += timedelta(seconds=delay(attempt) - 1)
        assert run_alerts(world, DisabledMailer()) == 0  # not due yet
        assert len(endpoint.received) == attempt
        world.clock.now += timedelta(seconds=1)
    assert [delay(n) for n in range(1, MAX_ATTEMPTS)] == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert run_alerts(world, DisabledMailer()) == 0
    assert len(endpoint.received) == MAX_ATTEMPTS and waiting(world) == []
    failed = patient.get(f"Subscription/{sub['id']}").get_json()
    assert failed["status"] == "error" and "HTTP 500" in failed["error"]
    add_document(world, pid, by=doctor)  # an errored Subscription is not notified
    assert waiting(world) == []
    again = patient.put(f"Subscription/{sub['id']}", {**failed, "status": "requested"}).get_json()
    assert again["status"] == "active" and "error" not in again


def test_a_rest_hook_redirect_is_a_failure_and_is_not_followed(world: World, endpoint: Hook) -> None:
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), hook(endpoint=endpoint.url))
    endpoint.status, endpoint.extra = 307, {"Location": f"{endpoint.url}&moved=1"}
    add_document(world, pid)
    assert run_alerts(world, DisabledMailer()) == 0
    assert [path for path, _, _ in endpoint.received] == ["/dmp/notify?tenant=t1"]
    assert [m.attempts for m in waiting(world)] == [1]
    endpoint.status, endpoint.extra = 204, {}
    world.clock.now += timedelta(seconds=delay(1))
    assert run_alerts(world, DisabledMailer()) == 1 and waiting(world) == []


def test_mail_waits_in_the_outbox_while_the_smtp_server_is_down(world: World) -> None:
    sink = SmtpSink(port=free_port())
    mailer = SmtpMailer(sink.host, sink.port, "dmp@example.org", timeout=5)

    def smtp_server() -> Controller:  # a stopped Controller does not start again: a new one each time
        controller = Controller(sink, hostname=sink.host, port=sink.port)
        controller.start()
        return controller

    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), email())
    doctor = world.doctor(DR, INS_A)
    add_document(world, pid, by=doctor)
    assert run_alerts(world, mailer) == 0  # nobody listens on the port yet
    assert [m.attempts for m in waiting(world)] == [1]
    server = smtp_server()
    try:
        assert run_alerts(world, mailer) == 0  # not due before the backoff
        world.clock.now += timedelta(seconds=delay(1))
        assert run_alerts(world, mailer) == 1
        assert len(sink.wait_for(PATIENT_MAIL)) == 1
    finally:
        server.stop()
    add_document(world, pid, by=doctor)
    assert run_alerts(world, mailer) == 0  # stopped: kept again
    assert [m.attempts for m in waiting(world)] == [1]
    server = smtp_server()
    try:
        world.clock.now += timedelta(seconds=delay(1))
        assert run_alerts(world, mailer) == 1
        assert len(sink.wait_for(PATIENT_MAIL, count=2)) == 2
    finally:
        server.stop()
    assert waiting(world) == []


def test_the_patient_is_mailed_about_emergency_accesses(world: World, smtp_sink: SmtpSink, mailer: SmtpMailer) -> None:
    """R5: when, in which mode and by whom (profession, establishment), one e-mail per run."""
    pid = world.seed_patient(INS_A, email=PATIENT_MAIL)
    doc = world.seed_document(pid)
    emergency = world.doctor("810000000003", INS_A, purpose="bris_de_glace", organization=HOSPITAL)
    assert emergency.get(f"DocumentReference/{doc}").status_code == 200
    assert emergency.get(f"DocumentReference?patient={pid}").status_code == 200
    assert len(waiting(world, EMERGENCY_TOPIC)) == 2
    assert run_alerts(world, mailer) == 2
    [mail] = smtp_sink.wait_for(PATIENT_MAIL)
    text = text_of(mail)
    assert "urgence" in mail["Subject"]
    assert "Médecin" in text and "330780038" in text and "bris de glace" in text and "2 accès" in text
    assert doc not in text and "810000000003" not in text
    assert run_alerts(world, mailer) == 0 and len(smtp_sink.to(PATIENT_MAIL)) == 1
    assert waiting(world, EMERGENCY_TOPIC) == []


def test_an_emergency_access_to_a_patient_without_e_mail_is_logged(
    world: World, mailer: SmtpMailer, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    pid = world.seed_patient(INS_A)
    emergency = world.doctor("810000000003", INS_A, purpose="bris_de_glace")
    assert emergency.get(f"DocumentReference?patient={pid}").status_code == 200
    with caplog.at_level(logging.WARNING):
        assert run_alerts(world, mailer) == 0
    assert "no e-mail address" in caplog.text and INS_A not in caplog.text
    assert waiting(world, EMERGENCY_TOPIC) == [] and smtp_sink.received == []


def test_the_jobs_command_delivers_alerts(
    world: World, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = world.seed_patient(INS_A)
    subscribe(world.patient(INS_A), by_id(pid), email())
    add_document(world, pid)
    monkeypatch.setenv("DMP_DATA_DIR", str(world.config.data_dir))
    monkeypatch.setenv("DMP_SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("DMP_SMTP_PORT", str(smtp_sink.port))
    assert main(["jobs", "--only", "alerts"]) == 0
    assert "alerts: 1" in capsys.readouterr().out
    assert len(smtp_sink.wait_for(PATIENT_MAIL)) == 1
    assert main(["jobs", "--only", "alerts"]) == 0
    assert "alerts: 0" in capsys.readouterr().out and len(smtp_sink.to(PATIENT_MAIL)) == 1


# -- the rest-hook's leash ---------------------------------------------------------------------


def test_a_rest_hook_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are accepted by the kernel, and never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        with pytest.raises(DeliveryError, match="could not be reached"):
            resthook.post(url, (), None, None, allow_loopback=True, timeout=0.2)


def test_a_rest_hook_exchange_has_a_deadline_beyond_the_read_timeout() -> None:
    """An endpoint may keep each read under the timeout (a byte at a time): the whole exchange is
    cut at the deadline all the same."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        with pytest.raises(DeliveryError, match=r"took longer than 0\.3 s"):
            resthook.post(url, (), None, None, allow_loopback=True, timeout=30, deadline=0.3)


def test_a_refused_connection_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="could not be reached"):
        resthook.post(f"http://127.0.0.1:{free_port()}/hook", (), None, None, allow_loopback=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "192.168.1.1", "169.254.169.254"])
def test_the_servers_own_networks_are_out_of_reach(host: str) -> None:
    endpoint = Hook()
    try:
        port = endpoint.server.server_address[1]
        with pytest.raises(DeliveryError, match="no public address"):
            resthook.post(f"https://{host}:{port}/hook", (), b"{}", FHIR_JSON, allow_loopback=False)
        assert endpoint.received == []
        resthook.post(f"http://127.0.0.1:{port}/hook", (), b"{}", FHIR_JSON, allow_loopback=True)
        assert len(endpoint.received) == 1  # the same endpoint, allowed: it was the rule that refused
    finally:
        endpoint.close()


def test_the_answer_is_not_read_beyond_its_first_bytes() -> None:
    """An endpoint announcing a gigabyte and sending a trickle does not hold the job: the
    notification was taken (2xx) and the rest of the answer means nothing."""
    endpoint = Hook()
    endpoint.extra = {"Content-Length": str(1 << 30)}
    endpoint.reply, endpoint.holding = b"x" * 4096, True
    try:
        resthook.post(endpoint.url, (), None, None, allow_loopback=True, timeout=5)
        assert len(endpoint.received) == 1
    finally:
        endpoint.close()


def test_a_damaged_message_blocks_nothing_and_is_dropped_at_the_limit(
    world: World, smtp_sink: SmtpSink, mailer: SmtpMailer
) -> None:
    pid = world.seed_patient(INS_A, email=PATIENT_MAIL)
    subscribe(world.patient(INS_A), by_id(pid), email())
    damaged = [world.store.enqueue(topic, b"{not json") for topic in (SUBSCRIPTION_TOPIC, EMERGENCY_TOPIC)]
    add_document(world, pid)
    assert run_alerts(world, mailer) == 1  # the good message behind the damaged one went out
    assert len(smtp_sink.wait_for(PATIENT_MAIL)) == 1
    for attempt in range(1, MAX_ATTEMPTS):
        assert [(m.id, m.attempts) for m in waiting(world) + waiting(world, EMERGENCY_TOPIC)] == [
            (damaged[0], attempt),
            (damaged[1], attempt),
        ]
        world.clock.now += timedelta(seconds=delay(attempt))
        assert run_alerts(world, mailer) == 0
    assert waiting(world) == [] and waiting(world, EMERGENCY_TOPIC) == []
