"""Search features of R4 beyond the basics: compartment search, ``_include=*``/``_revinclude=*``,
``If-Modified-Since`` on read, ``_at`` on history — each also checked with the DMP rules on, where
a document hidden from the caller must never come back through them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from authz.terms import INVISIBLE_TO_PATIENT
from fhir_server.fhir.search.parser import SearchParser
from fhir_server.fhir.service import FhirService
from fhirmodel.terminology import Terminology
from storage.query import TokenIn
from tests.conftest import Fhir
from tests.dmp import World

INS_A = "180017512345660"
INS_B = "285037512345787"


def _patient(fhir: Fhir, pid: str) -> None:
    fhir.request("PUT", f"Patient/{pid}", {"resourceType": "Patient", "id": pid, "name": [{"family": pid}]})


def _document(fhir: Fhir, did: str, pid: str, **elements: object) -> None:
    doc = {
        "resourceType": "DocumentReference",
        "id": did,
        "status": "current",
        "subject": {"reference": f"Patient/{pid}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}],
        **elements,
    }
    response = fhir.request("PUT", f"DocumentReference/{did}", doc)
    assert response.status_code in (200, 201), response.get_data(as_text=True)


def test_compartment_search_is_the_search_of_the_patients_resources(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    _patient(fhir, "p2")
    _document(fhir, "d1", "p1", description="alpha")
    _document(fhir, "d2", "p1", description="beta")
    _document(fhir, "d3", "p2", description="alpha")
    authored = {"author": [{"reference": "Patient/p1"}]}
    _document(fhir, "d4", "p2", description="by p1", **authored)  # in p1's compartment as its author
    assert fhir.ids("Patient/p1/DocumentReference") == {"d1", "d2", "d4"}
    assert fhir.ids("Patient/p1/DocumentReference?description=alpha") == {"d1"}
    assert fhir.ids("Patient/p2/DocumentReference") == {"d3", "d4"}
    assert fhir.ids("Patient/nobody/DocumentReference") == set()
    bundle = fhir.search("Patient/p1/DocumentReference?_count=1")
    assert bundle["total"] == 3
    assert bundle["link"][0]["url"].endswith("/Patient/p1/DocumentReference?_count=1")
    seen = set()
    while True:
        seen |= {e["resource"]["id"] for e in bundle.get("entry", [])}
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        bundle = fhir.search("?" + nxt[0].split("?", 1)[1])
    assert seen == {"d1", "d2", "d4"}  # later pages stay inside the compartment
    assert fhir.request("GET", "Patient/p1/Organization").status_code == 404  # not in the compartment
    assert fhir.request("POST", "Patient/p1/DocumentReference", {}).status_code in (404, 405)


def test_include_and_revinclude_wildcards(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    org = {"resourceType": "Organization", "id": "o1", "name": "Clinique"}
    assert fhir.request("PUT", "Organization/o1", org).status_code == 201
    _document(fhir, "d1", "p1", custodian={"reference": "Organization/o1"})
    bundle = fhir.search("DocumentReference?_id=d1&_include=*")
    included = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    }
    assert included == {("Patient", "p1"), ("Organization", "o1")}
    bundle = fhir.search("Patient?_id=p1&_revinclude=*")
    included = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    }
    assert included == {("DocumentReference", "d1")}
    bundle = fhir.search("Organization?_id=o1&_revinclude=*&_include:iterate=*")
    included = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "include"
    }
    assert included == {("DocumentReference", "d1"), ("Patient", "p1")}


def test_if_modified_since_on_read(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    read = fhir.request("GET", "Patient/p1")
    modified = read.headers["Last-Modified"]
    assert fhir.request("GET", "Patient/p1", headers={"If-Modified-Since": modified}).status_code == 304
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert fhir.request("GET", "Patient/p1", headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    response = fhir.request("GET", "Patient/p1", headers={"If-Modified-Since": earlier})
    assert response.status_code == 200 and response.get_json()["id"] == "p1"
    assert fhir.request("GET", "Patient/p1", headers={"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match decides when both are sent (RFC 9110 §13.2.2).
    both = {"If-Modified-Since": later, "If-None-Match": 'W/"9"'}
    assert fhir.request("GET", "Patient/p1", headers=both).status_code == 200


def _instant(fhir: Fhir, path: str) -> str:
    return str(fhir.request("GET", path).get_json()["meta"]["lastUpdated"])


def test_history_at_gives_the_versions_current_then(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    first = _instant(fhir, "Patient/p1")
    time.sleep(0.01)
    fhir.request("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1", "name": [{"family": "v2"}]})
    second = _instant(fhir, "Patient/p1")
    assert second > first

    def versions(query: str) -> list[str]:
        bundle = fhir.search(query)
        return [e["response"]["etag"] for e in bundle.get("entry", [])]

    assert versions(f"Patient/p1/_history?_at={first}") == ['W/"1"']
    assert versions(f"Patient/p1/_history?_at={second}") == ['W/"2"']
    year = first[:4]
    assert versions(f"Patient/p1/_history?_at={year}") == ['W/"2"', 'W/"1"']  # both were current that year
    assert versions("Patient/p1/_history?_at=1999") == []
    assert fhir.request("GET", "Patient/p1/_history?_at=yesterday").status_code == 400


def test_hidden_documents_stay_hidden_through_these_searches(world: World) -> None:
    pid = world.seed_patient(INS_A)
    visible = world.seed_document(pid)
    hidden = world.seed_document(pid, labels=(INVISIBLE_TO_PATIENT,))
    world.seed_patient(INS_B)
    patient = world.patient(INS_A)
    assert patient.ids(f"Patient/{pid}/DocumentReference") == {visible}
    assert patient.ids(f"Patient/{pid}/DocumentReference?_id={hidden}") == set()
    assert patient.total(f"Patient/{pid}/DocumentReference") == 1
    bundle = patient.get(f"Patient?_id={pid}&_revinclude=*").get_json()
    returned = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert visible in returned and hidden not in returned
    bundle = patient.get(f"DocumentReference?patient={pid}&_revinclude=*&_include=*").get_json()
    returned = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert hidden not in returned
    # Another patient's compartment: nothing of theirs, whatever the path says.
    other = world.patient(INS_B)
    response = other.get(f"Patient/{pid}/DocumentReference")
    assert response.status_code in (200, 403)
    if response.status_code == 200:
        assert not response.get_json().get("entry")
    # History at any time does not show the hidden document either.
    assert patient.get(f"DocumentReference/{hidden}/_history?_at=2020").status_code == 404
    history = patient.get("DocumentReference/_history?_at=2000-01-01T00:00:00Z").get_json()
    assert hidden not in {e.get("resource", {}).get("id") for e in history.get("entry", [])}


def test_composite_relationship_matches_both_components_on_one_element(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    for did in ("old1", "old2"):
        _document(fhir, did, "p1")
    both = [
        {"code": "replaces", "target": {"reference": "DocumentReference/old1"}},
        {"code": "appends", "target": {"reference": "DocumentReference/old2"}},
    ]
    _document(fhir, "new", "p1", relatesTo=both)
    _document(
        fhir, "other", "p1", relatesTo=[{"code": "transforms", "target": {"reference": "DocumentReference/old1"}}]
    )
    assert fhir.ids("DocumentReference?relationship=replaces$DocumentReference/old1") == {"new"}
    assert fhir.ids("DocumentReference?relationship=replaces$old1") == {"new"}
    assert fhir.ids("DocumentReference?relationship=appends$old2,transforms$old1") == {"new", "other"}
    # The code of one relatesTo with the target of another is no match.
    assert fhir.ids("DocumentReference?relationship=replaces$DocumentReference/old2") == set()
    assert fhir.ids("DocumentReference?relationship=transforms$old2") == set()
    assert fhir.ids("DocumentReference?relationship:missing=true") == {"old1", "old2"}
    strict = {"Prefer": "handling=strict"}
    assert fhir.request("GET", "DocumentReference?relationship=replaces", headers=strict).status_code == 400
    assert fhir.request("GET", "DocumentReference?relationship=a$b$c", headers=strict).status_code == 400


def test_composite_search_keeps_hidden_documents_hidden(world: World) -> None:
    pid = world.seed_patient(INS_A)
    target = world.seed_document(pid)
    replaces = [{"code": "replaces", "target": {"reference": f"DocumentReference/{target}"}}]
    visible = world.seed_document(pid, relatesTo=replaces)
    hidden = world.seed_document(pid, labels=(INVISIBLE_TO_PATIENT,), relatesTo=replaces)
    found = world.patient(INS_A).ids(f"DocumentReference?patient={pid}&relationship=replaces${target}")
    assert found == {visible} and hidden not in found


CLASSES = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"


def test_token_below_follows_the_code_system_hierarchy(service: FhirService) -> None:
    """``:below`` is subsumption: the code and every code nested under it in the CodeSystem."""
    tree = {
        "resourceType": "CodeSystem",
        "url": "http://example.org/cs/tree",
        "concept": [
            {"code": "A", "concept": [{"code": "A1", "concept": [{"code": "A1x"}]}, {"code": "A2"}]},
            {"code": "B"},
        ],
    }
    parser = SearchParser(service.registry, Terminology([tree]), service.config.base_url, 100)
    where = parser.parse(
        "DocumentReference", [("category:below", "http://example.org/cs/tree|A")], strict=True, default_count=10
    )
    assert where.query.where == TokenIn(
        "category", frozenset(("http://example.org/cs/tree", c) for c in ("A", "A1", "A1x", "A2"))
    )
    leaf = parser.parse(
        "DocumentReference", [("category:below", "http://example.org/cs/tree|B")], strict=True, default_count=10
    )
    assert leaf.query.where == TokenIn("category", frozenset({("http://example.org/cs/tree", "B")}))


def test_token_below_over_http(fhir: Fhir) -> None:
    _patient(fhir, "p1")
    _document(fhir, "d1", "p1", category=[{"coding": [{"system": CLASSES, "code": "11"}]}])
    _document(fhir, "d2", "p1", category=[{"coding": [{"system": CLASSES, "code": "10"}]}])
    assert fhir.ids(f"DocumentReference?category:below={CLASSES}|11") == {"d1"}
    strict = {"Prefer": "handling=strict"}
    for bad in ("11", "http://example.org/unknown|11", f"{CLASSES}|nope"):
        assert fhir.request("GET", f"DocumentReference?category:below={bad}", headers=strict).status_code == 400
