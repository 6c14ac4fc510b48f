"""Rectification (CONTRACT §5, DMP-RULES R19): a DocumentReference with ``relatesTo`` ``replaces``
supersedes the document it names, atomically, whatever the path — a plain ``POST``, an ``PUT``
that creates, an entry of a transaction or batch Bundle, an ITI-105 simplified publish (ITI-65 has
its own tests in tests/test_mhd_provide.py). Only its author replaces a document; only a current
one is replaced; a document of another patient, or one hidden from the caller, is answered exactly
as one that does not exist.

DMP world (tests/dmp.py): real gatekeeper, real tokens; records seeded through the store. The last
tests use the open gatekeeper (tests/support.py) for what the FHIR layer checks on its own.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import IDNATPS_SYSTEM, INVISIBLE_TO_PATIENT, MASKED_FROM_PROFESSIONALS
from storage.query import OPEN_SCOPE
from tests.conftest import Fhir
from tests.dmp import CR_CONSULTATION, INS_SYSTEM, LOINC, World

INS, OTHER_INS = "180017512345660", "285037512345787"
DR, DR_2, OUTSIDER = "810000000001", "810000000002", "810000000099"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def pid(world: World) -> str:
    return world.seed_granted(INS, DR, DR_2)


def replacing(pid: str, target: str, *, author: str | None = DR, **extra: Any) -> dict[str, Any]:
    """A new version of a document, its content elsewhere (a plain create, no inline data)."""
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": CR_CONSULTATION}]},
        "subject": {"reference": f"Patient/{pid}"},
        "relatesTo": [{"code": "replaces", "target": {"reference": target}}],
        "content": [{"attachment": {"contentType": "application/pdf", "url": "https://docs.example.org/cr-v2.pdf"}}],
        **extra,
    }
    if author:
        doc["author"] = [{"identifier": {"system": IDNATPS_SYSTEM, "value": author}}]
    return doc


def status_and_version(world: World, rid: str) -> tuple[str, int]:
    stored = world.store.read("DocumentReference", rid, OPEN_SCOPE)
    return stored.json()["status"], stored.version


def documents(world: World) -> int:
    return world.store.history(OPEN_SCOPE, "DocumentReference", count=1).total


def trail(world: World) -> int:
    return world.store.history(OPEN_SCOPE, "AuditEvent", count=1).total


def issue(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    return first


def refused(response: TestResponse, status: int, code: str, words: str, element: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    first = issue(response)
    assert first["code"] == code and words in first["diagnostics"], first
    if element is not None:
        assert first["expression"] == [element], first
    return first


# -------------------------------------------------------------------------- a plain create


def test_the_author_replaces_a_document_and_it_is_superseded_in_the_same_request(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    events = trail(world)
    response = world.doctor(DR, INS).post("DocumentReference", replacing(pid, f"DocumentReference/{old}"))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)
    assert status_and_version(world, response.get_json()["id"]) == ("current", 1)
    assert trail(world) == events + 1  # one request, one AuditEvent: the supersession is part of it
    # Searches tell current from superseded.
    found = world.doctor(DR, INS).ids(f"DocumentReference?patient={pid}&status=current")
    assert found == {response.get_json()["id"]}


@pytest.mark.parametrize(
    "target",
    [
        "DocumentReference/{id}",
        "http://127.0.0.1:8080/fhir/DocumentReference/{id}",
        "DocumentReference/{id}/_history/1",
    ],
    ids=["relative", "absolute", "versioned"],
)
def test_every_form_of_a_local_reference_names_the_replaced_document(world: World, pid: str, target: str) -> None:
    old = world.seed_document(pid, author=DR)
    response = world.doctor(DR, INS).post("DocumentReference", replacing(pid, target.format(id=old)))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_a_non_author_who_sees_the_document_is_refused(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    before = documents(world)
    assert world.doctor(DR_2, INS).get(f"DocumentReference/{old}").status_code == 200  # they see it
    response = world.doctor(DR_2, INS).post(
        "DocumentReference", replacing(pid, f"DocumentReference/{old}", author=DR_2)
    )
    refused(response, 403, "forbidden", f"DocumentReference/{old}: only a document's author replaces it")
    patient = world.patient(INS)
    mine = replacing(pid, f"DocumentReference/{old}", author=None)
    mine.update(author=[{"reference": f"Patient/{pid}"}], type={"coding": [{"system": TRE_A05, "code": "EXPPAT_1"}]})
    refused(patient.post("DocumentReference", mine), 403, "forbidden", "only a document's author replaces it")
    assert status_and_version(world, old) == ("current", 1)
    assert documents(world) == before


def test_the_patient_replaces_their_own_document(world: World, pid: str) -> None:
    old = world.seed_document(pid, "EXPPAT_1", type_system=TRE_A05, patient_author=True)
    mine = replacing(pid, f"DocumentReference/{old}", author=None)
    mine.update(author=[{"reference": f"Patient/{pid}"}], type={"coding": [{"system": TRE_A05, "code": "EXPPAT_2"}]})
    response = world.patient(INS).post("DocumentReference", mine)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_an_author_without_access_to_the_record_replaces_their_document(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=OUTSIDER)
    outsider = world.doctor(OUTSIDER, INS)
    assert outsider.get(f"DocumentReference/{old}").status_code == 403  # no access to the record (R3)
    response = outsider.post("DocumentReference", replacing(pid, f"DocumentReference/{old}", author=OUTSIDER))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


@pytest.mark.parametrize("status", ["superseded", "entered-in-error"])
def test_only_a_current_document_is_replaced(world: World, pid: str, status: str) -> None:
    old = world.seed_document(pid, author=DR)
    world.store.update({**world.store.read("DocumentReference", old, OPEN_SCOPE).json(), "status": status})
    before = documents(world)
    response = world.doctor(DR, INS).post("DocumentReference", replacing(pid, f"DocumentReference/{old}"))
    words = f"DocumentReference/{old} is '{status}': only a current document is replaced"
    refused(response, 422, "business-rule", words, "DocumentReference.relatesTo[0].target")
    assert documents(world) == before


def test_a_feed_replaces_nothing_whatever_the_target(world: World, pid: str) -> None:
    """TCU authors no document (it does not say which professional it acts for): 403, the same for
    a document that exists and one that does not."""
    old = world.seed_document(pid, author=DR)
    feed = world.as_("TCU", patient=INS)
    existing = refused(feed.post("DocumentReference", replacing(pid, f"DocumentReference/{old}")), 403, "forbidden", "")
    absent = refused(feed.post("DocumentReference", replacing(pid, "DocumentReference/nowhere")), 403, "forbidden", "")
    assert existing == absent
    assert status_and_version(world, old) == ("current", 1)


# -------------------------------------------------------------------------- what is not revealed


def _not_found(response: TestResponse, target: str) -> dict[str, Any]:
    """The answer for a target that is not there, with the target's id taken out."""
    first = refused(response, 422, "not-found", "is no document of this patient known here")
    assert first["expression"] == ["DocumentReference.relatesTo[0].target"]
    return {**first, "diagnostics": first["diagnostics"].replace(target, "…")}


