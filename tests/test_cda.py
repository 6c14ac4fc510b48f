"""CDA R2 ingestion (fhir_server.dmp.documents.cda): the ANS CI-SIS examples in ../shared/data/cda, the
DocumentReference derived from them, consistency checks, rendering, and hostile XML."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from lxml import etree

from fhir_server.dmp.documents.cda import (
    MAX_DEPTH,
    CdaDocument,
    CdaError,
    cda_to_html,
    check_against,
    document_reference_from_cda,
    hl7_ts_to_fhir,
    parse_cda,
    safe_xml,
)
from fhir_server.fhir.validation import ResourceValidator
from fhirmodel.errors import FhirError
from tests.paths import EXAMPLES, ROOT, SHARED_DATA

CDA_DIR = SHARED_DATA / "cda"
V3 = "urn:hl7-org:v3"
LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
TRE_R38 = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
TEST_INS = ("urn:oid:1.2.250.1.213.1.4.10", "279035121518989")
NIR = "urn:oid:1.2.250.1.213.1.4.8"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


# What each example says, read from the files: INS, type (system, code), title, effective time,
# the idNatPs of its authors, its DMP class (JDV_J66 → TRE_A03).
# fmt: off
EXPECTED: dict[str, tuple[tuple[str, str], tuple[str, str], str, str, list[str], str]] = {
    "AVC-SUNV_2022.01.xml": (TEST_INS, (LOINC, "34133-9"), "Fiche de sortie d'unité neuro-vasculaire",
                             "2018-10-03T11:17:00+01:00", ["801234567897"], "11"),
    "BIO-TROD_2024.01_Angine.xml": (TEST_INS, (LOINC, "96173-0"),
                                    "Test rapide d'orientation diagnostique : TROD Angine",
                                    "2024-01-06T11:36:23+01:00", ["807655473259"], "52"),
    "CNAM-HR_2021.01_sans-info.xml": (TEST_INS, (TRE_A05, "REMB"), "Données de remboursement",
                                      "2019-07-01T16:49:00+01:00", ["518003502400041/1.2.250.1.215.1.2"], "60"),
    "LDL-EES_2022.01.xml": (TEST_INS, (LOINC, "18761-7"), "Lettre de liaison à l'entrée en établissement de santé",
                            "2019-10-29T11:17:00+01:00", ["801234567897"], "11"),
    "LDL-SES_2022.01.xml": (TEST_INS, (LOINC, "11490-0"), "Lettre de liaison à la sortie de l'établissement de santé",
                            "2019-12-03T13:30:00+01:00", ["801234567897"], "10"),
    "VAC-NOTE_2023.01.xml": (TEST_INS, (LOINC, "87273-9"), "NOTE DE VACCINATION",
                             "2021-04-09T15:35:00+01:00", ["801234567897"], "52"),
    "VAC_2023.01.xml": (TEST_INS, (LOINC, "11369-6"), "Historique de vaccinations",
                        "2021-04-09T17:00:00+01:00", ["801234567897"], "52"),
    "VSM_1.4_2022.01.xml": (TEST_INS, (TRE_A05, "SYNTH"), "Synthèse Médicale",
                            "2020-03-12T11:17:00+01:00", ["801234567897"], "11"),
    "eDISP-MED_2024.01.xml": ((NIR, "277076322082910"), (LOINC, "60593-1"), "Dispensation médicamenteuse",
                              "2024-12-25T09:30:00+01:00", ["578435954900010/1.2.250.1.176.1", "807505123456"], "43"),
    "eP-MED-DM_2022.01_PosoNonStruct.xml": (TEST_INS, (LOINC, "57833-6"),
                                            "Prescription de médicaments et/ou de dispositifs médicaux",
                                            "2021-12-01T09:30:00+01:00", ["801234567897"], "42"),
}
# fmt: on
EXAMPLE_FILES = sorted(EXPECTED)
VALIDATOR = ResourceValidator(frozenset({"DocumentReference"}))
SHA1 = "A/hMRrv6Y15BjSM8kMLidrz+mHc="


def example(name: str) -> bytes:
    return (CDA_DIR / name).read_bytes()


def reference_for(doc: CdaDocument, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "patient_reference": {"reference": "Patient/p1"},
        "binary_url": "https://dmp.example.org/fhir/Binary/b1",
        "size": 1234,
        "sha1_b64": SHA1,
    }
    arguments.update(overrides)
    return document_reference_from_cda(doc, **arguments)


def make_cda(
    *,
    body: str | None = None,
    code: str = 'code="34133-9" codeSystem="2.16.840.1.113883.6.1" displayName="Synthèse"',
    effective: str = "20220101120000+0100",
    confidentiality: str = 'code="N" codeSystem="2.16.840.1.113883.5.25"',
    patient_id: str = '<id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>',
    author_id: str = '<id root="1.2.250.1.71.4.2.1" extension="801234567897"/>',
    title: str = "Compte rendu",
    declaration: str = '<?xml version="1.0" encoding="UTF-8"?>',
    component: str | None = None,
) -> str:
    """A small CI-SIS-like CDA; each part can be replaced to break it."""
    if body is None:
        body = "<section><title>Motif</title><text><paragraph>RAS</paragraph></text></section>"
    if component is None:
        component = f"<structuredBody><component>{body}</component></structuredBody>"
    return f"""{declaration}
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="1.2.250.1.213.1.1.1.99.1" extension="DOC-1"/>
  <code {code}/>
  <title>{title}</title>
  <effectiveTime value="{effective}"/>
  <confidentialityCode {confidentiality}/>
  <languageCode code="fr-FR"/>
  <recordTarget><patientRole>{patient_id}
    <patient><name><family qualifier="BR">DURAND</family><given>Anne</given></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19800101"/>
    </patient></patientRole></recordTarget>
  <author><time value="20220101120000+0100"/><assignedAuthor>{author_id}
    <code code="G15_10/SM26" codeSystem="1.2.250.1.213.1.1.4.5" displayName="Médecin - Médecine générale"/>
    <assignedPerson><name><given>Paul</given><family>MARTIN</family></name></assignedPerson>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1234567890"/><name>Cabinet</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <component>{component}</component>
