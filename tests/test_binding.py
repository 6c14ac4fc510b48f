"""R1 for searches (CONTRACT §2): with a token about patient A, a search that names patient B is
refused (403), as a request about another patient is; the answer is the same whether B exists or
not, so it tells nothing a read would not (a read of B's resources answers 404 either way)."""

from __future__ import annotations

import pytest

from authz.terms import ACCESS, IDNATPS_SYSTEM
from tests.dmp import INS_SYSTEM, World

INS_A = "180017512345660"
INS_B = "285037512345771"
INS_NOBODY = "177037512345843"
NIA_SYSTEM = "urn:oid:1.2.250.1.213.1.4.9"
DR = "810002673899"


@pytest.fixture
def two(world: World) -> tuple[str, str]:
    pa, pb = world.seed_patient(INS_A), world.seed_patient(INS_B)
    world.seed_document(pa, doc_id="doc-a")
    world.seed_document(pb, doc_id="doc-b")
    for ins in (INS_A, INS_B):
        world.seed_consent(ACCESS, ins, (IDNATPS_SYSTEM, DR))
    return pa, pb


def refusal(world: World, query: str, who: str = "HCP") -> str:
    client = world.patient(INS_A) if who == "PAT" else world.doctor(DR, INS_A)
    response = client.get(query)
    assert response.status_code == 403, (query, response.get_data(as_text=True))
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "forbidden" and "another patient" in issue["diagnostics"]
    return str(issue["diagnostics"])


@pytest.mark.parametrize("who", ["PAT", "HCP"])
def test_a_search_naming_another_patient_is_refused(world: World, two: tuple[str, str], who: str) -> None:
    _, pb = two
    for query in (
        f"Patient?identifier={INS_SYSTEM}|{INS_B}",
        f"Patient?identifier={INS_SYSTEM}|{INS_A},{INS_SYSTEM}|{INS_B}",  # one of an OR is enough
        f"DocumentReference?patient={pb}",
        f"DocumentReference?patient=Patient/{pb}",
        f"DocumentReference?subject={world.config.base_url}/Patient/{pb}",
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_B}",
        f"DocumentReference?patient:identifier={INS_SYSTEM}|{INS_B}",
        f"List?patient={pb}",
        f"Consent?patient.identifier={INS_SYSTEM}|{INS_B}",
        *([f"AuditEvent?entity-identifier={INS_SYSTEM}|{INS_B}"] if who == "PAT" else []),  # R17: HCP reads no trail
    ):
        assert f"{pb}" in refusal(world, query, who) or INS_B in refusal(world, query, who)


def test_the_refusal_does_not_tell_whether_the_other_patient_exists(world: World, two: tuple[str, str]) -> None:
    """B has a DMP, NOBODY has none, "ghost" is no Patient id at all: one and the same answer."""
    existing = refusal(world, f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_B}")
    absent = refusal(world, f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_NOBODY}")
    assert existing.replace(INS_B, "X") == absent.replace(INS_NOBODY, "X")
    _, pb = two
    assert refusal(world, f"DocumentReference?patient={pb}").replace(pb, "X") == refusal(
        world, "DocumentReference?patient=ghost"
    ).replace("ghost", "X")


def test_searches_about_the_tokens_own_patient_still_answer(world: World, two: tuple[str, str]) -> None:
    pa, _ = two
    doctor = world.doctor(DR, INS_A)
    assert doctor.ids(f"Patient?identifier={INS_SYSTEM}|{INS_A}") == {pa}
    assert doctor.ids(f"DocumentReference?patient={pa}") == {"doc-a"}
    assert doctor.ids(f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_A}") == {"doc-a"}
    assert doctor.ids(f"DocumentReference?subject=Patient/{pa}") == {"doc-a"}
    # A search by a non-INS identifier names nobody in particular: the read filter answers.
    assert doctor.ids("Patient?identifier=urn:oid:1.2.3|42") == set()
    # The same number under the INS-NIA system is another identity than the token's INS-NIR.
    refusal(world, f"Patient?identifier={NIA_SYSTEM}|{INS_A}")


def test_the_refusal_is_in_the_trail_of_the_tokens_patient(world: World, two: tuple[str, str]) -> None:
    _, pb = two
    refusal(world, f"DocumentReference?patient={pb}")
    trail = world.patient(INS_A).get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}&_count=50").get_json()
    outcomes = {
        (e["resource"]["subtype"][0]["code"], e["resource"]["outcome"])
        for e in trail.get("entry", [])
        if "resource" in e
    }
    assert ("search-type", "4") in outcomes
