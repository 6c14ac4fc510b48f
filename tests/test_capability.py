"""The published CapabilityStatement is the one the server generates from what it supports."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from fhir_server.fhir.declarations import TYPE_INTERACTIONS
from fhir_server.fhir.profiles import load_profiles
from fhir_server.fhir.service import SERVED_TYPES, FhirService
from tests.conftest import Fhir
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
        "composite": "x$Patient/1",
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

    inputs = {"dmp-export": {PART}, "validate": {"resource", "mode", "profile"}}
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
            "type" in operation.levels,
            "instance" in operation.levels,
        )
        assert definition["system"] is False
        assert {p["name"] for p in definition["parameter"] if p["use"] == "in"} == inputs[operation.name]
        types = SERVED_TYPES if operation.resource_type == "Resource" else (operation.resource_type,)
        assert all((rtype, operation.name, definition["url"]) in advertised for rtype in types)


def _interaction_request(fhir: Fhir, rtype: str, interaction: str) -> tuple[str, str, Any, dict[str, str]]:
    """A request that asks for ``interaction`` on ``rtype`` (about a resource that may not exist)."""
    body = {"resourceType": rtype, "id": "probe"}
    patch = [{"op": "add", "path": "/language", "value": "fr"}]
    return {
        "read": ("GET", f"{rtype}/probe", None, {}),
        "vread": ("GET", f"{rtype}/probe/_history/1", None, {}),
        "update": ("PUT", f"{rtype}/probe", body, {}),
        "patch": ("PATCH", f"{rtype}/probe", patch, {"Content-Type": "application/json-patch+json"}),
        "delete": ("DELETE", f"{rtype}/probe", None, {}),
        "history-instance": ("GET", f"{rtype}/probe/_history", None, {}),
        "history-type": ("GET", f"{rtype}/_history", None, {}),
        "create": ("POST", rtype, {"resourceType": rtype}, {}),
        "search-type": ("GET", rtype, None, {}),
    }[interaction]


def test_advertised_interactions_are_exactly_those_not_refused_with_405(fhir: Fhir) -> None:
    """For every served type and every R4 type interaction: advertised means answered (whatever
    the outcome), not advertised means 405 — directly and inside a batch Bundle."""
    statement = fhir.request("GET", "metadata").get_json()
    resources = statement["rest"][0]["resource"]
    assert {r["type"] for r in resources} == set(SERVED_TYPES)
    refused = []
    for resource in resources:
        rtype = resource["type"]
        offered = {i["code"] for i in resource["interaction"]}
        for interaction in TYPE_INTERACTIONS:
            method, path, body, headers = _interaction_request(fhir, rtype, interaction)
            status = fhir.request(method, path, body, headers=headers).status_code
            assert (status == 405) == (interaction not in offered), (rtype, interaction, status)
            if status == 405:
                refused.append((rtype, interaction))
    # The access trail is written by the server only (R17): the one type that refuses writes.
    assert refused == [("AuditEvent", i) for i in ("update", "patch", "delete", "create")]
    audit = next(r for r in resources if r["type"] == "AuditEvent")
    assert (audit["updateCreate"], audit["conditionalCreate"], audit["conditionalDelete"]) == (
        False,
        False,
        "not-supported",
    )
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "AuditEvent"}, "request": {"method": "POST", "url": "AuditEvent"}},
            {"request": {"method": "DELETE", "url": "AuditEvent/probe"}},
        ],
    }
    answer = fhir.request("POST", "", batch).get_json()
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["405", "405"]


def test_statement_declares_profiles_actors_and_guides(client: FlaskClient) -> None:
    statement = client.get("/fhir/metadata").get_json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
    pdsm = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
    assert f"{mhd}IHE.MHD.Minimal.DocumentReference" in by_type["DocumentReference"]["supportedProfile"]
    assert f"{pdsm}pdsm-comprehensive-document-reference" in by_type["DocumentReference"]["supportedProfile"]
    assert f"{mhd}IHE.MHD.Comprehensive.SubmissionSet" in by_type["List"]["supportedProfile"]
    assert f"{pdsm}pdsm-comprehensive-provide-document-bundle" in by_type["Bundle"]["supportedProfile"]
    assert "supportedProfile" not in by_type["Consent"]
    # Every supported profile is one the server has (and checks): none is only a name.
    for resource in by_type.values():
        for url in resource.get("supportedProfile", []):
            profile = load_profiles().get(url)
            assert profile is not None and profile.type == resource["type"], url
    actors = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD."
    assert {f"{actors}DocumentRecipient", f"{actors}DocumentResponder"} <= set(statement["instantiates"])
    assert "https://profiles.ihe.net/ITI/MHD/ImplementationGuide/ihe.iti.mhd" in statement["implementationGuide"]


def test_openapi_document_follows_the_statement(client: FlaskClient) -> None:
    response = client.get("/fhir/openapi.json")  # no token, like /metadata
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    statement = client.get("/fhir/metadata").get_json()
    for resource in statement["rest"][0]["resource"]:
        rtype, offered = resource["type"], {i["code"] for i in resource["interaction"]}
        assert ("post" in paths.get(f"/{rtype}", {})) == ("create" in offered), rtype
        assert ("delete" in paths.get(f"/{rtype}/{{id}}", {})) == ("delete" in offered), rtype
        searched = {p["name"] for p in paths[f"/{rtype}"]["get"]["parameters"]}
        assert {p["name"] for p in resource["searchParam"]} <= searched
        assert "post" in paths[f"/{rtype}/$validate"] and "get" in paths[f"/{rtype}/{{id}}/$validate"]
    assert "get" in paths["/Patient/{id}/$everything"]
    assert statement["rest"][0]["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    assert "get" in paths["/Patient/{id}/DocumentReference"] and "/Patient/{id}/Organization" not in paths
    assert paths["/metadata"]["get"]["security"] == []


def test_browsable_api_page(client: FlaskClient) -> None:
    response = client.get("/fhir/api")
    assert response.status_code == 200 and response.content_type.startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert "<script" not in page and "http-equiv" not in page and "<link" not in page
    assert 'id="DocumentReference"' in page and "<code>$validate</code>" in page
    assert "<code>$everything</code>" in page and "<code>subject</code>" in page
    assert "search-type" in page
