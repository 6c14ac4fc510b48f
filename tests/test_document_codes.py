"""What a DocumentReference says it is (CONTRACT §5): ``type`` from JDV_J07, ``category`` a DMP
class (JDV_J57), and the category the class of the type (the ConceptMap the R10 matrix reads).

Every write path is exercised over HTTP in a DMP world (tests/dmp.py): create, update, patch, a
plain transaction, ITI-65, ITI-105. A refusal is a 422 naming the element and the code, and leaves
nothing stored. The examples of the reference data are pinned: which carry codes the DMP refuses,
and why (tests/document_codes.py repairs them where other tests run them).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import ACCESS, IDNATPS_SYSTEM
from fhir_server.dmp.documents.codes import DocumentCodes
from fhirmodel.terminology import Terminology
from storage.query import OPEN_SCOPE
from tests.dmp import LOINC, As, World
from tests.document_codes import CODES, nist_dmp_codes
from tests.nist_mhd import cases
from tests.paths import EXAMPLES, HL7_EXAMPLES, SHARED_DATA, example_transaction_bundles
from tests.test_mhd_provide import DR, INS, submission

TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
#: A compte rendu de consultation (class 10), a synthèse médicale (class 11).
CONSULTATION, SUMMARY = (LOINC, "11488-4"), (LOINC, "60591-5")
#: LOINC "Discharge summary": a real LOINC code, but no CI-SIS document type.
NOT_IN_J07 = (LOINC, "28655-9")
#: In JDV_J07 but of no DMP class (JDV_J66 has no class for it).
CLASSLESS = (LOINC, "28617-9")


@pytest.fixture
def pid(world: World) -> str:
    """The patient of the ITI-65 tests' examples, who granted access to the doctor they name."""
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
    return world.seed_patient(INS)


@pytest.fixture
def doctor(world: World, pid: str) -> As:
    return world.doctor(DR, INS)


def concept(code: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": code[0], "code": code[1]}]}


def document(pid: str, kind: tuple[str, str] | None = CONSULTATION, *classes: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{pid}"},
        "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}],
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"CR").decode()}}],
        **extra,
    }
    if kind:
        doc["type"] = concept(kind)
    if classes:
        doc["category"] = [concept((TRE_A03, c)) for c in classes]
    return doc


def refused(response: TestResponse, *problems: tuple[str, str]) -> None:
    """A 422 whose issues name exactly these elements, in order, each message holding its words."""
    assert response.status_code == 422, response.get_data(as_text=True)
    issues = response.get_json()["issue"]
    assert [(i["code"], i["expression"]) for i in issues] == [("code-invalid", [e]) for e, _ in problems], issues
    for issue, (_, words) in zip(issues, problems, strict=True):
        assert words in issue["diagnostics"], issue


def documents_stored(world: World) -> int:
    return world.store.history(OPEN_SCOPE, "DocumentReference", count=1).total


# -------------------------------------------------------------------------- the terminology


def test_the_value_sets_and_the_map_are_the_ig_data() -> None:
    """The sets the check uses are exactly the ig/ data (J07 as built from the SVS file)."""
    assert len(CODES.types) == 114 and len(CODES.classes) == 11
    assert CONSULTATION in CODES.types and NOT_IN_J07 not in CODES.types and CLASSLESS in CODES.types
    assert (TRE_A05, "EXPPAT_1") in CODES.types
    assert CODES.class_of(*CONSULTATION) == {(TRE_A03, "10")}
    assert CODES.class_of(*SUMMARY) == {(TRE_A03, "11")}
    assert CODES.class_of(*CLASSLESS) == frozenset()


def test_without_the_data_the_server_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JDV-J07-XdsTypeCode-CISIS"):
        DocumentCodes.of(Terminology([]))


# -------------------------------------------------------------------------- create