def test_a_hidden_document_is_answered_as_an_absent_one(world: World, pid: str) -> None:
    masked = world.seed_document(pid, author=DR, labels=(MASKED_FROM_PROFESSIONALS,))
    colleague = world.doctor(DR_2, INS)
    assert colleague.get(f"DocumentReference/{masked}").status_code == 404  # hidden from them (R11)
    hidden = _not_found(
        colleague.post("DocumentReference", replacing(pid, f"DocumentReference/{masked}", author=DR_2)), masked
    )
    absent = _not_found(
        colleague.post("DocumentReference", replacing(pid, "DocumentReference/nowhere", author=DR_2)), "nowhere"
    )
    assert hidden == absent
    assert status_and_version(world, masked) == ("current", 1)
    # Its author, who sees it, replaces it.
    response = world.doctor(DR, INS).post("DocumentReference", replacing(pid, f"DocumentReference/{masked}"))
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_document_hidden_from_the_patient_is_answered_as_an_absent_one(world: World, pid: str) -> None:
    hidden_doc = world.seed_document(pid, author=DR, labels=(INVISIBLE_TO_PATIENT,))
    patient = world.patient(INS)
    mine = replacing(pid, f"DocumentReference/{hidden_doc}", author=None)
    mine.update(author=[{"reference": f"Patient/{pid}"}], type={"coding": [{"system": TRE_A05, "code": "EXPPAT_1"}]})
    hidden = _not_found(patient.post("DocumentReference", mine), hidden_doc)
    mine["relatesTo"][0]["target"]["reference"] = "DocumentReference/nowhere"
    assert _not_found(patient.post("DocumentReference", mine), "nowhere") == hidden