</ClinicalDocument>
"""


def cda_error(data: bytes, **kwargs: Any) -> CdaError:
    with pytest.raises(CdaError) as caught:
        parse_cda(data, **kwargs)
    return caught.value


# -------------------------------------------------------------------------- the examples


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in CDA_DIR.glob("*.xml")) == EXAMPLE_FILES


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_header(name: str) -> None:
    ins, (system, code), title, effective, idnatps, _ = EXPECTED[name]
    doc = parse_cda(example(name))
    assert doc.patient_ins == ins
    assert doc.type_code[:2] == (system, code)
    assert doc.title == title
    assert doc.effective_time == effective
    assert [a.idnatps for a in doc.authors] == idnatps
    assert doc.confidentiality == (CONFIDENTIALITY, "N")
    assert doc.language == "fr-FR"
    root = name.split("_")[0]
    assert doc.document_id.startswith("urn:oid:1.2.250.1.213.1.1.1."), root


def test_example_details_avc() -> None:
    doc = parse_cda(example("AVC-SUNV_2022.01.xml"))
    author = doc.authors[0]
    assert author.name is not None and (author.name.family, author.name.given) == ("BIDEAULT", ("Jacques",))
    assert author.profession == (TRE_G15, "10", "Médecin")
    assert author.specialty == (TRE_R38, "SM32", None)
    assert author.role is not None and author.role[1:] == ("G15_10/SM32", "Médecin - Neurologie (SM)")
    assert author.organization is not None
    assert author.organization.identifier == ("urn:oid:1.2.250.1.71.4.2.2", "1750803447")
    assert doc.patient_name is not None and doc.patient_name.text == "DOMINIQUE MARIE-LOUISE PAT-TROIS"
    assert (doc.birth_time, doc.gender) == ("1979-03-28", "female")
    assert doc.document_id == "urn:oid:1.2.250.1.213.1.1.1.17.2022.1.1"
    assert (doc.set_id, doc.version_number) == ("urn:oid:1.2.250.1.213.1.1.1.17.2022.1", 1)
    assert doc.custodian is not None and doc.custodian.name == "Clinique du Belvédère"
    assert doc.facility_type is not None and doc.facility_type[1] == "SA04"
    assert doc.practice_setting is not None and doc.practice_setting[1] == "ETABLISSEMENT"
    assert doc.format_code is not None and doc.format_code[1] == "urn:asip:ci-sis:sunv:2013"
    assert doc.service_period == ("2018-10-03T12:00:00+01:00", "2018-10-03T12:00:00+01:00")


def test_example_details_others() -> None:
    pharmacist = parse_cda(example("BIO-TROD_2024.01_Angine.xml")).authors[0]
    assert pharmacist.profession == (TRE_G15, "21", "Pharmacien")
    assert pharmacist.specialty is None  # "G15_21/A" is a CNOP section, not a TRE_R38 specialty
    dispensation = parse_cda(example("eDISP-MED_2024.01.xml"))
    assert dispensation.authors[0].device == "Dossier Pharmaceutique"
    assert dispensation.authors[0].role is not None and dispensation.authors[0].role[1] == "DISPOSITIF"
    assert dispensation.format_code is not None and dispensation.format_code[1] == "urn:ihe:pharm:dis:2010"
    assert dispensation.patient_name is not None and dispensation.patient_name.family == "NESSI"
    insurer = parse_cda(example("CNAM-HR_2021.01_sans-info.xml"))
    assert insurer.service_period == ("2019-01-01T15:45:00+01:00", "2019-07-01T15:45:00+01:00")
    assert insurer.practice_setting is not None and insurer.practice_setting[1] == "AMO"
    assert insurer.legal_authenticator is not None and insurer.legal_authenticator.name is not None
    assert insurer.legal_authenticator.name.given == ()  # "." is the CI-SIS spelling of "unknown"
    synthesis = parse_cda(example("VSM_1.4_2022.01.xml"))
    assert synthesis.type_code == (TRE_A05, "SYNTH", "Synthèse")
    assert synthesis.authors[0].specialty == (TRE_R38, "SM26", None)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("20220101120000+0100", "2022-01-01T12:00:00+01:00"),
        ("20181003111700-0430", "2018-10-03T11:17:00-04:30"),
        ("201907011649+0100", "2019-07-01T16:49:00+01:00"),
        ("2022010112+0000", "2022-01-01T12:00:00+00:00"),
        ("20220101120000.25+0200", "2022-01-01T12:00:00.25+02:00"),
        ("19790328", "1979-03-28"),
        ("197903", "1979-03"),
        ("1979", "1979"),
        ("20220101120000", "2022-01-01"),  # a time without a zone is no FHIR dateTime: the date stays
        ("20221301", None),
        ("20220230", None),
        ("20240106113623+100", None),
        ("20220101250000+0100", None),
        ("20220101120000+1500", None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_hl7_ts_to_fhir(ts: str, expected: str | None) -> None:
    assert hl7_ts_to_fhir(ts) == expected


# -------------------------------------------------------------------------- DocumentReference


def concept_map_classes() -> dict[tuple[str, str], str]:
    concept_map = json.loads((ROOT / "ig" / "ConceptMap" / "ConceptMap-dmp-document-type-to-class.json").read_text())
    return {
        (group["source"], element["code"]): target["code"]
        for group in concept_map["group"]
        for element in group["element"]
        for target in element["target"]
        if target.get("code")
    }


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_document_reference_validates_and_has_its_class(name: str) -> None:
    data = example(name)
    doc = parse_cda(data)
    reference = reference_for(doc, size=len(data))
    VALIDATOR.validate(reference)
    class_code = EXPECTED[name][5]
    assert concept_map_classes()[doc.type_code[:2]] == class_code
    assert [[(c["system"], c["code"]) for c in cc["coding"]] for cc in reference["category"]] == [
        [(TRE_A03, class_code)]
    ]
    assert reference["masterIdentifier"] == {"system": "urn:ietf:rfc:3986", "value": doc.document_id}
    assert reference["status"] == "current"
    assert reference["type"]["coding"][0]["code"] == EXPECTED[name][1][1]
    assert reference["subject"] == {"reference": "Patient/p1"}
    assert reference["securityLabel"] == [{"coding": [{"system": CONFIDENTIALITY, "code": "N", "display": "normal"}]}]
    attachment = reference["content"][0]["attachment"]
    assert attachment == {
        "contentType": "text/xml",
        "language": "fr-FR",
        "url": "https://dmp.example.org/fhir/Binary/b1",
        "size": len(data),
        "hash": SHA1,
        "title": EXPECTED[name][2],
        "creation": EXPECTED[name][3],
    }
    assert reference["description"] == EXPECTED[name][2]
    assert check_against(doc, reference, doc.patient_ins) == []


def test_the_validator_does_reject_a_broken_reference() -> None:
    reference = reference_for(parse_cda(example("AVC-SUNV_2022.01.xml")))
    reference["status"] = "archived"
    with pytest.raises(FhirError):
        VALIDATOR.validate(reference)


def contained(reference: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    return next(r for r in reference["contained"] if f"#{r['id']}" == ref["reference"])


def test_document_reference_authors_and_context() -> None:
    reference = reference_for(parse_cda(example("AVC-SUNV_2022.01.xml")))
    role = contained(reference, reference["author"][0])
    assert role["resourceType"] == "PractitionerRole"
    assert role["identifier"] == [{"system": IDNATPS, "value": "801234567897"}]
    assert role["code"][0]["coding"][0] == {"system": TRE_G15, "code": "10", "display": "Médecin"}
    assert role["specialty"][0]["coding"][0] == {"system": TRE_R38, "code": "SM32"}
    practitioner = contained(reference, role["practitioner"])
    assert practitioner["identifier"] == [{"system": IDNATPS, "value": "801234567897"}]
    assert practitioner["name"] == [{"family": "BIDEAULT", "given": ["Jacques"]}]
    assert contained(reference, role["organization"])["name"] == "Clinique du Belvédère"
    assert reference["authenticator"] == reference["author"][0]
    custodian = contained(reference, reference["custodian"])
    assert custodian["identifier"] == [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1120456789"}]
    context = reference["context"]
    assert context["period"] == {"start": "2018-10-03T12:00:00+01:00", "end": "2018-10-03T12:00:00+01:00"}
    assert context["facilityType"]["coding"][0]["code"] == "SA04"
    assert context["practiceSetting"]["coding"][0]["code"] == "ETABLISSEMENT"
    source = contained(reference, context["sourcePatientInfo"])
    assert source["identifier"] == [{"system": TEST_INS[0], "value": TEST_INS[1]}]
    assert (source["birthDate"], source["gender"]) == ("1979-03-28", "female")
    assert reference["content"][0]["format"]["code"] == "urn:asip:ci-sis:sunv:2013"
    assert reference["date"] == "2018-10-03T11:17:00+01:00"


def test_document_reference_device_author() -> None:
    reference = reference_for(parse_cda(example("eDISP-MED_2024.01.xml")))
    device = contained(reference, reference["author"][0])
    assert device["resourceType"] == "Device"
    assert device["identifier"] == [{"system": IDNATPS, "value": "578435954900010/1.2.250.1.176.1"}]
    assert device["deviceName"] == [{"name": "Dossier Pharmaceutique", "type": "user-friendly-name"}]
    pharmacist = contained(reference, reference["author"][1])
    assert pharmacist["identifier"] == [{"system": IDNATPS, "value": "807505123456"}]


def test_document_reference_patient_author_and_unknown_type() -> None:
    data = make_cda(
        author_id='<id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>',
        code='code="99999-9" codeSystem="2.16.840.1.113883.6.1"',
        effective="20220101",
    ).encode()
    reference = reference_for(parse_cda(data))
    VALIDATOR.validate(reference)
    assert reference["author"] == [{"reference": "#patient"}]
    assert "category" not in reference  # not a DMP type: no class
    assert "date" not in reference  # an instant needs a time
    assert reference["content"][0]["attachment"]["creation"] == "2022-01-01"


def test_document_id_with_extension_is_root_caret_extension() -> None:
    doc = parse_cda(make_cda().encode())
    assert doc.document_id == "urn:oid:1.2.250.1.213.1.1.1.99.1^DOC-1"


# -------------------------------------------------------------------------- check_against


@pytest.fixture
def avc() -> CdaDocument:
    return parse_cda(example("AVC-SUNV_2022.01.xml"))


def test_no_disagreement_with_the_subject_named_by_identifier(avc: CdaDocument) -> None:
    reference = reference_for(avc, patient_reference={"identifier": {"system": TEST_INS[0], "value": TEST_INS[1]}})
    assert check_against(avc, reference, None) == []


def test_type_disagreement(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    reference["type"] = {"coding": [{"system": LOINC, "code": "11488-4"}]}
    assert check_against(avc, reference, TEST_INS) == ["DocumentReference.type: 11488-4 but the CDA says 34133-9"]
    reference["type"] = {"coding": [{"system": TRE_A05, "code": "SYNTH"}]}
    assert check_against(avc, reference, TEST_INS) == [
        f"DocumentReference.type: {TRE_A05}|SYNTH but the CDA says {LOINC}|34133-9"
    ]


@pytest.mark.parametrize(
    "subject",
    [
        {"identifier": {"system": NIR, "value": "123456789012345"}},
        {"reference": f"Patient?identifier={NIR}|123456789012345"},
        {"reference": "#other"},
    ],
)
def test_patient_disagreement_in_the_subject(avc: CdaDocument, subject: dict[str, Any]) -> None:
    reference = reference_for(avc, patient_reference=subject)
    reference["contained"].append(
        {"resourceType": "Patient", "id": "other", "identifier": [{"system": NIR, "value": "123456789012345"}]}
    )
    assert check_against(avc, reference, None) == [
        f"DocumentReference.subject: INS {NIR}|123456789012345 but the CDA says {TEST_INS[0]}|{TEST_INS[1]}"
    ]


def test_patient_disagreement_with_the_stored_patient(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    assert check_against(avc, reference, (NIR, "123456789012345")) == [
        f"DocumentReference.subject: INS {NIR}|123456789012345 but the CDA says {TEST_INS[0]}|{TEST_INS[1]}"
    ]
    # The same value under another INS system is another identifier (a test INS is no real NIR).
    assert check_against(avc, reference, (NIR, TEST_INS[1])) != []


def test_patient_disagreement_in_the_source_patient(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    source = contained(reference, reference["context"]["sourcePatientInfo"])
    source["identifier"] = [{"system": NIR, "value": "123456789012345"}]
    assert check_against(avc, reference, TEST_INS) == [
        f"DocumentReference.context.sourcePatientInfo: INS {NIR}|123456789012345 "
        f"but the CDA says {TEST_INS[0]}|{TEST_INS[1]}"
    ]


def test_patient_disagreement_when_the_cda_has_no_ins() -> None:
    doc = parse_cda(make_cda(patient_id='<id root="1.2.3.4" extension="IPP-1"/>').encode())
    assert doc.patient_ins is None
    problems = check_against(doc, reference_for(doc), TEST_INS)
    assert problems == [
        f"DocumentReference.subject: INS {TEST_INS[0]}|{TEST_INS[1]} but the CDA says nothing "
        "(no INS in recordTarget/patientRole/id)"
    ]
    with pytest.raises(CdaError, match=r"^recordTarget/patientRole/id: no INS \(urn:oid:1\.2\.250\.1\.213\.1\.4\.10"):
        doc.require_ins()


def test_author_disagreement(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    for resource in reference["contained"]:
        if resource["resourceType"] in ("Practitioner", "PractitionerRole"):
            resource["identifier"] = [{"system": IDNATPS, "value": "899700218896"}]
    assert check_against(avc, reference, TEST_INS) == [
        "DocumentReference.author: idNatPs 899700218896 but the CDA's authors are 801234567897"
    ]


def test_author_found_through_the_role_practitioner(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    role = contained(reference, reference["author"][0])
    del role["identifier"]  # only the Practitioner the role points at names the author
    assert check_against(avc, reference, TEST_INS) == []
    contained(reference, role["practitioner"])["identifier"] = [{"system": IDNATPS, "value": "899700218896"}]
    assert check_against(avc, reference, TEST_INS) == [
        "DocumentReference.author: idNatPs 899700218896 but the CDA's authors are 801234567897"
    ]


def test_author_named_inline(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    reference["author"] = [{"identifier": {"system": IDNATPS, "value": "801234567897"}}]
    assert check_against(avc, reference, TEST_INS) == []
    reference["author"] = [{"identifier": {"system": IDNATPS, "value": "800000000001"}}]
    assert check_against(avc, reference, TEST_INS) == [
        "DocumentReference.author: idNatPs 800000000001 but the CDA's authors are 801234567897"
    ]


def test_master_identifier_disagreement(avc: CdaDocument) -> None:
    reference = reference_for(avc)
    reference["masterIdentifier"]["value"] = "1.2.250.1.213.1.1.1.17.2022.1.1"  # same OID, no urn:oid: prefix
    assert check_against(avc, reference, TEST_INS) == []
    reference["masterIdentifier"]["value"] = "urn:oid:1.2.3"
    assert check_against(avc, reference, TEST_INS) == [
        "DocumentReference.masterIdentifier: urn:oid:1.2.3 but the CDA's id is urn:oid:1.2.250.1.213.1.1.1.17.2022.1.1"
    ]


def test_the_pdsm_example_contradicts_another_cda(avc: CdaDocument) -> None:
    path = EXAMPLES / "ans-pdsm4dmp" / "examples" / "DocumentReference-example-annexe-docref-cda.json"
    reference = json.loads(path.read_text(encoding="utf-8"))
    problems = check_against(avc, reference)
    assert [problem.split(":")[0] for problem in problems] == [
        "DocumentReference.masterIdentifier",
        "DocumentReference.subject",
        "DocumentReference.context.sourcePatientInfo",
        "DocumentReference.type",
        "DocumentReference.author",
    ]
    assert "DocumentReference.type: 11488-4 but the CDA says 34133-9" in problems


def test_malformed_reference_does_not_break_the_check(avc: CdaDocument) -> None:
    reference = {"contained": 5, "author": ["x", {"reference": ["#a"]}], "type": {"coding": "x"}, "subject": 3}
    assert check_against(avc, reference) == []


def test_omitted_elements_are_no_disagreement(avc: CdaDocument) -> None:
    assert check_against(avc, {"resourceType": "DocumentReference"}) == []


# -------------------------------------------------------------------------- rendering

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "body", "header", "h1", "h2", "h3", "h4", "h5", "h6", "dl", "dt", "dd",
    "section", "div", "p", "br", "span", "strong", "em", "u", "small", "sub", "sup", "ul", "ol", "li", "pre",
    "table", "caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "border", "colspan", "rowspan"}


def assert_safe_page(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    tree = lxml.html.document_fromstring(page)
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        assert element.tag in ALLOWED_TAGS, element.tag
        assert set(element.attrib) <= ALLOWED_ATTRIBUTES, (element.tag, dict(element.attrib))
    for meta in tree.iter("meta"):
        assert meta.get("http-equiv") in (None, "Content-Security-Policy")


def section_titles(data: bytes) -> list[str]:
    tree = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    return [" ".join("".join(t.itertext()).split()) for t in tree.iterfind(".//{urn:hl7-org:v3}section/{*}title")]


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_html_of_each_example(name: str) -> None:
    data = example(name)
    page = cda_to_html(data)
    assert_safe_page(page)
    titles = section_titles(data)
    assert titles
    for title in titles:
        assert html.escape(title, quote=False) in page
    assert html.escape(EXPECTED[name][2], quote=False) in page


def test_html_narrative_content() -> None:
    page = cda_to_html(example("BIO-TROD_2024.01_Angine.xml"))
    assert "<th>Résultat</th>" in page
    assert "<td><span>négatif</span></td>" in page
    assert "Pierre DIDOT, Pharmacien titulaire d'officine, Pharmacie des 4 cantons" in page
    assert "DOMINIQUE MARIE-LOUISE PAT-TROIS, né(e) le 28/03/1979, INS 279035121518989" in page
    assert "06/01/2024 11:36 (UTC+01:00)" in page


def test_html_is_safe_with_hostile_narrative(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    body = f"""<section ID="s1"><title>&lt;script&gt;alert(1)&lt;/script&gt;</title>
      <text>
        <paragraph styleCode="Bold" onclick="steal()">Texte
          <content styleCode="Bold" onmouseover="steal()">gras</content>
          <linkHtml href="javascript:steal()">lien</linkHtml></paragraph>
        <h:script xmlns:h="http://www.w3.org/1999/xhtml">steal()</h:script>
        <h:img xmlns:h="http://www.w3.org/1999/xhtml" src="https://evil.example/x.png" onerror="steal()"/>
        <xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{secret}" parse="text"/>
        <list listType="ordered"><caption>Liste</caption><item>un</item><item>deux</item></list>
        <table border="9" style="background:url(https://evil.example)"><caption>Tableau</caption>
          <tbody><tr><td colspan="2" rowspan="x" onclick="steal()">cellule</td></tr></tbody></table>
        <renderMultiMedia referencedObject="img1"/>
      </text></section>"""
    page = cda_to_html(make_cda(body=body).encode())
    assert_safe_page(page)
    for forbidden in ("steal", "onclick", "onmouseover", "onerror", "javascript", "evil.example", "TOP-SECRET"):
        assert forbidden not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>gras</strong>" in page
    assert "<ol><li>un</li><li>deux</li></ol>" in page
    assert '<td colspan="2">cellule</td>' in page
    assert '<table border="1"><caption>Tableau</caption>' in page
    assert "[contenu multimédia non affiché]" in page


def test_html_of_an_unstructured_text_body() -> None:
    encoded = base64.b64encode(b"Bonjour <b>tout</b> le monde").decode()
    component = f'<nonXMLBody><text mediaType="text/plain" representation="B64">{encoded}</text></nonXMLBody>'
    page = cda_to_html(make_cda(component=component).encode())
    assert_safe_page(page)
    assert "<pre>Bonjour &lt;b&gt;tout&lt;/b&gt; le monde</pre>" in page
    control = base64.b64encode(b"nul\x00 bell\x07").decode()
    component = f'<nonXMLBody><text mediaType="text/plain" representation="B64">{control}</text></nonXMLBody>'
    assert "<pre>nul\ufffd bell\ufffd</pre>" in cda_to_html(make_cda(component=component).encode())
    pdf = '<nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0=</text></nonXMLBody>'
    page = cda_to_html(make_cda(component=pdf).encode())
    assert "Ce document a un corps non structuré (application/pdf). Il n'est pas affiché ici." in page
    assert "JVBERi0" not in page


# -------------------------------------------------------------------------- hostile XML

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>
"""


