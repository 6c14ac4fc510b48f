"""IHE MHD ITI-65 Provide Document Bundle, Document Recipient side (fhir_server/dmp/documents/mhd.py).

Most tests run in a DMP world (tests/dmp.py: the real server, the DMP gatekeeper, real tokens).
Its patient carries the INS the ANS examples name — with its key put right: they write
``123456789012345``, whose key should be ``11``, and the server refuses a wrong key (CONTRACT §3),
so :func:`example` reads them with the valid INS in its place — (so their ``Patient?identifier=``
subjects resolve) and its doctor the idNatPs they name as author. The IHE examples name
``Patient/ex-patient`` (or a Patient on example.org); :func:`retarget` points those references at
the world's patient — a DMP takes documents only for a patient it knows. Every other change made to
an example is said where it is made.

"Nothing persisted" is checked on the store's history: the number of versions of every record type
is the same before and after a refused submission (only the request's AuditEvent is added).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import ACCESS, IDNATPS_SYSTEM
from fhir_server.fhir.formats.xml import xml_to_json
from fhir_server.fhir.profiles import load_profiles
from storage.query import OPEN_SCOPE
from tests.conftest import Fhir
from tests.dmp import CR_CONSULTATION, FINESS, INS_SYSTEM, LOINC, As, World
from tests.document_codes import dmp_codes, nist_dmp_codes
from tests.nist_mhd import NistCase, cases
from tests.paths import EXAMPLES, SHARED_DATA, example_transaction_bundles
from tests.test_cda import make_cda

#: The INS the ANS examples name (its key is wrong), and the valid INS of the same NIR.
EXAMPLE_INS = "123456789012345"
INS = "123456789012311"
DR = "899700218896"  # the idNatPs the ANS examples name as author
DR_2 = "810000000002"
MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
SNOMED = "http://snomed.info/sct"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
#: The patients the example Bundles name, all meaning "the patient of this submission".
EXAMPLE_PATIENTS = ("Patient/ex-patient", "http://example.org/fhir/Patient/fdoc-patient", "Patient/fr-patient-123")
#: Record types whose versions must not change when a submission is refused.
RECORD_TYPES = ("DocumentReference", "List", "Binary", "Bundle", "Patient", "Practitioner", "Consent")
FHIR_XML = "application/fhir+xml"


@pytest.fixture
def pid(world: World) -> str:
    patient = world.seed_patient(INS)
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR_2))
    return patient


@pytest.fixture
def doctor(world: World, pid: str) -> As:
    return world.doctor(DR, INS)


# -------------------------------------------------------------------------- helpers


def versions(world: World) -> dict[str, int]:
    """How many versions of each record type the store holds."""
    return {rtype: world.store.history(OPEN_SCOPE, rtype, count=1).total for rtype in RECORD_TYPES}


def stored(world: World, rtype: str, rid: str) -> dict[str, Any]:
    resource: dict[str, Any] = world.store.read(rtype, rid, OPEN_SCOPE).json()
    return resource


def issue(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    return first


def refused(response: TestResponse, status: int, element: str, words: str = "") -> dict[str, Any]:
    """The response is a refusal with this status, naming this element first (and these words)."""
    assert response.status_code == status, response.get_data(as_text=True)
    first = issue(response)
    assert first["expression"] == [element], first
    assert words in first["diagnostics"], first
    return first


def created(response: TestResponse) -> list[str]:
    """The ``Type/id`` of each entry of an accepted ITI-65, whose POSTs all answer 201."""
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["type"] == "transaction-response"
    out = []
    for entry in body["entry"]:
        status, location = entry["response"]["status"], entry["response"].get("location", "")
        assert status.startswith(("200", "201")), entry
        out.append("/".join(location.split("/")[-4:-2]))
    return out


def retarget(resource: Any, pid: str) -> Any:
    """A copy of an example with its example patients replaced by the world's patient."""
    if isinstance(resource, dict):
        out = {k: retarget(v, pid) for k, v in resource.items()}
        if out.get("reference") in EXAMPLE_PATIENTS:
            out["reference"] = f"Patient/{pid}"
        return out
    if isinstance(resource, list):
        return [retarget(v, pid) for v in resource]
    return resource


def example(path: Path, pid: str) -> dict[str, Any]:
    bundle: dict[str, Any] = retarget(json.loads(path.read_text().replace(EXAMPLE_INS, INS)), pid)
    return bundle


