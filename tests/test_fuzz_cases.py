"""The reproducers of issue 10's fuzzing, each a test: a 4xx with an OperationOutcome naming the
problem (never a 500), and exactly one AuditEvent when the request is about a record (R17: every
request about a record, allowed or refused). Real server, real store, real tokens.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import ACCESS, IDNATPS_SYSTEM
from fhir_server.fhir.formats.xml import xml_to_json
from fhir_server.fhir.inbound import MAX_DEPTH
from fhir_server.fhir.search.parser import MAX_VALUES
from tests.dmp import INS_SYSTEM, As, World
from tests.test_dmp_rules import audit_events
from tests.test_mhd_provide import DR, INS, submission

JSON = "application/fhir+json"


@pytest.fixture
def pid(world: World) -> str:
    patient = world.seed_patient(INS)
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
    return patient


@pytest.fixture
def patient(world: World, pid: str) -> As:
    return world.patient(INS)


def refused(world: World, response: TestResponse, status: int, words: str, before: int) -> dict[str, Any]:
    """``response`` is ``status`` with an OperationOutcome whose diagnostics hold ``words``, and the
    request left exactly one AuditEvent (failed: outcome 4) in the patient's trail."""
    assert response.status_code == status, response.get_data(as_text=True)
    outcome = response.get_json() if response.is_json else xml_to_json(response.data)
    assert outcome["resourceType"] == "OperationOutcome", outcome
    diagnostics = " ".join(issue.get("diagnostics", "") for issue in outcome["issue"])
    assert words in diagnostics, diagnostics
    events = audit_events(world, INS)
    assert len(events) == before + 1
    assert events[-1]["outcome"] == "4"
    return outcome


def raw(client: As, method: str, path: str, body: str | bytes, content_type: str = JSON) -> TestResponse:
    data = body.encode() if isinstance(body, str) else body
    headers = {**client.headers, "Content-Type": content_type}
    return client.client.open(f"/fhir/{path}", method=method, data=data, headers=headers)


def nested(depth: int) -> str:
    """A JSON extension nested ``depth`` levels deep (written as text: no JSON library writes it)."""
    return '{"url":"http://x","extension":[' * depth + '{"url":"http://x","valueString":"x"}' + "]}" * depth


def test_a_version_beyond_any_integer_is_not_found(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    response = patient.get(f"Patient/{pid}/_history/99999999999999999999")
    refused(world, response, 404, "is not known", before)


@pytest.mark.parametrize("version", ["²", "-1", "1e3", "٣"])
def test_a_version_that_is_no_ascii_number_is_not_found(world: World, pid: str, patient: As, version: str) -> None:
    before = len(audit_events(world, INS))
    refused(world, patient.get(f"Patient/{pid}/_history/{version}"), 404, "has no version", before)


def test_a_json_patch_copying_the_whole_resource_is_refused(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    patch = '[{"op":"copy","from":"","path":"/active"}]'
    response = raw(patient, "PATCH", f"Patient/{pid}", patch, "application/json-patch+json")
    refused(world, response, 422, "cannot copy the whole resource", before)


def test_a_transaction_entry_whose_method_is_a_list_is_refused(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": ["GET"], "url": "x"}}]}
    refused(world, patient.post("", bundle), 400, "request.method", before)


@pytest.mark.parametrize("depth", [500, 1000])
@pytest.mark.parametrize("where", ["transaction", "PUT", "$generate-metadata"])
def test_deeply_nested_json_is_refused(world: World, pid: str, patient: As, depth: int, where: str) -> None:
    deep = nested(depth)
    if where == "transaction":
        resource = f'{{"resourceType":"Patient","extension":[{deep}]}}'
        entry = f'{{"request":{{"method":"POST","url":"Patient"}},"resource":{resource}}}'
        request = ("POST", "", f'{{"resourceType":"Bundle","type":"transaction","entry":[{entry}]}}')
    elif where == "PUT":
        request = ("PUT", f"Patient/{pid}", f'{{"resourceType":"Patient","id":"{pid}","extension":[{deep}]}}')
    else:
        binary = f'{{"resourceType":"Binary","contentType":"text/xml","data":"PHg+","extension":[{deep}]}}'
        parameters = f'{{"resourceType":"Parameters","parameter":[{{"name":"document","resource":{binary}}}]}}'
        request = ("POST", "DocumentReference/$generate-metadata", parameters)
    before = len(audit_events(world, INS))
    outcome = refused(world, raw(patient, *request), 400, "", before)
    # Deeper than the JSON parser itself goes (1024 levels) the body is not even JSON.
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert f"nested deeper than {MAX_DEPTH} levels" in diagnostics or "depth limit exceeded" in diagnostics


def test_a_submission_set_listing_a_string_is_refused(world: World, pid: str) -> None:
    doctor = world.doctor(DR, INS)
    bundle = submission(pid)
    bundle["entry"][0]["resource"]["entry"] = ["x"]
    before = len(audit_events(world, INS))
    refused(world, doctor.post("", bundle), 400, "an item without a reference", before)


def test_a_nul_in_the_url_is_refused_in_xml_and_the_trail_stays_readable(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    response = patient.get("Patient/a%00b?_format=xml")
    refused(world, response, 400, "control character U+0000", before)
    assert response.headers["Content-Type"].startswith("application/fhir+xml")
    trail = patient.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS}&_format=xml&_count=100")
    assert trail.status_code == 200, trail.get_data(as_text=True)
    assert "\ufffd" in trail.get_data(as_text=True)  # the URL as asked, the NUL replaced


@pytest.mark.parametrize("character", ["\u0001", "\u0000", "\u001f", "\u000b"])
def test_a_control_character_in_a_string_is_refused_on_input(
    world: World, pid: str, patient: As, character: str
) -> None:
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"family": f"Mar{character}tin"}],
    }
    before = len(audit_events(world, INS))
    response = patient.put(f"Patient/{pid}", resource)
    code = f"U+{ord(character):04X}"
    outcome = refused(world, response, 400, f"the control character {code}", before)
    assert outcome["issue"][0]["expression"] == ["Patient.name[0].family"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": resource, "request": {"method": "PUT", "url": f"Patient/{pid}"}}],
    }
    refused(world, patient.post("", bundle), 400, code, before + 1)
    assert "\\u00" not in patient.get(f"Patient/{pid}?_format=xml").get_data(as_text=True)