def xxe_document(secret: Path) -> str:
    return make_cda(
        declaration=f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE ClinicalDocument [\n'
        f'  <!ENTITY xxe SYSTEM "file://{secret}">\n]>',
        title="&xxe;",
    )


def test_external_entity_is_refused_unread(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    error = cda_error(xxe_document(secret).encode())
    assert "DOCTYPE" in str(error)
    assert "TOP-SECRET" not in str(error)
    with pytest.raises(CdaError) as caught:
        cda_to_html(xxe_document(secret).encode())
    assert "TOP-SECRET" not in str(caught.value)


def test_the_parser_itself_resolves_nothing(tmp_path: Path) -> None:
    """Second line of defence, below the DOCTYPE refusal: the parser loads no DTD and resolves no
    entity, so even a document that got past the first check could not read a file."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a")
    root = safe_xml._parsed(xxe_document(secret).encode())
    assert "TOP-SECRET" not in etree.tostring(root, encoding="unicode")


def test_external_entity_to_etc_passwd() -> None:
    error = cda_error(xxe_document(Path("/etc/passwd")).encode())
    assert "root:" not in str(error)


def test_billion_laughs() -> None:
    error = cda_error(BILLION_LAUGHS.encode())
    assert "DOCTYPE" in str(error)
    assert "lollol" not in str(error)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_doctype_in_wide_encodings(encoding: str) -> None:
    text = BILLION_LAUGHS.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    data = text.encode(encoding)
    assert b"<!DOCTYPE" not in data  # invisible to a byte search
    assert "DOCTYPE" in str(cda_error(data))


def test_lowercase_doctype_is_refused_too() -> None:
    assert "DOCTYPE" in str(cda_error(BILLION_LAUGHS.replace("<!DOCTYPE", "<!doctype").encode()))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_cda_is_read(encoding: str) -> None:
    data = make_cda(declaration='<?xml version="1.0" encoding="UTF-16"?>', title="Été").encode(encoding)
    assert parse_cda(data).title == "Été"


def test_a_latin1_cda_is_read() -> None:
    data = make_cda(declaration='<?xml version="1.0" encoding="ISO-8859-1"?>', title="Été").encode("latin-1")
    assert parse_cda(data).title == "Été"


def test_unsupported_declared_encoding() -> None:
    data = make_cda(declaration='<?xml version="1.0" encoding="UTF-7"?>').encode()
    assert "encoding 'UTF-7' is not supported" in str(cda_error(data))


def test_undefined_entity_is_malformed() -> None:
    assert "not well-formed" in str(cda_error(make_cda(title="&xxe;").encode()))


def test_oversized_document() -> None:
    data = make_cda().encode() + b" " * (30 * 1024 * 1024)
    assert str(cda_error(data)) == f"the CDA is larger than {20 * 1024 * 1024} bytes"
    assert "larger than 1000 bytes" in str(cda_error(make_cda().encode(), max_bytes=1000))


@pytest.mark.parametrize("depth", [10_000, MAX_DEPTH + 20])
def test_deep_nesting(depth: int) -> None:
    body = "<section><text>" + "<content>" * depth + "x" + "</content>" * depth + "</text></section>"
    assert str(cda_error(make_cda(body=body).encode())) == f"the CDA is nested deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'<Patient xmlns="http://hl7.org/fhir"><id value="1"/></Patient>', "{http://hl7.org/fhir}Patient"),
        (b"<ClinicalDocument/>", "the root element is ClinicalDocument, not ClinicalDocument in urn:hl7-org:v3"),
        (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</ClinicalDocument>', "not well-formed XML"),
        (b'<ClinicalDocument xmlns="urn:hl7-org:v3">', "not well-formed XML"),
        (b"\x00\x01garbage", "not well-formed XML"),
        (b"\xff\xfe\x00", "not valid UTF-16-LE"),
        (b"   ", "the CDA is empty"),
    ],
)
def test_not_a_cda(data: bytes, message: str) -> None:
    assert message in str(cda_error(data))


def test_text_is_not_bytes() -> None:
    with pytest.raises(CdaError, match="bytes"):
        parse_cda(make_cda())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"code": 'nullFlavor="UNK"'}, "ClinicalDocument/code"),
        ({"effective": "2022-01-01"}, "ClinicalDocument/effectiveTime"),
        ({"confidentiality": 'code="X" codeSystem="2.16.840.1.113883.5.25"'}, "ClinicalDocument/confidentialityCode"),
        ({"confidentiality": 'code="N" codeSystem="1.2.3"'}, "ClinicalDocument/confidentialityCode"),
    ],
)
def test_unusable_header(change: dict[str, str], location: str) -> None:
    error = cda_error(make_cda(**change).encode())
    assert str(error).startswith(f"{location}: ")
    assert error.location == location


def references_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["reference"]} if isinstance(value.get("reference"), str) else set()
        return found.union(*(references_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(references_in(v) for v in value))
    return set()


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_contained_resource_is_referenced(name: str) -> None:
    """dom-3: a contained resource exists only because the DocumentReference points at it."""
    reference = reference_for(parse_cda(example(name)))
    ids = [f"#{resource['id']}" for resource in reference["contained"]]
    assert len(ids) == len(set(ids))
    assert set(ids) <= references_in(reference)


def test_the_callers_patient_reference_is_copied() -> None:
    subject = {"identifier": {"system": TEST_INS[0], "value": TEST_INS[1]}}
    reference = reference_for(parse_cda(example("VSM_1.4_2022.01.xml")), patient_reference=subject)
    reference["subject"]["identifier"]["value"] = "changed"
    assert subject["identifier"]["value"] == TEST_INS[1]


def test_format_code_of_an_unstructured_pdf_cda() -> None:
    pdf = '<nonXMLBody><text mediaType="application/pdf" representation="B64">JVBERi0=</text></nonXMLBody>'
    data = make_cda(component=pdf).replace(
        '<templateId root="1.2.250.1.213.1.1.1.1"/>',
        '<templateId root="1.2.250.1.213.1.1.1.1"/><templateId root="1.3.6.1.4.1.19376.1.2.20"/>',
    )
    doc = parse_cda(data.encode())
    assert doc.format_code == (
        "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
        "urn:ihe:iti:xds-sd:pdf:2008",
        None,
    )
    assert parse_cda(make_cda().encode()).format_code is None  # no known CI-SIS model