def test_a_document_with_dmp_codes_is_created(world: World, pid: str, doctor: As) -> None:
    for doc in (
        document(pid, CONSULTATION, "10"),
        document(pid, SUMMARY),  # a category is not required
        document(pid, None),  # nor a type: minimal metadata (invisible to the matrix, seen by its author)
        document(pid, CLASSLESS, "11"),  # a type of no class: the category cannot disagree with it
    ):
        response = doctor.post("DocumentReference", doc)
        assert response.status_code == 201, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("doc", "problems"),
    [
        (
            lambda pid: document(pid, NOT_IN_J07),
            [("DocumentReference.type", "http://loinc.org|28655-9 is not a document type of JDV_J07")],
        ),
        (
            lambda pid: document(pid, ("urn:oid:2.16.840.1.113883.6.1", "11488-4")),  # LOINC, by its OID
            [("DocumentReference.type", "urn:oid:2.16.840.1.113883.6.1|11488-4 is not a document type")],
        ),
        (
            lambda pid: document(pid, None, type={"coding": [{"code": "11488-4"}]}),  # no system: not LOINC's
            [("DocumentReference.type", "|11488-4 is not a document type")],
        ),
        (
            lambda pid: document(pid, None, type={"text": "Compte rendu"}),
            [("DocumentReference.type", "no coding: a document type is a code of JDV_J07")],
        ),
        (
            lambda pid: document(pid, CONSULTATION, category=[concept((LOINC, "11369-6"))]),
            [("DocumentReference.category[0]", "http://loinc.org|11369-6 is not a document class of JDV_J57")],
        ),
        (
            lambda pid: document(pid, CONSULTATION, "99"),  # JDV_J06's "Document technique", no DMP class
            [("DocumentReference.category[0]", f"{TRE_A03}|99 is not a document class")],
        ),
        (
            lambda pid: document(pid, CONSULTATION, "11"),
            [("DocumentReference.category[0]", "class 11 disagrees with DocumentReference.type, whose class is 10")],
        ),
        (
            lambda pid: document(pid, CONSULTATION, "10", "11"),
            [("DocumentReference.category[1]", "class 11 disagrees")],
        ),
        (
            lambda pid: document(pid, NOT_IN_J07, category=[concept((TRE_A03, "42")), {"text": "?"}]),
            [
                ("DocumentReference.type", "28655-9 is not a document type"),
                ("DocumentReference.category[1]", "no coding: a document class is a code of JDV_J57"),
            ],
        ),
    ],
    ids=[
        "outside-j07",
        "system-by-oid",
        "no-system",
        "text-only",
        "loinc-category",
        "class-99",
        "disagreeing",
        "two",
        "several",
    ],
)
def test_a_document_with_other_codes_is_refused(
    world: World, pid: str, doctor: As, doc: Any, problems: list[tuple[str, str]]
) -> None:
    before = documents_stored(world)
    refused(doctor.post("DocumentReference", doc(pid)), *problems)
    assert documents_stored(world) == before


def test_the_codes_are_checked_for_every_writer(world: World, pid: str) -> None:
    """A feed, the patient: the same 422 before any rule about who they are."""
    feed = world.as_("TCU", patient=INS)
    refused(feed.post("DocumentReference", document(pid, NOT_IN_J07)), ("DocumentReference.type", "28655-9"))
    patient = world.patient(INS)
    mine = document(pid, (TRE_A05, "EXPPAT_1"), "10", author=[{"reference": f"Patient/{pid}"}])
    refused(patient.post("DocumentReference", mine), ("DocumentReference.category[0]", "class 10 disagrees"))


def test_what_the_professionals_see_follows_the_checked_codes(world: World, pid: str, doctor: As) -> None:
    """Why the check exists: a type outside the value set would have been stored and then shown to
    no professional but its author; a document the server takes is read by whom the matrix says."""
    created = doctor.post("DocumentReference", document(pid, CONSULTATION, "10")).get_json()["id"]
    colleague = "810000000002"
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, colleague))
    found = world.doctor(colleague, INS).ids(f"DocumentReference?patient={pid}")
    assert found == {created}


# -------------------------------------------------------------------------- update and patch


def test_an_update_is_checked_when_it_changes_the_codes(world: World, pid: str, doctor: As) -> None:
    created = doctor.post("DocumentReference", document(pid, CONSULTATION, "10")).get_json()
    bad = {**created, "type": concept(NOT_IN_J07)}
    refused(doctor.put(f"DocumentReference/{created['id']}", bad), ("DocumentReference.type", "28655-9"))
    disagreeing = {**created, "category": [concept((TRE_A03, "11"))]}
    refused(doctor.put(f"DocumentReference/{created['id']}", disagreeing), ("DocumentReference.category[0]", "11"))
    fixed = {**created, "type": concept(SUMMARY), "category": [concept((TRE_A03, "11"))]}
    assert doctor.put(f"DocumentReference/{created['id']}", fixed).status_code == 200
    current = world.store.read("DocumentReference", created["id"], OPEN_SCOPE).json()
    assert (current["type"], current["meta"]["versionId"]) == (concept(SUMMARY), "2")


def test_a_patch_is_checked(world: World, pid: str, doctor: As) -> None:
    rid = doctor.post("DocumentReference", document(pid, CONSULTATION, "10")).get_json()["id"]
    patch = [{"op": "replace", "path": "/type/coding/0/code", "value": "28655-9"}]
    refused(
        doctor.request("PATCH", f"DocumentReference/{rid}", patch, headers=JSON_PATCH),
        ("DocumentReference.type", "28655-9"),
    )
    patch = [{"op": "replace", "path": "/category/0/coding/0/code", "value": "42"}]
    refused(
        doctor.request("PATCH", f"DocumentReference/{rid}", patch, headers=JSON_PATCH),
        ("DocumentReference.category[0]", "42"),
    )
    assert world.store.read("DocumentReference", rid, OPEN_SCOPE).version == 1


