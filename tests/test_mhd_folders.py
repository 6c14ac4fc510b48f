"""Folders in IHE MHD 4.2: created by an ITI-65 Provide Document Bundle, found by ITI-66.

A Folder ``List`` (code ``folder``) travels in a submission beside its documents. It is checked
against the Folder profile its Bundle's profile calls for (``profiles/``), lists documents of the
submission or stored documents of the same patient, is about that patient (given it when it names
none), is itself listed by the SubmissionSet, and lands in the submission's transaction or not at
all. A List returned to a reader never names a document hidden from that reader (CONTRACT §8).

The world, its patient, doctor and ITI-65 builder are those of tests/test_mhd_provide.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import MASKED_FROM_PROFESSIONALS, VISIBILITY_SYSTEM
from fhir_server.fhir.formats.xml import xml_to_json
from tests import test_mhd_provide as provide
from tests.dmp import As, World
from tests.test_mhd_provide import DR, DR_2, INS, MHD, coding, created, entry_of, refused, submission, versions

# The fixtures of tests/test_mhd_provide.py: the DMP world's patient (who grants DR and DR_2) and DR.
pid, doctor = provide.pid, provide.doctor

LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SNOMED = "http://snomed.info/sct"
OTHER_INS = "223456789012358"


def folder(pid: str, *items: str, profile: str | None = "Comprehensive", **elements: Any) -> dict[str, Any]:
    """A Folder entry listing ``items``; ``elements`` override the List's (None removes one)."""
    resource: dict[str, Any] = {
        "resourceType": "List",
        "extension": [{"url": f"{MHD}ihe-designationType", "valueCodeableConcept": coding(SNOMED, "77386006")}],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "current",
        "mode": "working",
        "title": "Suivi de grossesse",
        "code": coding(LIST_TYPES, "folder"),
        "subject": {"reference": f"Patient/{pid}"},
        "date": "2024-05-02T10:00:00+02:00",
        "entry": [{"item": {"reference": item}} for item in items],
    }
    if profile:
        resource["meta"] = {"profile": [f"{MHD}IHE.MHD.{profile}.Folder"]}
    for key, value in elements.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": {"method": "POST", "url": "List"}}


def with_folder(bundle: dict[str, Any], entry: dict[str, Any], listed: bool = True) -> dict[str, Any]:
    """``bundle`` carrying the Folder ``entry``, listed by its SubmissionSet unless told not to."""
    bundle["entry"].append(entry)
    if listed:
        entry_of(bundle, "List")["resource"]["entry"].append({"item": {"reference": entry["fullUrl"]}})
    return bundle


def document_url(bundle: dict[str, Any]) -> str:
    return str(entry_of(bundle, "DocumentReference")["fullUrl"])


def ids_of(targets: list[str], rtype: str) -> list[str]:
    return [t.split("/")[1] for t in targets if t.startswith(f"{rtype}/")]


def folders_found(client: As, pid: str, fmt: str = "json") -> list[dict[str, Any]]:
    """The Folders ITI-66 finds for the patient."""
    response = client.get(f"List?patient={pid}&code={LIST_TYPES}|folder&status=current&_format={fmt}")
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = xml_to_json(response.get_data()) if fmt == "xml" else response.get_json()
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def items(folder_list: dict[str, Any]) -> list[str]:
    return [e["item"]["reference"] for e in folder_list.get("entry", [])]


# -------------------------------------------------------------------------- created and found