def entry_of(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    """The first entry of a Bundle carrying a ``rtype``."""
    found: dict[str, Any] = next(e for e in bundle["entry"] if (e.get("resource") or {}).get("resourceType") == rtype)
    return found


def sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def set_content(bundle: dict[str, Any], data: bytes) -> None:
    """Put ``data`` in the Bundle's Binary and the matching size and hash in its attachment."""
    binary = entry_of(bundle, "Binary")["resource"]
    binary["data"] = base64.b64encode(data).decode()
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment.update({"size": len(data), "hash": sha1(data)})


def seed(world: World, resource: dict[str, Any]) -> None:
    world.store.create(resource)


def submission(
    pid: str,
    data: bytes = b"Compte rendu",
    *,
    content_type: str = "text/plain",
    profile: str = "Comprehensive",
    author_id: str = DR,
    **document: Any,
) -> dict[str, Any]:
    """A complete ITI-65 of one document (class 10 type, which doctors read), written here from
    the MHD profiles; ``document`` overrides DocumentReference elements (None removes one)."""
    urls = [f"urn:uuid:{uuid.uuid4()}" for _ in range(3)]
    reference: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [f"{MHD}IHE.MHD.{profile}.DocumentReference"]},
        "contained": [
            {"resourceType": "Patient", "id": "src", "identifier": [{"system": "urn:oid:1.2.3", "value": "7"}]}
        ],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "status": "current",
        "type": coding(LOINC, CR_CONSULTATION),
        "category": [coding(TRE_A03, "10")],
        "subject": {"reference": f"Patient/{pid}"},
        "date": "2024-05-02T10:00:00+02:00",
        "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": author_id}}],
        "securityLabel": [coding(CONFIDENTIALITY, "N")],
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "language": "fr-FR",
                    "url": urls[2],
                    "size": len(data),
                    "hash": sha1(data),
                    "creation": "2024-05-02T10:00:00+02:00",
                },
                "format": {"system": FORMAT_CODES, "code": "urn:ihe:iti:xds-sd:text:2008"},
            }
        ],
        "context": {
            "facilityType": coding(SNOMED, "22232009"),
            "practiceSetting": coding(SNOMED, "394802001"),
            "sourcePatientInfo": {"reference": "#src"},
        },
    }
    for key, value in document.items():
        if value is None:
            reference.pop(key, None)
        else:
            reference[key] = value
    submission_set = {
        "resourceType": "List",
        "meta": {"profile": [f"{MHD}IHE.MHD.{profile}.SubmissionSet"]},
        "extension": [
            {"url": f"{MHD}ihe-sourceId", "valueIdentifier": {"value": "urn:oid:1.2.250.1.999"}},
            {"url": f"{MHD}ihe-designationType", "valueCodeableConcept": coding(SNOMED, "225728007")},
        ],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "current",
        "mode": "working",
        "code": coding("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
        "subject": {"reference": f"Patient/{pid}"},
        "date": "2024-05-02T10:00:00+02:00",
        "entry": [{"item": {"reference": urls[1]}}],
    }
    binary = {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(data).decode()}
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [f"{MHD}IHE.MHD.{profile}.ProvideBundle"]},
        "type": "transaction",
        "entry": [
            {"fullUrl": urls[0], "resource": submission_set, "request": {"method": "POST", "url": "List"}},
            {"fullUrl": urls[1], "resource": reference, "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": urls[2], "resource": binary, "request": {"method": "POST", "url": "Binary"}},
        ],
    }


def replacing(target: str) -> list[dict[str, Any]]:
    return [{"code": "replaces", "target": {"reference": f"DocumentReference/{target}"}}]


def cda_of(*, ins: str = INS, author: str = DR, type_code: str = CR_CONSULTATION, document_id: str = "") -> bytes:
    """A CI-SIS CDA (tests/test_cda.py's builder) about this patient, type, author and id."""
    text = make_cda(
        code=f'code="{type_code}" codeSystem="2.16.840.1.113883.6.1" displayName="Compte rendu"',
        patient_id=f'<id root="{INS_SYSTEM.removeprefix("urn:oid:")}" extension="{ins}"/>',
        author_id=f'<id root="{IDNATPS_SYSTEM.removeprefix("urn:oid:")}" extension="{author}"/>',
    )
    if document_id:
        root = document_id.removeprefix("urn:oid:")
        text = text.replace('<id root="1.2.250.1.213.1.1.1.99.1" extension="DOC-1"/>', f'<id root="{root}"/>')
    return text.encode()


#: The ClinicalDocument/id of make_cda's documents, as the masterIdentifier (XDS uniqueId) saying it.
CDA_MASTER = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.213.1.1.1.99.1^DOC-1"}


# -------------------------------------------------------------------------- the profiles


def test_requirements_come_from_the_structure_definitions() -> None:
    profiles = load_profiles()
    minimal = profiles.get(f"{MHD}IHE.MHD.Minimal.DocumentReference")
    comprehensive = profiles.get(f"{MHD}IHE.MHD.Comprehensive.DocumentReference")
    pdsm = profiles.get(f"{PDSM}pdsm-comprehensive-document-reference")
    assert minimal and comprehensive and pdsm

    def required(profile: Any) -> set[str]:
        return {r.path for r in profile.rules if r.min >= 1}

    assert required(minimal) == {"masterIdentifier", "content.attachment.contentType", "content.attachment.url"}
    assert {"type", "category", "subject", "securityLabel", "content.format", "context.facilityType"} <= required(
        comprehensive
    ) - required(minimal)
    assert {"date", "author", "custodian", "content.attachment.size", "content.attachment.hash"} <= required(
        pdsm
    ) - required(comprehensive)
    submission_set = profiles.get(f"{MHD}IHE.MHD.Minimal.SubmissionSet")
    assert submission_set is not None
    slices = {r.element: r.min for r in submission_set.rules if r.steps[-1].slice}
    assert slices["List.extension:sourceId"] == 1
    assert slices["List.identifier:uniqueId"] == 1  # profiles/overlay.json (ITI TF-3 Table 4.3.1-3)
    pdsm_set = profiles.get(f"{PDSM}pdsm-submissionset-comprehensive")
    assert pdsm_set is not None
    assert {r.element: r.min for r in pdsm_set.rules}["List.identifier:uniqueId"] == 0  # PDSm: idUnique [0..1]
    bundle = profiles.get(f"{PDSM}pdsm-comprehensive-provide-document-bundle")
    assert bundle is not None and bundle.derives_from(f"{MHD}IHE.MHD.Minimal.ProvideBundle")
    assert {s.name: s.resource_profile for s in bundle.entry_slices}["DocumentRefs"] == (
        f"{PDSM}pdsm-comprehensive-document-reference"
    )


# -------------------------------------------------------------------------- the examples