def test_another_patients_document_is_answered_as_an_absent_one(world: World, pid: str) -> None:
    """Even the caller's own document, when it is another patient's: a document replaces one of
    the same patient (R1)."""
    other = world.seed_patient(OTHER_INS)
    theirs = world.seed_document(other, author=DR)
    doctor = world.doctor(DR, INS)
    assert _not_found(doctor.post("DocumentReference", replacing(pid, f"DocumentReference/{theirs}")), theirs) == (
        _not_found(doctor.post("DocumentReference", replacing(pid, "DocumentReference/nowhere")), "nowhere")
    )
    assert status_and_version(world, theirs) == ("current", 1)


def test_a_document_of_another_server_is_not_replaced_here(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    response = world.doctor(DR, INS).post(
        "DocumentReference", replacing(pid, f"https://elsewhere.example/fhir/DocumentReference/{old}")
    )
    refused(
        response, 422, "not-found", "the target is no document of Patient/", "DocumentReference.relatesTo[0].target"
    )
    assert status_and_version(world, old) == ("current", 1)


# -------------------------------------------------------------------------- other paths


def test_a_document_does_not_replace_itself(world: World, pid: str) -> None:
    doc = world.seed_document(pid, author=DR)
    current = world.doctor(DR, INS).get(f"DocumentReference/{doc}").get_json()
    itself = {**current, "relatesTo": [{"code": "replaces", "target": {"reference": f"DocumentReference/{doc}"}}]}
    response = world.doctor(DR, INS).put(f"DocumentReference/{doc}", itself)
    refused(response, 422, "business-rule", f"DocumentReference/{doc} cannot replace itself")
    assert status_and_version(world, doc) == ("current", 1)


def test_an_update_that_creates_replaces_too(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    response = world.doctor(DR, INS).put(
        "DocumentReference/v2", {**replacing(pid, f"DocumentReference/{old}"), "id": "v2"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_a_simplified_publish_replaces(world: World, pid: str) -> None:
    """ITI-105: the document inline, moved to a Binary, and the old one superseded, all at once."""
    old = world.seed_document(pid, author=DR)
    doc = replacing(pid, f"DocumentReference/{old}")
    doc["content"] = [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"v2").decode()}}]
    response = world.doctor(DR, INS).post("DocumentReference", doc)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert "/Binary/" in response.get_json()["content"][0]["attachment"]["url"]
    assert status_and_version(world, old) == ("superseded", 2)


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": "DocumentReference"}}


def test_a_transaction_entry_replaces(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    response = world.doctor(DR, INS).post("", _transaction(_post(replacing(pid, f"DocumentReference/{old}"))))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_a_transaction_is_refused_whole_and_names_the_entry(world: World, pid: str) -> None:
    old, superseded = world.seed_document(pid, author=DR), world.seed_document(pid, author=DR)
    world.store.update({**world.store.read("DocumentReference", superseded, OPEN_SCOPE).json(), "status": "superseded"})
    before = documents(world)
    bundle = _transaction(
        _post(replacing(pid, f"DocumentReference/{old}")),
        _post(replacing(pid, f"DocumentReference/{superseded}")),
    )
    response = world.doctor(DR, INS).post("", bundle)
    refused(
        response,
        422,
        "business-rule",
        "Bundle.entry[1] (POST DocumentReference)",
        "Bundle.entry[1].resource.relatesTo[0].target",
    )
    assert status_and_version(world, old) == ("current", 1)
    assert documents(world) == before


def test_a_transaction_that_supersedes_the_document_itself_does_it_once(world: World, pid: str) -> None:
    """As IHE MHD's replace example does: the Bundle's own PATCH is the one supersession, and the
    PATCH's version precondition still holds (nothing changed the document before it ran)."""
    old = world.seed_document(pid, author=DR)
    patch = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(b'[{"op": "replace", "path": "/status", "value": "superseded"}]').decode(),
    }
    bundle = _transaction(
        _post(replacing(pid, f"DocumentReference/{old}")),
        {"resource": patch, "request": {"method": "PATCH", "url": f"DocumentReference/{old}", "ifMatch": 'W/"1"'}},
    )
    response = world.doctor(DR, INS).post("", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_two_documents_replacing_the_same_one_supersede_it_once(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    target = f"DocumentReference/{old}"
    response = world.doctor(DR, INS).post(
        "", _transaction(_post(replacing(pid, target)), _post(replacing(pid, target)))
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)


def test_a_batch_entry_replaces_on_its_own(world: World, pid: str) -> None:
    """Batch entries succeed or fail alone: each supersedes with its own write."""
    old = world.seed_document(pid, author=DR)
    bundle = _transaction(
        _post(replacing(pid, f"DocumentReference/{old}")),
        _post(replacing(pid, "DocumentReference/nowhere")),
        kind="batch",
    )
    response = world.doctor(DR, INS).post("", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("422")
    assert status_and_version(world, old) == ("superseded", 2)


# -------------------------------------------------------------------------- the FHIR layer alone


def test_without_access_rules_the_fhir_layer_still_checks_the_target(fhir: Fhir) -> None:
    """An open gatekeeper screens nothing: the target is still a current document of the same
    patient, by reference or identifier, and it is superseded."""
    first = fhir.create({"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": INS}]})["id"]
    second = fhir.create({"resourceType": "Patient"})["id"]
    old = fhir.create(_body(first))["id"]
    by_identifier = {"identifier": {"system": INS_SYSTEM, "value": INS}}
    relation = [{"code": "replaces", "target": {"reference": f"DocumentReference/{old}"}}]
    wrong = fhir.request("POST", "DocumentReference", {**_body(second), "relatesTo": relation})
    refused(wrong, 422, "not-found", f"DocumentReference/{old} is no document of Patient/{second} known here")
    absent = [{"code": "replaces", "target": {"reference": "DocumentReference/nowhere"}}]
    refused(
        fhir.request("POST", "DocumentReference", {**_body(first), "relatesTo": absent}), 422, "not-found", "nowhere"
    )
    new = fhir.create({**_body(first), "subject": by_identifier, "relatesTo": relation})
    assert fhir.request("GET", f"DocumentReference/{old}").get_json()["status"] == "superseded"
    again = fhir.request("POST", "DocumentReference", {**_body(first), "relatesTo": relation})
    refused(again, 422, "business-rule", "'superseded': only a current document is replaced")
    assert new["status"] == "current"


def _body(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "https://docs.example.org/y.pdf"}}],
    }


def test_a_patch_adding_a_replacement_supersedes(world: World, pid: str) -> None:
    """The relation is what counts, however it is written: a PATCH that adds it supersedes too."""
    old = world.seed_document(pid, author=DR)
    new = world.seed_document(pid, author=DR)
    patch = [
        {
            "op": "add",
            "path": "/relatesTo",
            "value": [{"code": "replaces", "target": {"reference": f"DocumentReference/{old}"}}],
        }
    ]
    response = world.doctor(DR, INS).request("PATCH", f"DocumentReference/{new}", patch, headers=JSON_PATCH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_and_version(world, old) == ("superseded", 2)