def test_a_folder_lands_with_its_documents_and_is_found_by_iti66(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    targets = created(doctor.post("", with_folder(bundle, folder(pid, document_url(bundle)))))
    submission_set, folder_id = ids_of(targets, "List")
    (document,) = ids_of(targets, "DocumentReference")
    (found,) = folders_found(doctor, pid)
    assert found["id"] == folder_id
    assert items(found) == [f"DocumentReference/{document}"]  # the fullUrl resolved
    listed = doctor.get(f"List/{submission_set}").get_json()
    assert items(listed) == [f"DocumentReference/{document}", f"List/{folder_id}"]
    sets = doctor.get(f"List?patient={pid}&code=submissionset").get_json()
    assert [e["resource"]["id"] for e in sets["entry"]] == [submission_set]


def test_a_folder_may_gather_stored_documents_of_the_patient(world: World, pid: str, doctor: As) -> None:
    """XDS lets a submission put a document already registered into a new Folder."""
    (earlier,) = ids_of(created(doctor.post("", submission(pid))), "DocumentReference")
    bundle = submission(pid)
    entry = folder(pid, f"DocumentReference/{earlier}", document_url(bundle))
    targets = created(doctor.post("", with_folder(bundle, entry)))
    (found,) = folders_found(doctor, pid)
    assert items(found) == [
        f"DocumentReference/{earlier}",
        f"DocumentReference/{ids_of(targets, 'DocumentReference')[0]}",
    ]


def test_a_minimal_folder_in_a_minimal_bundle(world: World, pid: str, doctor: As) -> None:
    """The Minimal Folder profile asks for no title nor designationType."""
    bundle = submission(pid, profile="Minimal")
    entry = folder(pid, document_url(bundle), profile="Minimal", title=None, extension=None)
    created(doctor.post("", with_folder(bundle, entry)))
    assert len(folders_found(doctor, pid)) == 1


# -------------------------------------------------------------------------- refused, atomically


def _foreign_document(world: World) -> str:
    other = world.seed_patient(OTHER_INS)
    return world.seed_document(other, author=DR, doc_id="foreign")


#: name → (how the folder goes wrong, status, the element named first, words of the reason)
BAD_FOLDERS = {
    "a Binary": ("binary", 400, "Bundle.entry[3].resource.entry[0].item", "is no DocumentReference of this Bundle"),
    "an unknown fullUrl": ("urn", 400, "Bundle.entry[3].resource.entry[0].item", "is no DocumentReference"),
    "another patient's document": (
        "foreign",
        422,
        "Bundle.entry[3].resource.entry[0].item",
        "is no document of Patient/",
    ),
    "an unknown document": ("unknown", 422, "Bundle.entry[3].resource.entry[0].item", "is no document of Patient/"),
    "a Patient": ("patient", 422, "Bundle.entry[3].resource.entry[0].item", "is no DocumentReference"),
    "another subject": ("other-subject", 422, "Bundle.entry[3].resource.subject", f"Patient/pat-{OTHER_INS}"),
    "no title (Comprehensive Folder)": ("no-title", 422, "Bundle.entry[3].resource.title", "title"),
    "not listed by the SubmissionSet": ("unlisted", 400, "Bundle.entry[0].resource.entry", "Folder"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_a_wrong_folder_is_refused_and_nothing_is_stored(world: World, pid: str, doctor: As, case: str) -> None:
    how, status, element, words = BAD_FOLDERS[case]
    bundle = submission(pid)
    foreign = _foreign_document(world)
    item = {
        "binary": entry_of(bundle, "Binary")["fullUrl"],
        "urn": f"urn:uuid:{uuid.uuid4()}",
        "foreign": f"DocumentReference/{foreign}",
        "unknown": "DocumentReference/no-such-document",
        "patient": f"Patient/{pid}",
    }.get(how, document_url(bundle))
    elements: dict[str, Any] = {
        "other-subject": {"subject": {"reference": f"Patient/pat-{OTHER_INS}"}},
        # No meta.profile: the Comprehensive Bundle's own Folder profile applies (profiles/overlay.json).
        "no-title": {"title": None, "meta": None},
    }.get(how, {})
    bundle = with_folder(bundle, folder(pid, item, **elements), listed=how != "unlisted")
    before = versions(world)
    refused(doctor.post("", bundle), status, element, words)
    assert versions(world) == before
    assert folders_found(doctor, pid) == []


@pytest.mark.parametrize("which", ["Folder", "SubmissionSet"])
def test_a_list_naming_no_patient_is_about_the_submissions(world: World, pid: str, doctor: As, which: str) -> None:
    """ITI-65 2:3.65.4.1.2.1: "All DocumentReference.subject and List.subject values shall be
    populated", though the Minimal profiles leave it optional: the recipient records the patient
    the documents name, so that ITI-66 (which always names the patient) finds the List."""
    bundle = submission(pid, profile="Minimal")
    bundle = with_folder(bundle, folder(pid, document_url(bundle), profile="Minimal"))
    lists = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "List"]
    del lists[0 if which == "SubmissionSet" else 1]["subject"]
    targets = created(doctor.post("", bundle))
    for list_id in ids_of(targets, "List"):
        assert doctor.get(f"List/{list_id}").get_json()["subject"] == {"reference": f"Patient/{pid}"}
    found = doctor.get(f"List?patient={pid}").get_json()
    assert {e["resource"]["id"] for e in found["entry"]} == set(ids_of(targets, "List"))


def test_a_folder_naming_a_document_its_submitter_may_not_see_is_refused(world: World, pid: str) -> None:
    """The submitter learns no more of a hidden document than of an unknown one."""
    masked = world.seed_document(pid, author=DR, labels=(MASKED_FROM_PROFESSIONALS,), doc_id="masked")
    bundle = submission(pid, author_id=DR_2)
    bundle = with_folder(bundle, folder(pid, f"DocumentReference/{masked}"))
    response = world.doctor(DR_2, INS).post("", bundle)
    refused(response, 422, "Bundle.entry[3].resource.entry[0].item", "DocumentReference/masked is no document of")


# -------------------------------------------------------------------------- hidden documents


def _mask(world: World, document: str) -> None:
    """The patient masks the document from professionals (R11, R18)."""
    patient = world.patient(INS)
    add = [{"op": "add", "path": "/securityLabel/-", "value": coding(VISIBILITY_SYSTEM, MASKED_FROM_PROFESSIONALS)}]
    response = patient.request(
        "PATCH", f"DocumentReference/{document}", add, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_returned_list_never_names_a_document_hidden_from_its_reader(
    world: World, pid: str, doctor: As, fmt: str
) -> None:
    """CONTRACT §8, DMP R11: once the patient masks one of the folder's two documents, another
    doctor reads the folder and the submission set without it, by ITI-66 and by a read; the
    author still sees both. (``authz/gate.py`` shapes every List the store returns.)"""
    bundle = submission(pid)
    second = submission(pid)
    bundle["entry"] += [second["entry"][1], second["entry"][2]]
    entry_of(bundle, "List")["resource"]["entry"].append({"item": {"reference": second["entry"][1]["fullUrl"]}})
    bundle = with_folder(bundle, folder(pid, document_url(bundle), second["entry"][1]["fullUrl"]))
    targets = created(doctor.post("", bundle))
    kept, masked = ids_of(targets, "DocumentReference")
    submission_set, folder_id = ids_of(targets, "List")
    _mask(world, masked)
    other = world.doctor(DR_2, INS)
    both = [f"DocumentReference/{kept}", f"DocumentReference/{masked}"]

    def read(client: As, list_id: str) -> dict[str, Any]:
        response: TestResponse = client.get(f"List/{list_id}?_format={fmt}")
        assert response.status_code == 200, response.get_data(as_text=True)
        body: dict[str, Any] = xml_to_json(response.get_data()) if fmt == "xml" else response.get_json()
        return body

    assert [items(f) for f in folders_found(other, pid, fmt)] == [[f"DocumentReference/{kept}"]]
    assert items(read(other, folder_id)) == [f"DocumentReference/{kept}"]
    assert items(read(other, submission_set)) == [f"DocumentReference/{kept}", f"List/{folder_id}"]
    assert [items(f) for f in folders_found(doctor, pid, fmt)] == [both]
    assert items(read(doctor, submission_set)) == [*both, f"List/{folder_id}"]