EXAMPLE_BUNDLES = example_transaction_bundles()
#: Examples refused as they are: (status, the element named first, words of the reason).
REFUSED = {
    # ``PUT List`` with neither an id nor search criteria: no FHIR interaction.
    "Bundle-ex-ProvideDocumentBundle-addToFolder": (400, "Bundle.entry[2].request.url", "(PUT List)"),
    # Its attachment says 24 bytes; the Binary ("Thanks for all the fish") holds 23.
    "Bundle-ex-comprehensiveProvideDocumentBundleReplace": (
        422,
        "Bundle.entry[2].resource.content[0].attachment.size",
        "24, but Bundle.entry[3].resource holds 23 bytes",
    ),
    # No subject, in a DMP: a document is about the token's patient (R1, the guard's refusal).
    "Bundle-ex-minimalProvideDocumentBundleSimpleContained": (403, "", "another patient"),
    # A plain transaction (no MHD profile or content), whose DocumentReference names no patient (R1),
    # once its codes are repaired (REFUSED_FOR_CODES).
    "Bundle-ex-dummyBundleDocAndBinary": (403, "", "another patient"),
    # The ANS examples lack DocumentReference.custodian, which pdsm-comprehensive-document-reference
    # requires (1..1); they are repaired and accepted in the tests further down.
    "Bundle-bundle-exemple-comprehensiveprovidedocument-replace": (
        422,
        "Bundle.entry[1].resource.custodian",
        "is required by pdsm-comprehensive-document-reference",
    ),
    "Bundle-example-td2-1-remplacement": (422, "Bundle.entry[1].resource.custodian", "custodian is required"),
    "Bundle-example-td2-iti65-lot-soumission": (422, "Bundle.entry[1].resource.custodian", "custodian is required"),
    # Its two documents share one uniqueId (masterIdentifier) with different content, which IHE
    # forbids (XDS error XDSRegistryDuplicateUniqueIdInMessage, fhir_server/documents/unique_ids.py).
    "Bundle-ex-comprehensiveProvideDocumentBundleMultiple": (
        422,
        "Bundle.entry[2].resource.masterIdentifier",
        "XDSRegistryDuplicateUniqueIdInMessage",
    ),
}


#: Examples refused as they are for their document codes (CONTRACT §5), then run repaired
#: (tests/document_codes.py): the IHE ones classify their documents with the LOINC code 11369-6,
#: no DMP class, and one types its document with 28655-9, which is not in JDV_J07.
REFUSED_FOR_CODES = {
    "Bundle-ex-comprehensiveProvideDocumentBundleComplete": ("Bundle.entry[1].resource.category[0]", "11369-6"),
    "Bundle-ex-comprehensiveProvideDocumentBundleDocument": ("Bundle.entry[1].resource.type", "28655-9"),
    "Bundle-ex-comprehensiveProvideDocumentBundleSimple": ("Bundle.entry[1].resource.category[0]", "11369-6"),
    "Bundle-ex-dummyBundleDocAndBinary": ("Bundle.entry[0].resource.category[0]", "11369-6"),
    "Bundle-ex-unContainedComprehensiveProvideDocumentBundleComplete": (
        "Bundle.entry[1].resource.category[0]",
        "11369-6",
    ),
}


def _prepare_example(world: World, pid: str, path: Path) -> dict[str, Any]:
    """The example aimed at the world's patient, and the documents it replaces stored (as the
    doctor's, current): they are what the example's PATCH entries supersede."""
    bundle = example(path, pid)
    for entry in bundle["entry"]:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient":
            # The minimal example sends the patient along: it becomes the world's one (its INS, and
            # ifNoneExist so that the entry designates the stored Patient rather than a new DMP).
            resource["identifier"] = [{"system": INS_SYSTEM, "value": INS}]
            entry["request"]["ifNoneExist"] = f"identifier={INS_SYSTEM}|{INS}"
        if entry["request"]["method"] == "PATCH":
            seed(world, _replaced_document(pid, entry["request"]["url"].split("/")[1]))
    return bundle


def _replaced_document(pid: str, rid: str) -> dict[str, Any]:
    """A current document of the world's patient, authored by the doctor (R19: only its author
    replaces it)."""
    return {
        "resourceType": "DocumentReference",
        "id": rid,
        "status": "current",
        "type": coding(LOINC, CR_CONSULTATION),
        "subject": {"reference": f"Patient/{pid}"},
        "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}],
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"v1").decode()}}],
    }


def test_there_are_example_bundles() -> None:
    assert len(EXAMPLE_BUNDLES) == 14
    assert set(REFUSED) <= {p.stem for p in EXAMPLE_BUNDLES}


@pytest.mark.parametrize("path", EXAMPLE_BUNDLES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_example_bundles(world: World, pid: str, doctor: As, path: Path) -> None:
    bundle = _prepare_example(world, pid, path)
    before = versions(world)
    response = doctor.post("", bundle)
    if path.stem in REFUSED_FOR_CODES:
        element, code = REFUSED_FOR_CODES[path.stem]
        refused(response, 422, element, code)
        assert issue(response)["code"] == "code-invalid"
        assert versions(world) == before
        bundle = dmp_codes(bundle)
        response = doctor.post("", bundle)
    if path.stem in REFUSED:
        status, element, words = REFUSED[path.stem]
        assert response.status_code == status, response.get_data(as_text=True)
        first = issue(response)
        assert first.get("expression", [""]) == [element] and words in first["diagnostics"], first
        assert versions(world) == before
        return
    targets = created(response)
    assert len(targets) == len(bundle["entry"])
    for sent, target in zip(bundle["entry"], targets, strict=True):
        if sent["request"]["method"] == "POST" and "ifNoneExist" not in sent["request"]:
            assert stored(world, *target.split("/"))["resourceType"] == sent["resource"]["resourceType"]
    for document in [t for t in targets if t.startswith("DocumentReference/")]:
        assert stored(world, *document.split("/"))["subject"] == {"reference": f"Patient/{pid}"}


def test_the_contained_minimal_example_is_accepted_with_its_patient_named(world: World, pid: str, doctor: As) -> None:
    bundle = example(EXAMPLES / "ihe-mhd/examples/Bundle-ex-minimalProvideDocumentBundleSimpleContained.json", pid)
    for rtype in ("List", "DocumentReference"):  # the example names no patient at all
        entry_of(bundle, rtype)["resource"]["subject"] = {"reference": f"Patient/{pid}"}
    assert len(created(doctor.post("", bundle))) == 3


def test_the_ihe_replace_example_repaired_supersedes_through_its_own_patch(world: World, pid: str, doctor: As) -> None:
    path = EXAMPLES / "ihe-mhd/examples/Bundle-ex-comprehensiveProvideDocumentBundleReplace.json"
    bundle = dmp_codes(_prepare_example(world, pid, path))  # and its category: 11369-6 is no DMP class
    entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]["size"] = 23  # was 24
    targets = created(doctor.post("", bundle))
    new = stored(world, *targets[2].split("/"))
    assert new["relatesTo"][0]["target"]["reference"] == "DocumentReference/ex-documentreference"
    old = stored(world, "DocumentReference", "ex-documentreference")
    assert old["status"] == "superseded"
    assert old["meta"]["versionId"] == "2"  # the Bundle's PATCH only: no second supersession


