"""The published CapabilityStatement is the one the server generates from what it supports."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from fhir_server.service import FhirService
from tests.paths import ROOT

PUBLISHED = ROOT / "capability" / "CapabilityStatement-dmp-server.json"


def test_published_copy_matches_the_generated_statement(client: FlaskClient) -> None:
    served = client.get("/fhir/metadata").get_json()
    published = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    assert served == published, "regenerate capability/ from GET /metadata (see README)"


def test_every_advertised_search_parameter_is_usable(client: FlaskClient, service: FhirService) -> None:
    """Advertising a parameter means a search with it is accepted under strict handling."""
    statement = client.get("/fhir/metadata").get_json()
    samples = {
        "string": "x",
        "token": "x",
        "date": "2024",
        "reference": "Patient/1",
        "uri": "http://x",
        "number": "1",
        "quantity": "1",
    }
    for resource in statement["rest"][0]["resource"]:
        assert resource["searchParam"], resource["type"]
        for param in resource["searchParam"]:
            value = samples[param["type"]]
            if param["type"] == "reference":
                target = service.registry.get(resource["type"], param["name"])
                assert target is not None
                value = f"{target.targets[0]}/1" if target.targets and target.targets[0] != "Resource" else "x/1"
            response = client.get(
                f"/fhir/{resource['type']}?{param['name']}={value}", headers={"Prefer": "handling=strict"}
            )
            assert response.status_code == 200, (resource["type"], param["name"], response.get_data(as_text=True))


def test_every_advertised_interaction_is_routed(client: FlaskClient) -> None:
    statement = client.get("/fhir/metadata").get_json()
    for resource in statement["rest"][0]["resource"]:
        rtype = resource["type"]
        assert client.get(f"/fhir/{rtype}").status_code == 200
        assert client.get(f"/fhir/{rtype}/_history").status_code == 200
        assert client.get(f"/fhir/{rtype}/none").status_code == 404
