"""Alerts (R22, R5): FHIR R4 Subscriptions written over HTTP with real tokens, and their delivery
by the ``alerts`` job to a real SMTP server and a real HTTP server on loopback.

Time is the world's movable clock (the gatekeeper's and the job's): retries become due by moving
it, never by sleeping. The SMTP sink's ``wait_for`` polls only because aiosmtpd stores a message on
its own thread.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from werkzeug.test import TestResponse

from authz.terms import IDNATPS_SYSTEM, VISIBILITY_SYSTEM
from fhir_server.alerts.topics import SUBSCRIPTION_TOPIC
from tests.dmp import CR_CONSULTATION, INS_SYSTEM, LOINC, As, World
from tests.paths import EXAMPLES
from tests.test_mhd_provide import created, entry_of, example

INS_A = "1800175123456"
INS_B = "2850375123457"
REP = "2750175000001"  # a legal representative of A (their own INS)
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
        "DocumentReference?patient=Patient/pat-2850375123457",  # another patient, by id
        f"DocumentReference?patient.identifier={INS_SYSTEM}|2850375123457",  # another patient, by INS
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_A}&patient=Patient/pat-2850375123457",
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_A},2850375123457",
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
    refused(legrep(world, rep="1750175000002").get("Subscription"), 403, "forbidden")  # not a representative


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


def add_document(world: World, pid: str, ins: str = INS_A, labels: tuple[str, ...] = ()) -> str:
    response = world.doctor(DR, ins).post("DocumentReference", document(pid, labels))
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