def _repair_ans(bundle: dict[str, Any], data: bytes | None) -> dict[str, Any]:
    """An ANS example made valid: the custodian its profile requires (a contained Organization),
    the class of its type as category (the drafts give another type's), and, when ``data`` is
    given, a real CDA in place of the empty ``<ClinicalDocument/>`` with the size and hash of what
    is sent."""
    bundle = dmp_codes(bundle)
    reference = entry_of(bundle, "DocumentReference")["resource"]
    reference["contained"].append(
        {"resourceType": "Organization", "id": "custodian", "identifier": [{"system": FINESS, "value": "330780038"}]}
    )
    reference["custodian"] = {"reference": "#custodian"}
    if data is not None:
        set_content(bundle, data)
    return bundle


@pytest.mark.parametrize(
    "path",
    [
        EXAMPLES / "ans-pdsm4dmp/examples/Bundle-example-td2-iti65-lot-soumission.json",
        SHARED_DATA / "fhir-examples/Bundle-example-td2-iti65-lot-soumission.json",
    ],
    ids=["ans-pdsm4dmp", "fhir-examples"],
)
def test_the_dmp_submission_example_repaired_is_accepted(world: World, pid: str, doctor: As, path: Path) -> None:
    bundle = _prepare_example(world, pid, path)
    master = entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"]["value"]
    # With the custodian alone, the example's content is refused: it is no usable CDA.
    response = doctor.post("", _repair_ans(copy.deepcopy(bundle), None))
    refused(response, 422, "Bundle.entry[2].resource.data", "the CDA cannot be used: ClinicalDocument/code")
    # With a CDA that says what the metadata says (patient, type, author, id), it is accepted.
    targets = created(doctor.post("", _repair_ans(bundle, cda_of(document_id=master))))
    document = stored(world, *targets[1].split("/"))
    assert document["subject"] == {"reference": f"Patient/{pid}"}  # the conditional reference, resolved
    assert document["content"][0]["attachment"]["url"].endswith(targets[2])
    submission_set = stored(world, *targets[0].split("/"))
    assert submission_set["entry"] == [{"item": {"reference": targets[1]}}]


def test_the_dmp_replacement_example_repaired_supersedes_the_old_document(world: World, pid: str, doctor: As) -> None:
    path = EXAMPLES / "ans-pdsm4dmp/examples/Bundle-example-td2-1-remplacement.json"
    bundle = _prepare_example(world, pid, path)
    master = entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"]["value"]
    targets = created(doctor.post("", _repair_ans(bundle, cda_of(document_id=master))))
    assert stored(world, "DocumentReference", "doc-x-id")["status"] == "superseded"
    assert stored(world, *targets[1].split("/"))["status"] == "current"


def test_the_pdsm_replacement_example_repaired_is_accepted(world: World, pid: str, doctor: As) -> None:
    path = EXAMPLES / "ans-pdsm/examples/Bundle-bundle-exemple-comprehensiveprovidedocument-replace.json"
    bundle = _prepare_example(world, pid, path)
    # Its hash is not the SHA-1 of its Binary ("Hello") either: once the custodian is there, that is
    # the refusal; with the right hash it is accepted.
    response = doctor.post("", _repair_ans(copy.deepcopy(bundle), None))
    refused(response, 422, "Bundle.entry[1].resource.content[0].attachment.hash", "qvTGHdzF6KLavt4PO0gs2a6pQ00=")
    created(doctor.post("", _repair_ans(bundle, b"Hello")))
    assert stored(world, "DocumentReference", "doc-old")["status"] == "superseded"


# -------------------------------------------------------------------------- NIST test cases

