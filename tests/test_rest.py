"""The RESTful interactions of FHIR R4 http.html: statuses, headers and OperationOutcomes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_server.app import create_app, create_service
from fhir_server.runtime.config import Config
from tests.conftest import Fhir
from tests.support import open_gatekeeper

JSON = {"Content-Type": "application/fhir+json"}
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def patient(family: str = "Martin", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Marie"]}], **extra}


def _outcome(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


# -- create / read / vread ---------------------------------------------------------------------


def test_create_assigns_id_and_version_and_answers_location_etag(fhir: Fhir) -> None:
    response = fhir.request("POST", "Patient", patient(id="client-chosen"))
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] != "client-chosen"  # the server assigns ids on create
    assert body["meta"]["versionId"] == "1"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"http://127.0.0.1:8080/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_read_and_vread(fhir: Fhir) -> None:
    created = fhir.create(patient())
    pid = created["id"]
    updated = dict(created, active=True)
    assert fhir.request("PUT", f"Patient/{pid}", updated).status_code == 200
    current = fhir.request("GET", f"Patient/{pid}")
    assert current.status_code == 200 and current.get_json()["active"] is True
    assert current.headers["ETag"] == 'W/"2"'
    first = fhir.request("GET", f"Patient/{pid}/_history/1")
    assert first.status_code == 200 and "active" not in first.get_json()
    assert fhir.request("GET", f"Patient/{pid}/_history/9").status_code == 404
    assert fhir.request("GET", f"Patient/{pid}/_history/x").status_code == 404


def test_read_with_summary_and_elements(fhir: Fhir) -> None:
    pid = fhir.create(
        patient(
            gender="female", text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">M</div>'}
        )
    )["id"]
    summary = fhir.request("GET", f"Patient/{pid}?_summary=true").get_json()
    assert "text" not in summary and summary["gender"] == "female"
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in summary[
        "meta"
    ]["tag"]
    elements = fhir.request("GET", f"Patient/{pid}?_elements=gender").get_json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    data = fhir.request("GET", f"Patient/{pid}?_summary=data").get_json()
    assert "text" not in data and data["name"][0]["family"] == "Martin"
    assert fhir.request("GET", f"Patient/{pid}?_summary=bogus").status_code == 400


def test_read_unknown_is_404_with_outcome(fhir: Fhir) -> None:
    response = fhir.request("GET", "Patient/nope")
    assert response.status_code == 404
    assert _outcome(response)["issue"][0]["code"] == "not-found"


def test_if_none_match_gives_304(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    response = fhir.request("GET", f"Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_prefer_return(fhir: Fhir) -> None:
    minimal = fhir.request("POST", "Patient", patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.data == b"" and "Location" in minimal.headers
    outcome = fhir.request("POST", "Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201 and _outcome(outcome)["issue"][0]["severity"] == "information"


def test_conditional_create(fhir: Fhir) -> None:
    ident = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "180017512345660"}
    headers = {"If-None-Exist": "identifier=urn:oid:1.2.250.1.213.1.4.8|180017512345660"}
    first = fhir.request("POST", "Patient", patient(identifier=[ident]), headers=headers)
    assert first.status_code == 201
    again = fhir.request("POST", "Patient", patient(identifier=[ident]), headers=headers)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    fhir.create(patient(identifier=[ident]))  # now two match
    assert fhir.request("POST", "Patient", patient(), headers=headers).status_code == 412


# -- update ------------------------------------------------------------------------------------


def test_update_as_create_with_client_id_then_update(fhir: Fhir) -> None:
    created = fhir.request("PUT", "Patient/p-1", patient(id="p-1"))
    assert created.status_code == 201
    assert created.headers["Location"].endswith("/Patient/p-1/_history/1")
    updated = fhir.request("PUT", "Patient/p-1", patient("Durand", id="p-1"))
    assert updated.status_code == 200 and updated.get_json()["meta"]["versionId"] == "2"


def test_update_id_rules(fhir: Fhir) -> None:
    assert fhir.request("PUT", "Patient/p-2", patient()).status_code == 400  # no id in body
    mismatch = fhir.request("PUT", "Patient/p-2", patient(id="other"))
    assert mismatch.status_code == 400 and "does not match" in _outcome(mismatch)["issue"][0]["diagnostics"]
    assert fhir.request("PUT", "Patient/bad$id", patient(id="bad$id")).status_code == 400


def test_if_match(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    stale = fhir.request("PUT", f"Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    fresh = fhir.request("PUT", f"Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    garbage = fhir.request("PUT", f"Patient/{pid}", patient(id=pid), headers={"If-Match": "nonsense"})
    assert garbage.status_code == 400
    assert (
        fhir.request("PUT", "Patient/new-one", patient(id="new-one"), headers={"If-Match": 'W/"1"'}).status_code == 412
    )


def test_conditional_update(fhir: Fhir) -> None:
    ident = [{"system": "urn:x", "value": "42"}]
    created = fhir.request("PUT", "Patient?identifier=urn:x|42", patient(identifier=ident))
    assert created.status_code == 201
    pid = created.get_json()["id"]
    updated = fhir.request("PUT", "Patient?identifier=urn:x|42", patient("Durand", identifier=ident))
    assert updated.status_code == 200 and updated.get_json()["id"] == pid
    fhir.create(patient(identifier=ident))
    assert fhir.request("PUT", "Patient?identifier=urn:x|42", patient(identifier=ident)).status_code == 412
    assert fhir.request("PUT", "Patient", patient()).status_code == 400  # no criteria


# -- patch -------------------------------------------------------------------------------------


def test_json_patch(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    ops = [
        {"op": "replace", "path": "/name/0/family", "value": "Durand"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = fhir.client.patch(
        f"/fhir/Patient/{pid}", data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["name"][0]["family"] == "Durand" and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    failing = [{"op": "test", "path": "/active", "value": False}]
    response = fhir.client.patch(
        f"/fhir/Patient/{pid}", data=json.dumps(failing), headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 422
    invalid = [{"op": "add", "path": "/gender", "value": "bogus"}]
    response = fhir.client.patch(
        f"/fhir/Patient/{pid}", data=json.dumps(invalid), headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 422  # the patched resource is validated
    assert fhir.request("GET", f"Patient/{pid}").get_json()["meta"]["versionId"] == "2"


def test_fhirpath_patch(fhir: Fhir) -> None:
    pid = fhir.create(patient(active=True))["id"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.active"},
                    {"name": "value", "valueBoolean": False},
                ],
            },
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "birthDate"},
                    {"name": "value", "valueDate": "1970-03-30"},
                ],
            },
        ],
    }
    response = fhir.request("PATCH", f"Patient/{pid}", params)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["active"] is False and body["birthDate"] == "1970-03-30"


def test_patch_cannot_change_id(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    ops = [{"op": "replace", "path": "/id", "value": "other"}]
    response = fhir.client.patch(
        f"/fhir/Patient/{pid}", data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 422


# -- delete ------------------------------------------------------------------------------------


def test_delete_then_read_is_gone_and_history_keeps_it(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    deleted = fhir.request("DELETE", f"Patient/{pid}")
    assert deleted.status_code == 204
    assert fhir.request("GET", f"Patient/{pid}").status_code == 410
    assert fhir.request("DELETE", f"Patient/{pid}").status_code == 204  # idempotent
    history = fhir.search(f"Patient/{pid}/_history")
    assert history["total"] == 2
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert fhir.ids("Patient") == set()
    recreated = fhir.request("PUT", f"Patient/{pid}", patient(id=pid))
    assert recreated.status_code == 200 and recreated.get_json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_404(fhir: Fhir) -> None:
    assert fhir.request("DELETE", "Patient/never").status_code == 404


def test_conditional_delete(fhir: Fhir) -> None:
    ident = [{"system": "urn:x", "value": "7"}]
    pid = fhir.create(patient(identifier=ident))["id"]
    assert fhir.request("DELETE", "Patient?identifier=urn:x|7").status_code == 204
    assert fhir.request("GET", f"Patient/{pid}").status_code == 410
    fhir.create(patient(identifier=ident))
    fhir.create(patient(identifier=ident))
    assert fhir.request("DELETE", "Patient?identifier=urn:x|7").status_code == 412


# -- history -----------------------------------------------------------------------------------


def test_type_and_system_history_with_since_and_paging(fhir: Fhir) -> None:
    for n in range(5):
        fhir.create(patient(f"P{n}"))
    fhir.create({"resourceType": "Organization", "name": "CHU"})
    type_history = fhir.search("Patient/_history?_count=2")
    assert type_history["type"] == "history" and type_history["total"] == 5
    assert len(type_history["entry"]) == 2
    seen = [e["resource"]["id"] for e in type_history["entry"]]
    link = {link["relation"]: link["url"] for link in type_history["link"]}
    while "next" in link:
        page = fhir.client.get(link["next"].replace("http://127.0.0.1:8080", ""))
        assert page.status_code == 200
        body = page.get_json()
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        link = {lk["relation"]: lk["url"] for lk in body["link"]}
    assert len(seen) == 5 == len(set(seen))
    assert fhir.search("_history")["total"] == 6
    assert fhir.search("_history?_since=2999-01-01")["total"] == 0
    assert fhir.request("GET", "_history?_since=yesterday").status_code == 400


# -- errors and formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "Unknown/1", 404),
        ("GET", "Patient/1/_history/1/extra", 404),
        ("POST", "Patient/1", 405),
        ("DELETE", "metadata", 405),
        ("PUT", "", 405),
    ],
)
def test_routing_errors_are_operation_outcomes(fhir: Fhir, method: str, path: str, status: int) -> None:
    response = fhir.request(method, path)
    assert response.status_code == status
    _outcome(response)


def test_unparsable_bodies_are_400(client: FlaskClient) -> None:
    bad_json = client.post("/fhir/Patient", data=b"{not json", headers=JSON)
    assert bad_json.status_code == 400 and "JSON" in _outcome(bad_json)["issue"][0]["diagnostics"]
    bad_xml = client.post("/fhir/Patient", data=b"<Patient", headers={"Content-Type": "application/fhir+xml"})
    assert bad_xml.status_code == 400
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="&e;"/></Patient>'
    )
    refused = client.post("/fhir/Patient", data=xxe, headers={"Content-Type": "application/fhir+xml"})
    assert refused.status_code == 400 and "root:" not in refused.get_data(as_text=True)


def test_unsupported_media_type_is_415(client: FlaskClient) -> None:
    response = client.post("/fhir/Patient", data=b"name=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_invalid_resource_is_422_and_nothing_stored(fhir: Fhir) -> None:
    response = fhir.request("POST", "Patient", {"resourceType": "Patient", "gender": "sometimes"})
    assert response.status_code == 422
    _outcome(response)
    assert fhir.search("Patient")["total"] == 0


def test_type_mismatch_is_400(fhir: Fhir) -> None:
    response = fhir.request("POST", "Patient", {"resourceType": "Organization", "name": "x"})
    assert response.status_code == 400


def test_body_over_the_limit_is_413(tmp_path: Any) -> None:
    """(Once the caller is known: credentials are checked before the body is read.)"""
    service = create_service(Config(data_dir=tmp_path / "d", max_body=1000), gatekeeper=open_gatekeeper)
    app = create_app(service=service)
    response = app.test_client().post("/fhir/Patient", data=b"{" + b" " * 2000 + b"}", headers=JSON)
    assert response.status_code == 413
    assert _outcome(response)["issue"][0]["code"] == "too-costly"


def test_format_negotiation(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    as_xml = fhir.request("GET", f"Patient/{pid}?_format=xml")
    assert as_xml.headers["Content-Type"].startswith("application/fhir+xml")
    assert as_xml.data.startswith(b"<?xml")
    by_accept = fhir.request("GET", f"Patient/{pid}", headers={"Accept": "application/fhir+xml;q=0.9, text/html"})
    assert by_accept.headers["Content-Type"].startswith("application/fhir+xml")
    assert fhir.request("GET", f"Patient/{pid}?_format=csv").status_code == 406
    assert fhir.request("GET", f"Patient/{pid}", headers={"Accept": "text/csv"}).status_code == 406
    pretty = fhir.request("GET", f"Patient/{pid}?_pretty=true")
    assert b"\n  " in pretty.data


def test_binary_raw_content(client: FlaskClient) -> None:
    pdf = b"%PDF-1.4 fake"
    created = client.post("/fhir/Binary", data=pdf, headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201
    bid = created.get_json()["id"]
    raw = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/pdf"})
    assert raw.status_code == 200 and raw.data == pdf and raw.headers["Content-Type"] == "application/pdf"
    as_fhir = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/fhir+json"})
    assert as_fhir.get_json()["contentType"] == "application/pdf"
    for accept in ("*/*", "application/octet-stream", "application/*", "application/fhir+json;q=0.5, */*"):
        assert client.get(f"/fhir/Binary/{bid}", headers={"Accept": accept}).data == pdf, accept
    assert client.get(f"/fhir/Binary/{bid}").get_json()["resourceType"] == "Binary"  # no Accept: FHIR
    assert client.get(f"/fhir/Binary/{bid}?_format=xml", headers={"Accept": "*/*"}).data.startswith(b"<?xml")
    refused = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "image/png"})
    assert refused.status_code == 406 and refused.get_json()["resourceType"] == "OperationOutcome"


def test_binary_in_its_own_xml_type_is_not_fhir_xml(client: FlaskClient) -> None:
    """A CDA is ``text/xml``, a type FHIR also answers to: asked for by its own type, it is the
    content; ``application/fhir+xml`` still gives the Binary resource."""
    cda = b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>"
    binary = {"resourceType": "Binary", "contentType": "text/xml", "data": base64.b64encode(cda).decode()}
    bid = client.post("/fhir/Binary", json=binary, headers={"Content-Type": "application/fhir+json"}).get_json()["id"]
    raw = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "text/xml"})
    assert raw.data == cda and raw.mimetype == "text/xml"
    as_fhir = client.get(f"/fhir/Binary/{bid}", headers={"Accept": "application/fhir+xml"})
    assert as_fhir.mimetype == "application/fhir+xml" and b"<Binary" in as_fhir.data


def test_capability_statement_is_served(client: FlaskClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    body = response.get_json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in body["rest"][0]["resource"]}
    assert {"Patient", "DocumentReference", "Consent", "AuditEvent", "List", "Binary"} <= types