def test_a_stored_document_is_not_judged_again_for_codes_it_keeps(world: World, pid: str) -> None:
    """A document stored before the check (here seeded) keeps its codes: the patient may still
    archive it, which changes nothing of what it says it is."""
    legacy = world.seed_document(pid, NOT_IN_J07[1], author=DR)
    patient = world.patient(INS)
    current = patient.get(f"DocumentReference/{legacy}").get_json()
    archived = {
        **current,
        "extension": [{"url": "https://dmp.example.org/fhir/StructureDefinition/dmp-archived", "valueBoolean": True}],
    }
    assert patient.put(f"DocumentReference/{legacy}", archived).status_code == 200
    # Its author changing the type must give one the DMP takes.
    author = world.doctor(DR, INS)
    current = author.get(f"DocumentReference/{legacy}").get_json()
    refused(
        author.put(f"DocumentReference/{legacy}", {**current, "type": concept((LOINC, "34895-3"))}),
        ("DocumentReference.type", "34895-3"),
    )


# -------------------------------------------------------------------------- transactions, MHD


def test_a_plain_transaction_entry_is_checked(world: World, pid: str, doctor: As) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": document(pid, SUMMARY, "11"), "request": {"method": "POST", "url": "DocumentReference"}},
            {"resource": document(pid, NOT_IN_J07), "request": {"method": "POST", "url": "DocumentReference"}},
        ],
    }
    before = documents_stored(world)
    response = doctor.post("", bundle)
    refused(
        response,
        (
            "Bundle.entry[1].resource.type",
            "Bundle.entry[1] (POST DocumentReference): DocumentReference.type: http://loinc.org|28655-9",
        ),
    )
    assert documents_stored(world) == before


def test_an_iti65_is_checked(world: World, pid: str, doctor: As) -> None:
    before = documents_stored(world)
    bundle = submission(pid, type=concept(NOT_IN_J07), category=[concept((TRE_A03, "10"))])
    refused(doctor.post("", bundle), ("Bundle.entry[1].resource.type", "28655-9 is not a document type of JDV_J07"))
    bundle = submission(pid, category=[concept((TRE_A03, "11"))])
    refused(doctor.post("", bundle), ("Bundle.entry[1].resource.category[0]", "class 11 disagrees"))
    assert documents_stored(world) == before


def test_an_iti105_is_checked(world: World, pid: str, doctor: As) -> None:
    """Simplified publish: the document and its Binary, both refused."""
    binaries = world.store.history(OPEN_SCOPE, "Binary", count=1).total
    refused(
        doctor.post("DocumentReference", document(pid, SUMMARY, "10")), ("DocumentReference.category[0]", "class 10")
    )
    assert world.store.history(OPEN_SCOPE, "Binary", count=1).total == binaries


# -------------------------------------------------------------------------- the examples


def _examples() -> dict[str, dict[str, Any]]:
    """Every example DocumentReference of the reference data, alone or in a transaction Bundle."""
    found: dict[str, dict[str, Any]] = {}
    folders = [EXAMPLES / f"{f}/examples" for f in ("ihe-mhd", "ans-pdsm", "ans-pdsm4dmp")]
    folders += [SHARED_DATA / "fhir-examples", HL7_EXAMPLES]
    for path in sorted(p for folder in folders for p in folder.glob("*.json")):
        resource = json.loads(path.read_text())
        folder = path.parent.parent if path.parent.name in ("examples", "resources") else path.parent
        name = f"{folder.name}/{path.stem}"
        if resource.get("resourceType") == "DocumentReference":
            found[name] = resource
        elif path in example_transaction_bundles():
            for i, entry in enumerate(resource["entry"]):
                if (entry.get("resource") or {}).get("resourceType") == "DocumentReference":
                    found[f"{name}[{i}]"] = entry["resource"]
    return found