NIST_CASES = cases()
#: What each NIST negative case is refused for here: (status, the element named first).
NIST_REFUSALS = {
    "minimal/Bad_Patient_Link": (422, "Bundle.entry[0].resource.subject"),
    "minimal/Bad_Patient_Link_List": (422, "Bundle.entry[1].resource.subject"),
    "minimal/Bad_Profile": (400, "Bundle.meta.profile"),
    # These two fixtures also POST to their fullUrl rather than to the resource type; that is named
    # first, then the List item pointing at no DocumentReference of the Bundle.
    "minimal/Missing_DocumentReference_with_reference": (400, "Bundle.entry[0].request.url"),
    "minimal/Missing_DocumentReference_without_reference": (400, "Bundle.entry[0].request.url"),
    "minimal/Missing_MimeType": (422, "Bundle.entry[0].resource.content[0].attachment.contentType"),
    "minimal/Missing_Profile": (400, "Bundle.meta.profile"),
    "minimal/Missing_SourceId": (422, "Bundle.entry[1].resource.extension"),
    "minimal/Missing_SubmissionSetTypeList": (400, "Bundle.entry[0].request.url"),  # and no SubmissionSet
    "minimal/Missing_SubmissionTime": (422, "Bundle.entry[1].resource.date"),
    "minimal/Missing_UniqueId_Reference": (422, "Bundle.entry[0].resource.masterIdentifier"),
    "minimal/Missing_UniqueId_SubmissionSetTypeList": (422, "Bundle.entry[1].resource.identifier:uniqueId"),
    "comprehensive/Bad_Patient_Link": (422, "Bundle.entry[0].resource.subject"),
    "comprehensive/Bad_Patient_Link_SubmissionSetTypeList": (422, "Bundle.entry[1].resource.subject"),
    "comprehensive/Bad_Profile": (400, "Bundle.meta.profile"),
    # "#sourcePatient" names no contained resource (R4 ref-1, the resource validator's finding).
    "comprehensive/Bad_SourcePatientInfo_Link": (
        422,
        "Bundle.entry[0].resource.context.sourcePatientInfo.reference",
    ),
    "comprehensive/Missing_ContentTypeCode": (422, "Bundle.entry[1].resource.extension"),
    "comprehensive/Missing_Document": (422, "Bundle.entry[0].resource.content[0].attachment.url"),
    "comprehensive/Missing_Format_Code": (422, "Bundle.entry[0].resource.content[0].format"),
    "comprehensive/Missing_HealthcareFacilityTypeCode": (422, "Bundle.entry[0].resource.context.facilityType"),
    "comprehensive/Missing_LanguageCode": (422, "Bundle.entry[0].resource.content[0].attachment.language"),
    "comprehensive/Missing_MimeType": (422, "Bundle.entry[0].resource.content[0].attachment.contentType"),
    "comprehensive/Missing_PatientID": (422, "Bundle.entry[0].resource.subject"),
    "comprehensive/Missing_PatientID_Reference": (422, "Bundle.entry[0].resource.subject"),
    "comprehensive/Missing_PatientID_SubmissionSetTypeList": (422, "Bundle.entry[1].resource.subject"),
    "comprehensive/Missing_PracticeSettingCode": (422, "Bundle.entry[0].resource.context.practiceSetting"),
    "comprehensive/Missing_Profile": (400, "Bundle.meta.profile"),
    "comprehensive/Missing_SourceId": (422, "Bundle.entry[1].resource.extension"),
    "comprehensive/Missing_SourcePatientId": (422, "Bundle.entry[0].resource.context.sourcePatientInfo"),
    "comprehensive/Missing_SubmissionTime": (422, "Bundle.entry[1].resource.date"),
    "comprehensive/Missing_TypeCode": (422, "Bundle.entry[0].resource.type"),
    "comprehensive/Missing_UniqueId_Reference": (422, "Bundle.entry[0].resource.masterIdentifier"),
    "comprehensive/Missing_UniqueId_SubmissionSetTypeList": (422, "Bundle.entry[1].resource.identifier:uniqueId"),
}


def post_xml(client: As, xml: bytes) -> TestResponse:
    """An ITI-65 sent as FHIR XML, as the NIST tool sends it."""
    headers = {**client.headers, "Content-Type": FHIR_XML, "Accept": "application/fhir+json"}
    return client.client.open("/fhir/", method="POST", data=xml, headers=headers)


#: Positive NIST cases whose fixture is no valid FHIR transaction: every entry is POSTed to its own
#: fullUrl (``request.url`` "urn:uuid:…") instead of to its resource type (R4 http.html §3.1.0.11).
NIST_FIXTURE_DEFECTS = {"minimal/Two_Documents_Submit": (400, "Bundle.entry[0].request.url")}


def test_every_nist_recipient_case_is_known() -> None:
    negatives = {c.id for c in NIST_CASES if c.expects_failure}
    assert negatives == set(NIST_REFUSALS)
    assert len(NIST_CASES) == 43
    assert set(NIST_FIXTURE_DEFECTS) <= {c.id for c in NIST_CASES if not c.expects_failure}


@pytest.mark.parametrize("case", [c for c in NIST_CASES if c.expects_failure], ids=lambda c: c.id)
def test_nist_negative_cases_are_refused_and_nothing_is_stored(
    world: World, pid: str, doctor: As, case: NistCase
) -> None:
    status, element = NIST_REFUSALS[case.id]
    before = versions(world)
    response = post_xml(doctor, case.bundle_xml(case.fixtures[0], f"Patient/{pid}"))
    refused(response, status, element)
    assert versions(world) == before


def test_nist_fixture_typo_alone_is_refused(world: World, pid: str, doctor: As) -> None:
    """Unrepaired, the NIST fixtures' repeated practiceSetting ``code`` is refused by the XML reader."""
    case = next(c for c in NIST_CASES if c.id == "comprehensive/1_Prerequisite_Single_Document_with_Binary")
    before = versions(world)
    response = post_xml(doctor, case.bundle_xml(case.fixtures[0], f"Patient/{pid}", repair=False))
    assert response.status_code == 400
    assert "practiceSetting.coding[0].code: element repeats" in issue(response)["diagnostics"]
    assert versions(world) == before


@pytest.mark.parametrize("case", [c for c in NIST_CASES if c.module.startswith("MHDPDBSuccess")], ids=lambda c: c.id)
def test_nist_positive_cases_are_accepted(world: World, pid: str, doctor: As, case: NistCase) -> None:
    """With DMP document codes (tests/document_codes.py): the comprehensive fixtures type their
    documents 34895-3 (not in JDV_J07) and classify them IHE ``REPORTS`` (no DMP class)."""
    before = versions(world)
    response = post_xml(doctor, nist_dmp_codes(case.bundle_xml(case.fixtures[0], f"Patient/{pid}")))
    if case.id in NIST_FIXTURE_DEFECTS:
        refused(response, *NIST_FIXTURE_DEFECTS[case.id], "is created by a POST to")
        assert versions(world) == before
        return
    targets = created(response)
    documents = [t for t in targets if t.startswith("DocumentReference/")]
    after = versions(world)
    assert after["DocumentReference"] == before["DocumentReference"] + len(documents) >= before["DocumentReference"] + 1
    assert after["List"] == before["List"] + 1


