"""A document's uniqueId (``masterIdentifier``) is unique (fhir_server/documents/unique_ids.py):
an ITI-65 reusing it with other content is refused with the XDS error code (XDSNonIdenticalHash,
XDSNonIdenticalSize, XDSRegistryDuplicateUniqueIdInMessage), nothing stored; with identical content
it is accepted, as the XDS registry accepts the same document registered again."""

from __future__ import annotations

import copy
from typing import Any

from authz.terms import ACCESS, IDNATPS_SYSTEM
from storage.query import OPEN_SCOPE, Query, Token
from tests.dmp import As, World
from tests.test_mhd_provide import INS, created, doctor, entry_of, pid, submission
from tests.test_mhd_publish import (
    BY_DR_DAVID,
    CR_CONSULTATION,
    DR_DAVID,
    PDF,
    b64,
    grant,
    professional,
    seed_dmp,
    simplified,
)
from tests.test_mhd_publish import INS_A as PUBLISH_INS

__all__ = ["doctor", "pid"]  # the fixtures of tests/test_mhd_provide.py, used here too

UNIQUE_ID = "urn:oid:1.2.250.1.999.1.42"
OTHER_INS = "285037512345787"


def with_id(bundle: dict[str, Any], value: str = UNIQUE_ID) -> dict[str, Any]:
    entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"] = {
        "system": "urn:ietf:rfc:3986",
        "value": value,
    }
    return bundle


def registered(world: World, value: str = UNIQUE_ID) -> int:
    found = world.store.search(Query("DocumentReference", Token("identifier", "urn:ietf:rfc:3986", value)), OPEN_SCOPE)
    assert found.total is not None
    return found.total


def refusal(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 422, response.get_data(as_text=True)
    issue: dict[str, Any] = response.get_json()["issue"][0]
    assert issue["code"] == "duplicate" and issue["details"]["text"] == code, issue
    assert code in issue["diagnostics"] and UNIQUE_ID in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.masterIdentifier"]
    return issue


def test_the_same_unique_id_with_other_content_is_refused(world: World, pid: str, doctor: As) -> None:
    created(doctor.post("", with_id(submission(pid, b"Compte rendu, version 1"))))
    issue = refusal(doctor.post("", with_id(submission(pid, b"Compte rendu, version 2"))), "XDSNonIdenticalHash")
    assert "Patient" not in issue["diagnostics"] and "DocumentReference/" not in issue["diagnostics"]
    assert registered(world) == 1


def test_the_same_unique_id_with_identical_content_is_accepted(world: World, pid: str, doctor: As) -> None:
    created(doctor.post("", with_id(submission(pid, b"Compte rendu"))))
    created(doctor.post("", with_id(submission(pid, b"Compte rendu"))))
    assert registered(world) == 2


def test_a_registered_document_without_hash_is_compared_on_its_stored_content(
    world: World, pid: str, doctor: As
) -> None:
    first = with_id(submission(pid, b"Compte rendu"))
    attachment = entry_of(first, "DocumentReference")["resource"]["content"][0]["attachment"]
    del attachment["hash"], attachment["size"]
    created(doctor.post("", first))
    refusal(doctor.post("", with_id(submission(pid, b"Autre compte rendu"))), "XDSNonIdenticalHash")
    created(doctor.post("", with_id(submission(pid, b"Compte rendu"))))


def test_uniqueness_spans_every_patient_and_says_nothing_of_the_other(world: World, pid: str, doctor: As) -> None:
    other = world.seed_patient(OTHER_INS)
    world.seed_consent(ACCESS, OTHER_INS, (IDNATPS_SYSTEM, "810002673899"))
    other_doctor = world.doctor("810002673899", OTHER_INS)
    created(other_doctor.post("", with_id(submission(other, b"Document d'un autre patient", author_id="810002673899"))))
    issue = refusal(doctor.post("", with_id(submission(pid, b"Compte rendu"))), "XDSNonIdenticalHash")
    assert (
        other not in issue["diagnostics"] and OTHER_INS not in issue["diagnostics"] and INS not in issue["diagnostics"]
    )


def test_two_documents_of_one_submission_with_one_unique_id(world: World, pid: str, doctor: As) -> None:
    bundle = with_id(submission(pid, b"Premier"))
    second = with_id(submission(pid, b"Second"))
    for entry in second["entry"][1:]:
        moved = copy.deepcopy(entry)
        bundle["entry"].append(moved)
    bundle["entry"][0]["resource"]["entry"].append({"item": {"reference": second["entry"][1]["fullUrl"]}})
    response = doctor.post("", bundle)
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["details"]["text"] == "XDSRegistryDuplicateUniqueIdInMessage"
    assert issue["expression"] == ["Bundle.entry[3].resource.masterIdentifier"]
    assert registered(world) == 0


def test_simplified_publish_holds_the_unique_id_too(world: World) -> None:
    """ITI-105 (a DocumentReference POSTed with its document inline) keeps the same rule."""
    pid = seed_dmp(world, PUBLISH_INS)
    grant(world, PUBLISH_INS, DR_DAVID)
    doctor = professional(world, PUBLISH_INS, DR_DAVID)

    def publish(data: bytes) -> Any:
        attachment = {"contentType": "application/pdf", "data": b64(data)}
        master = {"system": "urn:ietf:rfc:3986", "value": UNIQUE_ID}
        document = simplified(pid, attachment, type=CR_CONSULTATION, author=BY_DR_DAVID, masterIdentifier=master)
        return doctor.post("DocumentReference", document)

    assert publish(PDF).status_code == 201
    refused = publish(PDF + b"\n% a later version")
    assert refused.status_code == 422, refused.get_data(as_text=True)
    issue = refused.get_json()["issue"][0]
    assert issue["details"]["text"] == "XDSNonIdenticalHash" and issue["expression"] == [
        "DocumentReference.masterIdentifier"
    ]
    assert publish(PDF).status_code == 201  # the same document again
    assert registered(world) == 2
