"""End to end: the real ``dmp-server serve`` process, spoken to over real HTTP with real tokens."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from fhir_server.fhir.formats.xml import xml_to_json
from tests.conftest import LiveServer

INS = "299017512345649"
IDNATPS = "810002673899"


def _call(
    method: str, url: str, body: Any = None, *, token: str | None = None, accept: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/fhir+json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_metadata_is_public(live_server: LiveServer) -> None:
    status, headers, body = _call("GET", f"{live_server.base_url}/metadata")
    assert status == 200
    assert headers["Content-Type"].startswith("application/fhir+json")
    assert json.loads(body)["implementation"]["url"] == live_server.base_url


def test_no_token_is_401(live_server: LiveServer) -> None:
    status, headers, body = _call("GET", f"{live_server.base_url}/Patient")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body)["resourceType"] == "OperationOutcome"


def test_a_dmp_lifecycle_over_http(live_server: LiveServer) -> None:
    base = live_server.base_url
    doctor = live_server.token("HCP", idnatps=IDNATPS, profession="10", person_id=INS)
    patient = live_server.token("PAT", person_id=INS, sub=INS, scope="patient/*.cruds")
    record = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
        "name": [{"family": "Lefèvre", "given": ["Élodie"]}],
        "birthDate": "1975-02-03",
    }
    status, headers, body = _call("POST", f"{base}/Patient", record, token=doctor)
    assert status == 201, body
    pid = json.loads(body)["id"]
    assert headers["Location"] == f"{base}/Patient/{pid}/_history/1"

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0f0e0d0c-0000-4000-8000-000000000002",
                "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
                "request": {"method": "POST", "url": "Binary"},
            },
            {
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "author": [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": IDNATPS}}],
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "url": "urn:uuid:0f0e0d0c-0000-4000-8000-000000000002",
                            }
                        }
                    ],
                },
                "request": {"method": "POST", "url": "DocumentReference"},
            },
        ],
    }
    status, _, body = _call("POST", f"{base}/", bundle, token=doctor)
    assert status == 200, body

    # The creating doctor was granted access (R16); the patient sees their record (R7).
    for token in (doctor, patient):
        status, _, body = _call(
            "GET", f"{base}/DocumentReference?patient={pid}&_include=DocumentReference:subject", token=token
        )
        assert status == 200, body
        kinds = sorted(e["resource"]["resourceType"] for e in json.loads(body)["entry"])
        assert kinds == ["DocumentReference", "Patient"]

    status, headers, body = _call("GET", f"{base}/Patient/{pid}", token=patient, accept="application/fhir+xml")
    assert status == 200 and headers["ETag"] == 'W/"1"'
    assert xml_to_json(body)["name"][0]["family"] == "Lefèvre"

    # Another professional, without a grant, is refused; the trail shows it to the patient (R17).
    stranger = live_server.token("HCP", idnatps="810000000099", profession="10", person_id=INS)
    assert _call("GET", f"{base}/DocumentReference?patient={pid}", token=stranger)[0] == 403
    status, _, body = _call(
        "GET", f"{base}/AuditEvent?patient.identifier=urn:oid:1.2.250.1.213.1.4.8|{INS}", token=patient
    )
    assert status == 200
    outcomes = sorted(e["resource"]["outcome"] for e in json.loads(body)["entry"])
    assert "4" in outcomes and "0" in outcomes

    status, _, body = _call(
        "POST", f"{base}/Patient", {"resourceType": "Patient", "birthDate": "yesterday"}, token=doctor
    )
    assert status == 422 and json.loads(body)["resourceType"] == "OperationOutcome"
