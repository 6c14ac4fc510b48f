"""Every HL7 R4 example of a served type survives create and read, in JSON and in XML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_server.fhir.formats.xml import json_to_xml, xml_to_json
from fhir_server.fhir.service import SERVED_TYPES
from tests.document_codes import dmp_codes
from tests.paths import HL7_EXAMPLES

EXAMPLES = [
    path for path in sorted(HL7_EXAMPLES.glob("*.json")) if json.loads(path.read_text())["resourceType"] in SERVED_TYPES
]


def _example(path: Path) -> dict[str, Any]:
    """The example as sent; a DocumentReference with DMP document codes, since the server refuses
    the HL7 example's (LOINC 34108-1 is no CI-SIS type, an IHE connectathon code no DMP class:
    tests/test_document_codes.py pins it)."""
    example: dict[str, Any] = dmp_codes(json.loads(path.read_text()))
    return example


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _meta_rest(resource: dict[str, Any]) -> dict[str, Any]:
    """What the client sent in ``meta`` besides what the server owns (version, time)."""
    meta = dict(resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    return meta


def test_the_examples_cover_every_served_type_that_has_one() -> None:
    types = {json.loads(p.read_text())["resourceType"] for p in EXAMPLES}
    assert {"Patient", "DocumentReference", "Consent", "AuditEvent", "List", "Binary", "Bundle"} <= types
    assert len(EXAMPLES) >= 90


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_json_round_trip(client: FlaskClient, path: Path) -> None:
    example = _example(path)
    rtype, rid = example["resourceType"], example["id"]
    put = client.put(f"/fhir/{rtype}/{rid}", json=example, headers={"Content-Type": "application/fhir+json"})
    assert put.status_code == 201, put.get_data(as_text=True)
    got = client.get(f"/fhir/{rtype}/{rid}", headers={"Accept": "application/fhir+json"})
    assert got.status_code == 200
    back = got.get_json()
    assert _without_meta(back) == _without_meta(example)
    assert _meta_rest(back) == _meta_rest(example)
    assert back["meta"]["versionId"] == "1"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_xml_round_trip(client: FlaskClient, path: Path) -> None:
    example = _example(path)
    rtype, rid = example["resourceType"], example["id"]
    put = client.put(
        f"/fhir/{rtype}/{rid}",
        data=json_to_xml(example),
        headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"},
    )
    assert put.status_code == 201, put.get_data(as_text=True)
    assert put.headers["Content-Type"].startswith("application/fhir+xml")
    got = client.get(f"/fhir/{rtype}/{rid}", headers={"Accept": "application/fhir+xml"})
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("application/fhir+xml")
    back = xml_to_json(got.data)
    assert _without_meta(back) == _without_meta(example)
    assert _meta_rest(back) == _meta_rest(example)
