"""The published CapabilityStatement is the one the server generates from what it supports."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from fhir_server.fhir.service import FhirService
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


def test_local_operation_definitions_match_the_operations_served(client: FlaskClient, service: FhirService) -> None:
    """``ig/OperationDefinition`` describes the operations the server implements, where it
    implements them (type or instance level), with the input parameters their code accepts."""
    from fhir_server.dmp.export.operation import PART

    inputs = {"dmp-export": {PART}}
    statement = client.get("/fhir/metadata").get_json()
    advertised = {
        (resource["type"], op["name"], op["definition"])
        for resource in statement["rest"][0]["resource"]
        for op in resource.get("operation", [])
    }
    definitions = sorted((ROOT / "ig" / "OperationDefinition").glob("*.json"))
    assert definitions
    for path in definitions:
        definition = json.loads(path.read_text(encoding="utf-8"))
        served = [op for op in service.extensions.operations if op.definition == definition["url"]]
        assert len(served) == 1, path.name
        operation = served[0]
        assert definition["code"] == operation.name
        assert definition["resource"] == [operation.resource_type]
        assert (definition["type"], definition["instance"]) == (
            operation.level == "type",
            operation.level == "instance",
        )
        assert definition["system"] is False
        assert {p["name"] for p in definition["parameter"] if p["use"] == "in"} == inputs[operation.name]
        assert (operation.resource_type, operation.name, definition["url"]) in advertised
