"""SMART scopes (authz/scopes.py, authz/smart_scopes.py) over real HTTP with real tokens: each
letter allows the interactions SMART App Launch 2.2 gives it; types outside the token's scopes
never come back, through includes, ``$everything`` or history either, and totals count only what
comes back; granular scopes (``?category=...``) narrow searches and reads as a search would."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.authserver.apps import CONTEXT_SCOPES
from authz.scopes import INTERACTION_PERMISSION, Grant, Scopes, parse_scope
from tests.dmp import INS_SYSTEM, As, World, closure
from tests.test_mhd_publish import DR_DAVID, cda, grant, parameters, person, seed_dmp, uploaded_binary
from tests.test_mhd_publish import INS_A as MHD_INS

INS = "180017512345660"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CLASS_10 = f"{TRE_A03}|10"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"


def category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": TRE_A03, "code": code}]}]


@pytest.fixture
def record(world: World) -> str:
    """A DMP with a document of class 10 and one of class 11 (a Consent and trail entries too)."""
    pid = world.seed_patient(INS)
    world.seed_document(pid, doc_id="doc-10", category=category("10"))
    world.seed_document(pid, doc_id="doc-11", category=category("11"))
    return pid


def holder(world: World, scope: str) -> As:
    """The patient, with a token of these scopes only."""
    return world.as_("PAT", patient=INS, scope=scope)


def matches(response: TestResponse) -> dict[str, set[str]]:
    """Every entry of a Bundle by type (whatever its search mode), after checking ``total``."""
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    out: dict[str, set[str]] = {}
    for entry in bundle.get("entry", []):
        out.setdefault(entry["resource"]["resourceType"], set()).add(entry["resource"]["id"])
    if bundle["type"] == "searchset":
        counted = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]
        assert bundle["total"] == len(counted)
    return out


# -- parsing -------------------------------------------------------------------------------------


def test_scopes_parse_v1_v2_and_granular_forms() -> None:
    scopes = Scopes.parse(
        "openid launch/patient patient/Patient.read user/Consent.write system/Binary.cruds "
        f"patient/DocumentReference.rs?category={CLASS_10} patient/List.sr patient/*.s?"
    )
    assert scopes.grants == (
        Grant("Patient", "rs"),
        Grant("Consent", "cud"),
        Grant("Binary", "cruds"),
        Grant("DocumentReference", "rs", (("category", CLASS_10),)),
    )
    assert parse_scope(f"system/DocumentReference.rs?category={CLASS_10}") is None  # registrations are plain
    assert scopes.allows("DocumentReference", "s") and not scopes.allows("DocumentReference", "c")


def test_each_letter_maps_to_the_interactions_smart_gives_it() -> None:
    assert {k for k, v in INTERACTION_PERMISSION.items() if v == "r"} == {"read", "vread", "history-instance"}
    assert {k for k, v in INTERACTION_PERMISSION.items() if v == "s"} == {
        "search-type",
        "search-system",
        "history-type",
        "history-system",
    }
    assert {k for k, v in INTERACTION_PERMISSION.items() if v == "u"} == {"update", "patch"}
    assert INTERACTION_PERMISSION["create"] == "c" and INTERACTION_PERMISSION["delete"] == "d"


# -- letters -------------------------------------------------------------------------------------


def test_r_reads_and_s_searches(world: World, record: str) -> None:
    read_only = holder(world, "patient/DocumentReference.r")
    assert read_only.get("DocumentReference/doc-10").status_code == 200
    assert read_only.get("DocumentReference/doc-10/_history/1").status_code == 200
    assert read_only.get("DocumentReference/doc-10/_history").status_code == 200
    assert read_only.get(f"DocumentReference?patient={record}").status_code == 403
    assert read_only.get("DocumentReference/_history").status_code == 403
    search_only = holder(world, "patient/DocumentReference.s")
    assert search_only.ids(f"DocumentReference?patient={record}") == {"doc-10", "doc-11"}
    assert search_only.get("DocumentReference/_history").status_code == 200
    assert search_only.get("DocumentReference/doc-10").status_code == 403
    assert search_only.get("DocumentReference/doc-10/_history/1").status_code == 403
    v1 = holder(world, "patient/DocumentReference.read")
    assert v1.get("DocumentReference/doc-10").status_code == 200
    assert v1.ids(f"DocumentReference?patient={record}") == {"doc-10", "doc-11"}


def test_c_creates_u_updates_even_an_update_that_creates(world: World, record: str) -> None:
    patient = world.patient(INS)
    current = patient.get(f"Patient/{record}").get_json()
    assert holder(world, "patient/Patient.cr").put(f"Patient/{record}", current).status_code == 403
    assert holder(world, "patient/Patient.ru").put(f"Patient/{record}", current).status_code == 200
    closed = {**patient.get(f"Patient/{record}").get_json(), "active": False}
    closed["extension"] = [closure(world.clock.now.date())]
    assert holder(world, "patient/Patient.r").put(f"Patient/{record}", closed).status_code == 403
    assert patient.get(f"Patient/{record}").get_json()["active"] is True


# -- types outside the scopes ----------------------------------------------------------------------


def test_includes_never_bring_types_outside_the_scopes(world: World, record: str) -> None:
    patient_only = holder(world, "patient/Patient.rs")
    found = matches(patient_only.get("Patient?_revinclude=DocumentReference:subject&_revinclude=AuditEvent:patient"))
    assert found == {"Patient": {record}}
    both = holder(world, "patient/Patient.rs patient/DocumentReference.rs")
    found = matches(both.get("Patient?_revinclude=DocumentReference:subject&_revinclude=AuditEvent:patient"))
    assert found == {"Patient": {record}, "DocumentReference": {"doc-10", "doc-11"}}
    docs_only = holder(world, "patient/DocumentReference.rs")
    found = matches(docs_only.get(f"DocumentReference?patient={record}&_include=DocumentReference:subject"))
    assert found == {"DocumentReference": {"doc-10", "doc-11"}}


def test_everything_and_history_leave_out_types_outside_the_scopes(world: World, record: str) -> None:
    narrow = holder(world, "patient/Patient.r patient/DocumentReference.s")
    assert matches(narrow.get(f"Patient/{record}/$everything")) == {
        "Patient": {record},
        "DocumentReference": {"doc-10", "doc-11"},
    }
    docs_history = holder(world, "patient/DocumentReference.s")
    history = docs_history.get("_history")
    assert history.status_code == 200, history.get_data(as_text=True)
    assert set(matches(history)) == {"DocumentReference"}
    assert history.get_json()["total"] == 2


def test_a_bundle_returns_nothing_outside_the_scopes(world: World, record: str) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient?_revinclude=DocumentReference:subject"}},
            {"request": {"method": "GET", "url": "DocumentReference/doc-10"}},
        ],
    }
    response = holder(world, "patient/Patient.rs").post("", batch)
    assert response.status_code == 200, response.get_data(as_text=True)
    first, second = response.get_json()["entry"]
    assert {e["resource"]["resourceType"] for e in first["resource"]["entry"]} == {"Patient"}
    assert second["response"]["status"].startswith("403")


# -- granular scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize("context", ["patient", "user"])
def test_a_granular_scope_narrows_searches_and_reads(world: World, record: str, context: str) -> None:
    lab = holder(world, f"patient/Patient.rs {context}/DocumentReference.rs?category={CLASS_10}")
    assert lab.ids(f"DocumentReference?patient={record}") == {"doc-10"}
    assert lab.total(f"DocumentReference?patient={record}&_count=0") == 1
    assert lab.get("DocumentReference/doc-10").status_code == 200
    hidden = lab.get("DocumentReference/doc-11")
    assert hidden.status_code == 404, hidden.get_data(as_text=True)
    assert matches(lab.get("Patient?_revinclude=DocumentReference:subject")) == {
        "Patient": {record},
        "DocumentReference": {"doc-10"},
    }
    # Two granular scopes on one type: either one is enough.
    both = holder(
        world, f"patient/DocumentReference.rs?category={CLASS_10} patient/DocumentReference.rs?category={TRE_A03}|11"
    )
    assert both.ids(f"DocumentReference?patient={record}") == {"doc-10", "doc-11"}


def test_a_granular_scope_the_server_cannot_apply_grants_nothing(world: World, record: str) -> None:
    odd = holder(world, "patient/DocumentReference.rs?no-such-parameter=1")
    assert odd.ids(f"DocumentReference?patient={record}") == set()
    assert odd.get("DocumentReference/doc-10").status_code == 404


def test_a_granular_scope_grants_no_write(world: World, record: str) -> None:
    writer = holder(world, f"patient/DocumentReference.crud?category={TRE_A03}|90 patient/Binary.c")
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": TRE_A05, "code": "EXPPAT_1"}]},  # class 90, what a patient adds
        "category": category("90"),
        "subject": {"reference": f"Patient/{record}"},
        "author": [{"reference": f"Patient/{record}"}],
        "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}],
    }
    response = writer.post("DocumentReference", document)
    assert response.status_code == 403 and "scopes" in response.get_json()["issue"][0]["diagnostics"]
    plain = holder(world, "patient/DocumentReference.crud patient/Binary.c")  # inline content is kept as a Binary
    assert plain.post("DocumentReference", document).status_code == 201, "the document itself is one the patient adds"


# -- discovery -------------------------------------------------------------------------------------


def test_the_discovery_document_announces_the_scope_syntaxes_served(world: World) -> None:
    document = world.client.get("/fhir/.well-known/smart-configuration").get_json()
    assert {"permission-v1", "permission-v2", "permission-patient", "permission-user"} <= set(document["capabilities"])
    resource = [scope for scope in document["scopes_supported"] if scope not in CONTEXT_SCOPES]  # patient apps'
    assert all(scope.split("/")[0] in ("patient", "user", "system") for scope in resource)
    assert INS_SYSTEM  # the record's INS system, named in the README's examples


def test_an_operation_that_writes_reads_what_it_writes_with_create_scopes(world: World) -> None:
    """``$generate-metadata`` describes a Binary the client sent: ``c`` on both is what it needs
    (the scope filter of a write, not that of a read)."""
    seed_dmp(world, MHD_INS)
    grant(world, MHD_INS, DR_DAVID)
    feed = world.as_(
        "HCP",
        patient=person(MHD_INS),
        idnatps=DR_DAVID,
        profession="10",
        scope="user/DocumentReference.c user/Binary.c",
    )
    url = uploaded_binary(world, feed, cda("LDL-EES_2022.01.xml"))
    response = feed.post("DocumentReference/$generate-metadata", parameters({"name": "url", "valueUrl": url}))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert feed.get(f"DocumentReference/{response.get_json()['id']}").status_code == 403  # no r