def test_nist_comprehensive_fixtures_carry_codes_the_dmp_refuses(world: World, pid: str, doctor: As) -> None:
    case = next(c for c in NIST_CASES if c.id == "comprehensive/1_Prerequisite_Single_Document_with_Binary")
    before = versions(world)
    response = post_xml(doctor, case.bundle_xml(case.fixtures[0], f"Patient/{pid}"))
    refused(response, 422, "Bundle.entry[0].resource.type", f"{LOINC}|34895-3 is not a document type of JDV_J07")
    second = response.get_json()["issue"][1]
    assert second["expression"] == ["Bundle.entry[0].resource.category[0]"]
    assert "urn:oid:1.3.6.1.4.1.19376.1.2.6.1|REPORTS is not a document class" in second["diagnostics"]
    assert versions(world) == before


def _nist_original(world: World, pid: str, doctor: As, case: NistCase) -> str:
    """Send a NIST case's original document, authored by the doctor, and return its id.

    The fixtures name no author; in a DMP only its author replaces a document (R19), so the
    DocumentReference gets the doctor as author here.
    """
    bundle = xml_to_json(nist_dmp_codes(case.bundle_xml(case.fixtures[0], f"Patient/{pid}")))
    entry_of(bundle, "DocumentReference")["resource"]["author"] = [
        {"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}
    ]
    targets = created(doctor.post("", bundle))
    return next(t for t in targets if t.startswith("DocumentReference/")).split("/")[1]


#: The uniqueId the NIST replace/addendum/transform fixtures give both their documents.
NIST_DOCUMENT_ID = b"urn:oid:1.2.129.6.58.92.88336.4"


@pytest.mark.parametrize("case", [c for c in NIST_CASES if c.module.startswith("Document")], ids=lambda c: c.id)
def test_nist_replace_addendum_and_transform(world: World, pid: str, doctor: As, case: NistCase) -> None:
    original = _nist_original(world, pid, doctor, case)
    follow_up = case.bundle_xml(case.fixtures[1], f"Patient/{pid}", f"DocumentReference/{original}")
    # The fixtures give the new document the original's uniqueId; with other content (the
    # addendum's) IHE refuses that (XDSNonIdenticalHash): the new document gets a uniqueId of its own.
    follow_up = follow_up.replace(NIST_DOCUMENT_ID, f"{NIST_DOCUMENT_ID}.{uuid.uuid4().int}".encode())
    targets = created(post_xml(doctor, nist_dmp_codes(follow_up)))
    new = stored(world, *next(t for t in targets if t.startswith("DocumentReference/")).split("/"))
    code = {"DocumentReplace": "replaces", "DocumentAddendum": "appends", "DocumentTransforms": "transforms"}
    assert new["relatesTo"][0]["code"] == code[case.module]
    assert new["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{original}"
    old = stored(world, "DocumentReference", original)
    assert old["status"] == ("superseded" if case.module == "DocumentReplace" else "current")


# -------------------------------------------------------------------------- content and metadata


def test_binary_size_mismatch_is_refused(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]["size"] = 999
    before = versions(world)
    refused(
        doctor.post("", bundle),
        422,
        "Bundle.entry[1].resource.content[0].attachment.size",
        "999, but Bundle.entry[2].resource holds 12 bytes",
    )
    assert versions(world) == before


def test_binary_hash_mismatch_is_refused(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]["hash"] = sha1(b"something else")
    before = versions(world)
    response = doctor.post("", bundle)
    first = refused(response, 422, "Bundle.entry[1].resource.content[0].attachment.hash")
    assert f"the SHA-1 of Bundle.entry[2].resource is {sha1(b'Compte rendu')}" in first["diagnostics"]
    assert versions(world) == before


def test_size_and_hash_are_optional_for_ihe_comprehensive(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    del attachment["size"], attachment["hash"]
    assert len(created(doctor.post("", bundle))) == 3


def test_a_cda_that_contradicts_its_document_reference_is_refused(world: World, pid: str, doctor: As) -> None:
    data = cda_of(type_code="34133-9")
    bundle = submission(pid, data, content_type="text/xml", masterIdentifier=CDA_MASTER)
    before = versions(world)
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.type", "11488-4 but the CDA says 34133-9")
    assert versions(world) == before


def test_a_cda_about_another_patient_is_refused(world: World, pid: str, doctor: As) -> None:
    data = cda_of(ins="279035121518989")
    bundle = submission(pid, data, content_type="application/xml", masterIdentifier=CDA_MASTER)
    first = refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.subject")
    assert f"INS {INS_SYSTEM}|{INS} but the CDA says {INS_SYSTEM}|279035121518989" in first["diagnostics"]


def test_a_cda_by_another_author_is_refused(world: World, pid: str, doctor: As) -> None:
    data = cda_of(author=DR_2)
    bundle = submission(pid, data, content_type="text/xml", masterIdentifier=CDA_MASTER)
    refused(
        doctor.post("", bundle),
        422,
        "Bundle.entry[1].resource.author",
        f"idNatPs {DR} but the CDA's authors are {DR_2}",
    )


def test_a_cda_that_agrees_is_accepted(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid, cda_of(), content_type="text/xml", masterIdentifier=CDA_MASTER)
    assert len(created(doctor.post("", bundle))) == 3


def minimal_submission(pid: str, data: bytes, **document: Any) -> dict[str, Any]:
    """An ITI-65 of one CDA under the IHE Minimal profiles, its DocumentReference left for the CDA
    to complete (``document`` as :func:`submission`'s)."""
    return submission(
        pid, data, content_type="text/xml", profile="Minimal", masterIdentifier=CDA_MASTER, contained=None, **document
    )


def test_minimal_metadata_is_completed_from_the_cda(world: World, pid: str, doctor: As) -> None:
    data = cda_of()
    bundle = minimal_submission(pid, data, type=None, category=None, date=None, author=None, context=None)
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]
    del attachment["attachment"]["size"], attachment["attachment"]["hash"], attachment["format"]
    targets = created(doctor.post("", bundle))
    document = stored(world, *targets[1].split("/"))
    assert document["type"]["coding"][0]["code"] == CR_CONSULTATION
    assert document["date"] == "2022-01-01T12:00:00+01:00"
    role = next(c for c in document["contained"] if c["id"] == document["author"][0]["reference"][1:])
    assert role["identifier"] == [{"system": IDNATPS_SYSTEM, "value": DR}]
    assert document["content"][0]["attachment"]["size"] == len(data)
    assert document["content"][0]["attachment"]["hash"] == sha1(data)
    assert document["context"]["sourcePatientInfo"]["reference"].startswith("#")
    # What the submission does say is kept (the CDA's label would carry a display): only what it
    # leaves out is filled in.
    assert document["securityLabel"] == [coding(CONFIDENTIALITY, "N")]


def test_minimal_metadata_completed_into_an_invalid_resource_is_refused(world: World, pid: str, doctor: As) -> None:
    """The R4 check of an ITI-65 runs once, before the transaction, and the entries' creates do not
    repeat it; a minimal DocumentReference completed from its CDA after that check is validated
    again as completed: here the CDA's service period starts after the end the submission gives."""
    service = "<documentationOf><serviceEvent><effectiveTime><low value='20220101'/></effectiveTime>"
    data = cda_of().replace(b"  <component>", f"{service}</serviceEvent></documentationOf>\n  <component>".encode())
    bundle = minimal_submission(pid, data, context={"period": {"end": "2000-01-01"}})
    before = versions(world)
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource", "per-1")
    assert versions(world) == before


def test_a_reference_to_an_entry_of_a_type_the_element_refuses_is_refused(world: World, pid: str, doctor: As) -> None:
    """Checked once, before the transaction rewrites ``urn:uuid:`` references: the target's type
    is the entry's, so an author pointing at the Bundle's Binary is refused as ``Binary/id`` would be."""
    bundle = submission(pid)
    binary = entry_of(bundle, "Binary")["fullUrl"]
    entry_of(bundle, "DocumentReference")["resource"]["author"] = [{"reference": binary}]
    before = versions(world)
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.author[0].reference", "reference to Binary")
    assert versions(world) == before


def test_comprehensive_metadata_is_not_completed_from_the_cda(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid, cda_of(), content_type="text/xml", type=None, masterIdentifier=CDA_MASTER)
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.type", "required by IHE.MHD.UnContained")


def test_the_documents_must_be_listed_by_the_submission_set(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    entry_of(bundle, "List")["resource"]["entry"] = [{"item": {"reference": entry_of(bundle, "Binary")["fullUrl"]}}]
    before = versions(world)
    response = doctor.post("", bundle)
    refused(response, 400, "Bundle.entry[0].resource.entry[0].item", "is no DocumentReference or Folder of this Bundle")
    assert len(response.get_json()["issue"]) == 2  # and the document is listed nowhere
    assert versions(world) == before


def test_exactly_one_submission_set(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    second = copy.deepcopy(entry_of(bundle, "List"))
    second["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    bundle["entry"].append(second)
    refused(doctor.post("", bundle), 400, "Bundle.entry:SubmissionSet", "requires 1..1 List entries")


def test_an_attachment_must_point_at_content_of_the_bundle_or_server(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment["url"] = "urn:uuid:00000000-0000-4000-8000-00000000dead"
    refused(doctor.post("", bundle), 400, "Bundle.entry[1].resource.content[0].attachment.url", "is no Binary")
    attachment["url"] = "https://elsewhere.example/Binary/1"
    refused(
        doctor.post("", bundle), 422, "Bundle.entry[1].resource.content[0].attachment.url", "of this Bundle or server"
    )


def test_a_resource_declaring_a_profile_of_another_type_is_refused(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    entry_of(bundle, "DocumentReference")["resource"]["meta"]["profile"].append(f"{MHD}IHE.MHD.Minimal.SubmissionSet")
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.meta.profile", "is a profile of List")


def test_pdsm_requirements_apply_to_a_pdsm_bundle(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    bundle["meta"]["profile"] = [f"{PDSM}pdsm-comprehensive-provide-document-bundle"]
    response = doctor.post("", bundle)
    assert response.status_code == 422
    named = {i["expression"][0] for i in response.get_json()["issue"]}
    assert {
        "Bundle.entry[1].resource.custodian",
        "Bundle.entry[1].resource.content[0].attachment.title",
        "Bundle.entry[1].resource.context.period",
        "Bundle.entry[0].resource.source",
        "Bundle.entry[0].resource.contained",
    } <= named


def test_a_batch_is_never_an_iti65(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    bundle["type"] = "batch"
    refused(doctor.post("", bundle), 400, "Bundle.type", 'requires "transaction"')


# -------------------------------------------------------------------------- the patient


def test_the_subject_must_be_a_known_patient(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid, subject={"reference": "Patient/unknown"})
    before = versions(world)
    refused(doctor.post("", bundle), 422, "Bundle.entry[1].resource.subject", "Patient/unknown is not known here")
    assert versions(world) == before


def test_a_closed_dmp_takes_no_document(world: World, pid: str) -> None:
    closed = world.seed_patient("285037512345787", active=False)
    response = world.doctor(DR, "285037512345787").post("", submission(closed))
    assert response.status_code == 403  # R2: refused before anything runs


def test_one_patient_per_submission(fhir: Fhir) -> None:
    """With the open gatekeeper (every patient visible), two known patients are still refused."""
    first = fhir.create({"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": INS}]})["id"]
    second = fhir.create({"resourceType": "Patient", "name": [{"family": "Other"}]})["id"]
    bundle = submission(first, subject={"reference": f"Patient/{second}"})
    response = fhir.request("POST", "", bundle)
    refused(
        response, 422, "Bundle.entry[1].resource.subject", f"Patient/{second}, but Bundle.entry[0].resource.subject"
    )
    assert fhir.search("DocumentReference")["total"] == 0


def test_a_closed_patient_is_refused_by_the_recipient_itself(fhir: Fhir) -> None:
    """R2 holds for an ITI-65 whatever the gatekeeper (here the open one)."""
    closed = fhir.create({"resourceType": "Patient", "active": False})["id"]
    refused(fhir.request("POST", "", submission(closed)), 403, "Bundle.entry[0].resource.subject", "is closed (R2)")
    assert fhir.search("List")["total"] == 0


# -------------------------------------------------------------------------- replacement


def test_replacement_supersedes_the_old_document_atomically(world: World, pid: str, doctor: As) -> None:
    old = world.seed_document(pid, author=DR)
    bundle = submission(pid, relatesTo=replacing(old))
    targets = created(doctor.post("", bundle))
    superseded = stored(world, "DocumentReference", old)
    assert (superseded["status"], superseded["meta"]["versionId"]) == ("superseded", "2")
    assert stored(world, *targets[1].split("/"))["relatesTo"] == replacing(old)
    # The response has one entry per request entry: the supersession is no entry of its own.
    assert len(targets) == 3
    # A superseded document is replaced no more.
    again = doctor.post("", submission(pid, relatesTo=replacing(old)))
    refused(again, 422, "Bundle.entry[1].resource.relatesTo[0].target", "'superseded': only a current document")


def test_an_author_without_access_to_the_record_still_replaces(world: World, pid: str) -> None:
    """R15 lets any professional add a document and R19 its author replace it; R10 lets the author
    see it: no access Consent is needed for that."""
    outsider = "810000000099"
    old = world.seed_document(pid, author=outsider)
    bundle = submission(pid, author_id=outsider, relatesTo=replacing(old))
    created(world.doctor(outsider, INS).post("", bundle))
    assert stored(world, "DocumentReference", old)["status"] == "superseded"


def test_replacement_is_refused_for_a_non_author(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    before = versions(world)
    response = world.doctor(DR_2, INS).post("", submission(pid, author_id=DR_2, relatesTo=replacing(old)))
    assert response.status_code == 403 and issue(response)["code"] == "forbidden"
    assert "only a document's author replaces it" in issue(response)["diagnostics"]
    assert stored(world, "DocumentReference", old)["status"] == "current"
    assert versions(world) == before


def test_replacement_is_refused_for_a_feed(world: World, pid: str) -> None:
    old = world.seed_document(pid, author=DR)
    response = world.as_("TCU", patient=INS).post("", submission(pid, relatesTo=replacing(old)))
    assert response.status_code == 403
    assert stored(world, "DocumentReference", old)["status"] == "current"


def test_replacement_of_another_patients_document_is_refused(world: World, pid: str, doctor: As) -> None:
    """Another patient's document, even the doctor's own, is answered as one that does not exist."""
    other = world.seed_patient("285037512345787")
    theirs = world.seed_document(other, author=DR)
    response = doctor.post("", submission(pid, relatesTo=replacing(theirs)))
    first = refused(response, 422, "Bundle.entry[1].resource.relatesTo[0].target", "is no document of this patient")
    response = doctor.post("", submission(pid, relatesTo=replacing("nowhere")))
    assert issue(response) == {**first, "diagnostics": first["diagnostics"].replace(theirs, "nowhere")}


def test_a_bundle_that_patches_the_replaced_document_otherwise_is_rolled_back(
    world: World, pid: str, doctor: As
) -> None:
    old = world.seed_document(pid, author=DR)
    bundle = submission(pid, relatesTo=replacing(old))
    patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "operation",
                        "part": [
                            {"name": "type", "valueCode": "replace"},
                            {"name": "path", "valueString": "DocumentReference.status"},
                            {"name": "value", "valueCode": patch[0]["value"]},
                        ],
                    }
                ],
            },
            "request": {"method": "PATCH", "url": f"DocumentReference/{old}"},
        }
    )
    before = versions(world)
    response = doctor.post("", bundle)
    refused(
        response,
        422,
        "Bundle.entry[1].resource.relatesTo[0].target",
        f"the transaction leaves DocumentReference/{old} 'entered-in-error'",
    )
    assert stored(world, "DocumentReference", old)["status"] == "current"
    assert versions(world) == before


# -------------------------------------------------------------------------- plain transactions


def test_a_plain_transaction_is_no_iti65(world: World, pid: str, doctor: As) -> None:
    """No MHD profile, no MHD content: the IHE ``dummy`` example, which MHD would refuse (no
    masterIdentifier, no SubmissionSet), is stored as a FHIR transaction (with DMP codes)."""
    bundle = dmp_codes(example(EXAMPLES / "ihe-mhd/examples/Bundle-ex-dummyBundleDocAndBinary.json", pid))
    entry_of(bundle, "DocumentReference")["resource"]["subject"] = {"reference": f"Patient/{pid}"}
    targets = created(doctor.post("", bundle))
    assert stored(world, *targets[0].split("/"))["status"] == "current"


def test_mhd_content_without_a_bundle_profile_is_refused(world: World, pid: str, doctor: As) -> None:
    bundle = submission(pid)
    del bundle["meta"]
    refused(
        doctor.post("", bundle), 400, "Bundle.meta.profile", "an ITI-65 Provide Document Bundle declares its profile"
    )