def test_tab_carriage_return_and_line_feed_are_allowed(world: World, pid: str, patient: As) -> None:
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"family": "Martin", "text": "Jean\tMartin\r\n"}],
    }
    assert patient.put(f"Patient/{pid}", resource).status_code == 200
    assert patient.get(f"Patient/{pid}?_format=xml").status_code == 200


def test_binary_data_with_a_nul_is_refused(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "\u0000"}
    outcome = refused(world, patient.post("Binary", binary), 400, "U+0000", before)
    assert outcome["issue"][0]["expression"] == ["Binary.data"]


@pytest.mark.parametrize("data", ["!!!", "QUJD=", "QQ", "QUJD QUJ"])
def test_binary_data_that_is_no_base64_is_refused(world: World, pid: str, patient: As, data: str) -> None:
    before = len(audit_events(world, INS))
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": data}
    outcome = refused(world, patient.post("Binary", binary), 422, "not valid base64", before)
    assert outcome["issue"][0]["expression"] == ["Binary.data"]


def test_base64_with_whitespace_is_valid(world: World, pid: str, patient: As) -> None:
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD\nREVG"}
    created = patient.post("Binary", binary)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert base64.b64decode(created.get_json()["data"]) == b"ABCDEF"


def test_the_trail_of_a_thousand_events_with_its_provenance(world: World, pid: str, patient: As) -> None:
    """``_revinclude`` of a page of 1 000 ("Expression tree is too large" before the compiler
    balanced its disjunctions and sent a page's ids as one list)."""
    assert patient.get(f"Patient/{pid}").status_code == 200
    event = audit_events(world, INS)[-1]
    with world.store.transaction():
        for _ in range(1000):
            world.store.create({**event, "id": str(uuid.uuid4())})
    provenance = {
        "resourceType": "Provenance",
        "id": "prov-1",
        "target": [{"reference": f"AuditEvent/{event['id']}"}],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"reference": f"Patient/{pid}"}}],
    }
    world.store.create(provenance)
    query = f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS}&_count=1000&_revinclude=Provenance:target"
    response = patient.get(query)
    assert response.status_code == 200, response.get_data(as_text=True)
    entries = response.get_json()["entry"]
    assert sum(e["search"]["mode"] == "match" for e in entries) == 1000