CATEGORY_11369 = ("DocumentReference.category[0]", "http://loinc.org|11369-6 is not a document class")
TYPE_55107 = ("DocumentReference.type", "http://loinc.org|55107-7 is not a document type")
#: The examples whose codes the DMP refuses, and why. The IHE MHD examples classify with LOINC
#: 11369-6 (no DMP class) and some type with LOINC codes outside JDV_J07 (55107-7, 28655-9); the ANS
#: drafts give the class of another type (34133-9 is a synthèse, 11; 11488-4 a compte rendu, 10) or
#: a class code outside TRE_A03's DMP classes ("03" for a prescription); the HL7 R4 example types
#: with LOINC 34108-1 and classifies with an IHE connectathon code.
EXAMPLE_PROBLEMS = {
    "ans-pdsm/DocumentReference-doc-old": [("DocumentReference.category[0]", "class 10 disagrees")],
    "ans-pdsm/DocumentReference-exemple-pdsm-documentreference": [
        ("DocumentReference.category[0]", "class 10 disagrees")
    ],
    "ans-pdsm/Bundle-bundle-exemple-comprehensiveprovidedocument-replace[1]": [
        ("DocumentReference.category[0]", "class 10 disagrees")
    ],
    "ans-pdsm4dmp/DocumentReference-doc-x-id": [("DocumentReference.category[0]", "class 11 disagrees")],
    "ans-pdsm4dmp/DocumentReference-example-annexe-docref-cda": [
        ("DocumentReference.category[0]", "class 11 disagrees")
    ],
    "ans-pdsm4dmp/DocumentReference-example-td3-1a-cr-consultation": [
        ("DocumentReference.category[0]", "class 11 disagrees")
    ],
    "ans-pdsm4dmp/DocumentReference-example-td3-1a-ordonnance": [
        ("DocumentReference.category[0]", f"{TRE_A03}|03 is not a document class")
    ],
    "ans-pdsm4dmp/Bundle-example-td2-1-remplacement[1]": [("DocumentReference.category[0]", "class 11 disagrees")],
    "ans-pdsm4dmp/Bundle-example-td2-iti65-lot-soumission[1]": [
        ("DocumentReference.category[0]", "class 11 disagrees")
    ],
    "fhir-examples/DocumentReference-doc-x-id": [("DocumentReference.category[0]", "class 11 disagrees")],
    "fhir-examples/Bundle-example-td2-iti65-lot-soumission[1]": [
        ("DocumentReference.category[0]", "class 11 disagrees")
    ],
    "hl7-fhir-r4-examples/DocumentReference-example": [
        ("DocumentReference.type", "http://loinc.org|34108-1 is not a document type"),
        ("DocumentReference.category[0]", "http://ihe.net/xds/connectathon/classCodes|History and Physical is not"),
    ],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceComprehensive": [TYPE_55107, CATEGORY_11369],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceComprehensiveDelayedAssembly": [TYPE_55107, CATEGORY_11369],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceComprehensiveOnDemand": [CATEGORY_11369],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceComprehensiveWithBinary": [CATEGORY_11369],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceUnContained": [TYPE_55107, CATEGORY_11369],
    "ihe-mhd/DocumentReference-ex-DocumentReferenceUnContainedFully": [TYPE_55107, CATEGORY_11369],
    "ihe-mhd/Bundle-ex-ProvideDocumentBundle-addToFolder[1]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleComplete[1]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleDocument[1]": [
        ("DocumentReference.type", "http://loinc.org|28655-9 is not a document type"),
        CATEGORY_11369,
    ],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleMultiple[1]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleMultiple[2]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleReplace[2]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-comprehensiveProvideDocumentBundleSimple[1]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-dummyBundleDocAndBinary[0]": [CATEGORY_11369],
    "ihe-mhd/Bundle-ex-unContainedComprehensiveProvideDocumentBundleComplete[1]": [CATEGORY_11369],
}


def test_the_examples_whose_codes_the_dmp_refuses() -> None:
    examples = _examples()
    assert set(EXAMPLE_PROBLEMS) <= set(examples)
    assert len(examples) == 39
    for name, resource in examples.items():
        found = CODES.problems(resource)
        expected = EXAMPLE_PROBLEMS.get(name, [])
        assert [where for where, _ in found] == [where for where, _ in expected], name
        for (_, message), (_, words) in zip(found, expected, strict=True):
            assert words in message, (name, message)


def test_the_nist_comprehensive_fixtures_type_outside_j07() -> None:
    """Every comprehensive NIST fixture types 34895-3 and classifies IHE REPORTS; repaired, none."""
    from fhir_server.fhir.formats.xml import xml_to_json

    seen = 0
    for case in cases():
        if not case.collection.endswith("comprehensive") or case.expects_failure:
            continue
        for fixture in case.fixtures[:1]:
            bundle = xml_to_json(case.bundle_xml(fixture, "Patient/p", "DocumentReference/d"))
            repaired = xml_to_json(nist_dmp_codes(case.bundle_xml(fixture, "Patient/p", "DocumentReference/d")))
            for entry, fixed in zip(bundle["entry"], repaired["entry"], strict=True):
                if entry["resource"]["resourceType"] != "DocumentReference":
                    continue
                seen += 1
                assert [w for w, _ in CODES.problems(entry["resource"])] == [
                    "DocumentReference.type",
                    "DocumentReference.category[0]",
                ]
                assert CODES.problems(fixed["resource"]) == []
    assert seen >= 5
