"""End to end: the real ``dmp-server serve`` process, spoken to over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from fhir_server.formats.xml import xml_to_json


def _call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/fhir+json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_metadata(live_server: str) -> None:
    status, headers, body = _call("GET", f"{live_server}/metadata")
    assert status == 200
    assert headers["Content-Type"].startswith("application/fhir+json")
    assert json.loads(body)["implementation"]["url"] == live_server


def test_create_read_search_delete_over_http(live_server: str) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2990175123456"}],
        "name": [{"family": "Lefèvre", "given": ["Élodie"]}],
    }
    status, headers, body = _call("POST", f"{live_server}/Patient", patient)
    assert status == 201, body
    pid = json.loads(body)["id"]
    assert headers["Location"] == f"{live_server}/Patient/{pid}/_history/1"

    status, headers, body = _call("GET", f"{live_server}/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    assert status == 200 and headers["ETag"] == 'W/"1"'
    assert xml_to_json(body)["name"][0]["family"] == "Lefèvre"

    status, _, body = _call("GET", f"{live_server}/Patient?given=elodie")
    assert status == 200
    bundle = json.loads(body)
    assert bundle["total"] == 1 and bundle["entry"][0]["fullUrl"] == f"{live_server}/Patient/{pid}"

    assert _call("DELETE", f"{live_server}/Patient/{pid}")[0] == 204
    assert _call("GET", f"{live_server}/Patient/{pid}")[0] == 410


def test_transaction_and_errors_over_http(live_server: str) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0f0e0d0c-0000-4000-8000-000000000001",
                "resource": {"resourceType": "Patient", "name": [{"family": "E2E"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "subject": {"reference": "urn:uuid:0f0e0d0c-0000-4000-8000-000000000001"},
                    "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}],
                },
                "request": {"method": "POST", "url": "DocumentReference"},
            },
        ],
    }
    status, _, body = _call("POST", f"{live_server}/", bundle)
    assert status == 200, body
    patient_id = json.loads(body)["entry"][0]["response"]["location"].split("/")[-3]
    status, _, body = _call(
        "GET", f"{live_server}/DocumentReference?patient={patient_id}&_include=DocumentReference:subject"
    )
    assert status == 200
    kinds = sorted(e["resource"]["resourceType"] for e in json.loads(body)["entry"])
    assert kinds == ["DocumentReference", "Patient"]

    status, _, body = _call("GET", f"{live_server}/Nothing/1")
    assert status == 404 and json.loads(body)["resourceType"] == "OperationOutcome"
    status, _, body = _call("POST", f"{live_server}/Patient", {"resourceType": "Patient", "birthDate": "yesterday"})
    assert status == 422 and json.loads(body)["resourceType"] == "OperationOutcome"