def test_a_search_for_a_thousand_ids_works_and_more_values_are_refused(world: World, pid: str) -> None:
    """A thousand values of one token are one ``IN`` for the store (not a thousand sub-queries);
    past :data:`MAX_VALUES` a search is refused before it reaches the store."""
    doctor = world.doctor(DR, INS)
    ids = [f"{i}" for i in range(MAX_VALUES - 1)] + [pid]
    found = world.client.post("/fhir/Patient/_search", data={"_id": ",".join(ids)}, headers=doctor.headers)
    assert found.status_code == 200, found.get_data(as_text=True)
    assert [e["resource"]["id"] for e in found.get_json()["entry"]] == [pid]
    before = len(audit_events(world, INS))
    response = world.client.post("/fhir/Patient/_search", data={"_id": ",".join(["1", *ids])}, headers=doctor.headers)
    refused(world, response, 400, f"at most {MAX_VALUES} values", before)


def test_without_a_token_a_malformed_body_is_401(world: World, pid: str) -> None:
    before = len(audit_events(world, INS))
    response = world.client.post("/fhir/Patient", data=b"{", headers={"Content-Type": JSON})
    assert response.status_code == 401
    assert response.get_json()["issue"][0]["code"] == "login"
    assert len(audit_events(world, INS)) == before  # nobody identified: about no record


def test_with_a_token_a_malformed_body_is_in_the_trail(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    refused(world, raw(patient, "POST", "Patient", "{"), 400, "not valid JSON", before)


def test_an_invalid_id_is_in_the_trail(world: World, pid: str, patient: As) -> None:
    before = len(audit_events(world, INS))
    refused(world, patient.get("Patient/a$b"), 400, "not a valid resource id", before)


def test_a_bad_accept_is_refused_before_the_search_runs(world: World, pid: str, patient: As) -> None:
    sources = "&".join(f"source=http://x/{i}" for i in range(200))
    before = len(audit_events(world, INS))
    response = patient.get(f"DocumentReference?patient={pid}&{sources}", headers={"Accept": "text/plain"})
    refused(world, response, 406, "application/fhir+json", before)
    # With an Accept it can answer, the 200 parameters are over the bound.
    response = patient.get(f"DocumentReference?patient={pid}&{sources}")
    outcome = refused(world, response, 400, "at most 100 parameters", before + 1)
    assert outcome["issue"][0]["code"] == "too-costly"


def test_a_failure_of_the_server_is_in_the_trail(
    world: World, pid: str, patient: As, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 still leaves its AuditEvent (outcome 8). No request is known to fail any more, so the
    fault is injected: the read interaction is made to raise, as a bug in it would."""
    from fhir_server.fhir.interactions import instance

    def broken(*args: Any) -> None:
        raise RuntimeError("an injected fault")

    monkeypatch.setattr(instance, "read", broken)
    before = len(audit_events(world, INS))
    response = patient.get(f"Patient/{pid}")
    assert response.status_code == 500
    assert response.get_json()["issue"][0]["code"] == "exception"
    events = audit_events(world, INS)
    assert len(events) == before + 1 and events[-1]["outcome"] == "8"


def test_binary_raw_content_is_untouched_by_the_character_rules(world: World, pid: str, patient: As) -> None:
    """Raw bytes sent to Binary are the document, not FHIR strings: a NUL in them is fine."""
    created = raw(patient, "POST", "Binary", b"\x00\x01binary", "application/octet-stream")
    assert created.status_code == 201, created.get_data(as_text=True)
    assert base64.b64decode(created.get_json()["data"]) == b"\x00\x01binary"


def test_a_json_patch_carried_in_a_binary_entry_is_checked_too(world: World, pid: str, patient: As) -> None:
    """The patch of a transaction's PATCH entry travels base64-encoded: the request's own checks
    never saw it, so it is checked once decoded (characters, nesting)."""
    deep = '{"url":"http://x","extension":[' * 300 + "]}" * 300
    patches = {
        "U+0001": '[{"op":"add","path":"/name/0/family","value":"a\\u0001b"}]',
        "nested deeper": f'[{{"op":"add","path":"/extension","value":[{deep}]}}]',
    }
    for words, patch in patches.items():
        binary = {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(patch.encode()).decode(),
        }
        entry = {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
        before = len(audit_events(world, INS))
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        refused(world, patient.post("", bundle), 400, words, before)
