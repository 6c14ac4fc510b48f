"""IHE MHD document publication and retrieval over HTTP, in the DMP world with real tokens:
ITI-106 Generate Metadata (``DocumentReference/$generate-metadata``), ITI-105 Simplified Publish
(a DocumentReference POSTed with its document inline) and ITI-68 Retrieve Document (the raw
Binary read).

The CDAs are the ANS CI-SIS examples of ``../shared/data/cda``; their patient carries a test INS
(``urn:oid:1.2.250.1.213.1.4.10``, one eDISP example an INS-NIR), so each DMP is seeded with the
INS ``parse_cda`` reads and the tokens name it in ``system|value`` form (CONTRACT §2).
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from contextlib import closing
from datetime import timedelta
from typing import Any, NamedTuple

import pytest
from werkzeug.test import TestResponse

from authz.consents import new_consent
from authz.terms import (
    ACCESS,
    BREAK_THE_GLASS,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    MASKED_FROM_PROFESSIONALS,
    REGULATION_CENTRE,
    VISIBILITY_SYSTEM,
)
from fhir_server.dmp.documents.cda import parse_cda
from fhir_server.dmp.documents.generate_metadata import GENERATE_METADATA
from storage.query import OPEN_SCOPE, Query
from tests.dmp import As, World
from tests.paths import SHARED_DATA

CDA_DIR = SHARED_DATA / "cda"
LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A06 = "https://mos.esante.gouv.fr/NOS/TRE_A06-FormatCodeComplementaire/FHIR/TRE-A06-FormatCodeComplementaire"
TRE_A11 = "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
RETRIEVE = {"Accept": "application/octet-stream"}  # a client asking for the document, not for FHIR

#: The professionals of the examples (their CDAs' authors) and one more with access to the DMP.
DR_DAVID = "801234567897"  # médecin, author of most examples
PHARMACIST_TROD = "807655473259"
PHARMACIST_DISP = "807505123456"
OTHER_DOCTOR = "810000000002"
#: A phrase of LDL-SES's narrative (not of its header): it must never be on disk in clear.
SECRET_PHRASE = b"cachexie/anorexie"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% compte rendu ZQXJ-7734 confidentiel\n%%EOF\n"


class Expected(NamedTuple):
    """What the DocumentReference of one example must say (read from the CDA and the JDV_J66 →
    TRE_A03 map by hand, not by the code under test)."""

    type: tuple[str, str]
    class_code: str
    date: str
    authors: list[str]  # idNatPs, in CDA order
    format: tuple[str, str]
    sender: str | None  # idNatPs of the professional sending it; None: a feed (TCU)
    profession: str = "10"


EXPECTED: dict[str, Expected] = {
    "AVC-SUNV_2022.01.xml": Expected(
        (LOINC, "34133-9"),
        "11",
        "2018-10-03T11:17:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:sunv:2013"),
        DR_DAVID,
    ),
    "BIO-TROD_2024.01_Angine.xml": Expected(
        (LOINC, "96173-0"),
        "52",
        "2024-01-06T11:36:23+01:00",
        [PHARMACIST_TROD],
        (TRE_A06, "urn:ans:ci-sis:trod:2024"),
        PHARMACIST_TROD,
        "21",
    ),
    "CNAM-HR_2021.01_sans-info.xml": Expected(
        (TRE_A05, "REMB"),
        "60",
        "2019-07-01T16:49:00+01:00",
        ["518003502400041/1.2.250.1.215.1.2"],
        (TRE_A06, "urn:asip:ci-sis:hr:2019"),
        None,
    ),
    "LDL-EES_2022.01.xml": Expected(
        (LOINC, "18761-7"),
        "11",
        "2019-10-29T11:17:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:ldl-ees:2017"),
        DR_DAVID,
    ),
    "LDL-SES_2022.01.xml": Expected(
        (LOINC, "11490-0"),
        "10",
        "2019-12-03T13:30:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:ldl-ses:2017"),
        DR_DAVID,
    ),
    "VAC-NOTE_2023.01.xml": Expected(
        (LOINC, "87273-9"),
        "52",
        "2021-04-09T15:35:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:vac-note:2021"),
        DR_DAVID,
    ),
    "VAC_2023.01.xml": Expected(
        (LOINC, "11369-6"),
        "52",
        "2021-04-09T17:00:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:vac:2019"),
        DR_DAVID,
    ),
    "VSM_1.4_2022.01.xml": Expected(
        (TRE_A05, "SYNTH"),
        "11",
        "2020-03-12T11:17:00+01:00",
        [DR_DAVID],
        (TRE_A06, "urn:asip:ci-sis:vsm:2012"),
        DR_DAVID,
    ),
    "eDISP-MED_2024.01.xml": Expected(
        (LOINC, "60593-1"),
        "43",
        "2024-12-25T09:30:00+01:00",
        ["578435954900010/1.2.250.1.176.1", PHARMACIST_DISP],
        (TRE_A11, "urn:ihe:pharm:dis:2010"),
        PHARMACIST_DISP,
        "21",
    ),
    "eP-MED-DM_2022.01_PosoNonStruct.xml": Expected(
        (LOINC, "57833-6"), "42", "2021-12-01T09:30:00+01:00", [DR_DAVID], (TRE_A11, "urn:ihe:pharm:pre:2010"), DR_DAVID
    ),
}

Ins = tuple[str, str]


def cda(name: str) -> bytes:
    return (CDA_DIR / name).read_bytes()


def ins_of(name: str) -> Ins:
    return parse_cda(cda(name)).require_ins()


#: The patient of the examples (test INS .10) and the one of eDISP-MED (an INS-NIR).
INS_A = ins_of("LDL-SES_2022.01.xml")
INS_B = ins_of("eDISP-MED_2024.01.xml")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha1_b64(data: bytes) -> str:
    return b64(hashlib.sha1(data).digest())


# -------------------------------------------------------------------------- the world


def seed_dmp(world: World, ins: Ins) -> str:
    """An open DMP for ``ins`` (any INS system), as seed_patient makes them for INS-NIR."""
    pid = f"pat-{ins[1]}"
    world.store.create(
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": ins[0], "value": ins[1]}],
            "name": [{"family": "PAT-TROIS"}],
            "birthDate": "1979-03-28",
            "active": True,
        }
    )
    for purpose in (BREAK_THE_GLASS, REGULATION_CENTRE):
        world.store.create(new_consent(EMERGENCY_ACCESS, ins, world.clock.now, purpose=purpose))
    return pid


def grant(world: World, ins: Ins, idnatps: str) -> None:
    """R3: the patient authorises a professional."""
    start, end = world.clock.now - timedelta(days=1), world.clock.now + timedelta(days=365)
    world.store.create(new_consent(ACCESS, ins, start, actor=(IDNATPS_SYSTEM, idnatps), until=end))


def person(ins: Ins) -> str:
    return f"{ins[0]}|{ins[1]}"


def professional(world: World, ins: Ins, idnatps: str, profession: str = "10") -> As:
    return world.as_("HCP", patient=person(ins), idnatps=idnatps, profession=profession)


def patient(world: World, ins: Ins) -> As:
    return world.as_("PAT", patient=person(ins), scope="patient/*.cruds")


def feed(world: World, ins: Ins) -> As:
    return world.as_("TCU", patient=person(ins))


def generate(client: As, data: bytes, content_type: str = "text/xml") -> TestResponse:
    binary = {"resourceType": "Binary", "contentType": content_type, "data": b64(data)}
    return client.post("DocumentReference/$generate-metadata", parameters({"name": "document", "resource": binary}))


def parameters(*parameter: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameter)}


def local(world: World, url: str) -> str:
    """A full URL of this server as the path the test client takes."""
    prefix = world.config.base_url + "/"
    assert url.startswith(prefix), url
    return url.removeprefix(prefix)


def stored_binary(world: World, url: str) -> dict[str, Any]:
    rtype, _, rid = local(world, url).partition("/")
    assert rtype == "Binary"
    binary: dict[str, Any] = world.store.read("Binary", rid, OPEN_SCOPE).json()
    return binary


def count(world: World, rtype: str) -> int:
    total = world.store.search(Query(rtype, count=0), OPEN_SCOPE).total
    assert total is not None
    return total


def codings(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


def author_idnatps(reference: dict[str, Any]) -> list[str]:
    """The idNatPs carried by the (contained) resources DocumentReference.author points at."""
    contained = {f"#{r['id']}": r for r in reference.get("contained", [])}
    return [
        identifier["value"]
        for author in reference.get("author", [])
        for identifier in contained[author["reference"]].get("identifier", [])
        if identifier["system"] == IDNATPS_SYSTEM
    ]


def outcome_expressions(response: TestResponse) -> list[str]:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def sender_for(world: World, ins: Ins, expected: Expected) -> As:
    if expected.sender is None:
        return feed(world, ins)
    return professional(world, ins, expected.sender, expected.profession)


# -------------------------------------------------------------------------- ITI-106


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generate_metadata_describes_each_example(world: World, name: str) -> None:
    data, expected = cda(name), EXPECTED[name]
    ins = ins_of(name)
    pid = seed_dmp(world, ins)
    response = generate(sender_for(world, ins, expected), data)
    assert response.status_code == 201, response.get_data(as_text=True)
    reference = response.get_json()
    base = world.config.base_url
    assert response.headers["Location"] == f"{base}/DocumentReference/{reference['id']}/_history/1"
    assert codings(reference["type"]) == [expected.type]
    assert [codings(c) for c in reference["category"]] == [[(TRE_A03, expected.class_code)]]
    assert reference["subject"] == {"reference": f"Patient/{pid}"}
    assert reference["date"] == expected.date
    assert author_idnatps(reference) == expected.authors
    assert reference["masterIdentifier"]["value"] == parse_cda(data).document_id
    (content,) = reference["content"]
    assert (content["format"]["system"], content["format"]["code"]) == expected.format
    attachment = content["attachment"]
    binary = stored_binary(world, attachment["url"])
    assert base64.b64decode(binary["data"]) == data
    assert attachment["size"] == len(data) and attachment["hash"] == sha1_b64(data)
    assert attachment["contentType"] == binary["contentType"] == "text/xml"
    assert "data" not in attachment
    assert binary["securityContext"] == {"reference": f"DocumentReference/{reference['id']}"}
    assert world.store.read("DocumentReference", reference["id"], OPEN_SCOPE).json() == reference


def test_generate_metadata_documents_are_found_and_retrieved(world: World) -> None:
    """The generated DocumentReference is an ordinary one: ITI-67 finds it, ITI-68 returns it."""
    seed_dmp(world, INS_A)
    grant(world, INS_A, DR_DAVID)
    doctor = professional(world, INS_A, DR_DAVID)
    created = generate(doctor, cda("VAC_2023.01.xml")).get_json()
    assert doctor.ids(f"DocumentReference?patient.identifier={person(INS_A)}&type={LOINC}|11369-6") == {created["id"]}
    retrieved = doctor.get(local(world, created["content"][0]["attachment"]["url"]), headers=RETRIEVE)
    assert retrieved.status_code == 200 and retrieved.get_data() == cda("VAC_2023.01.xml")


def test_generate_metadata_is_in_the_trail(world: World) -> None:
    """R17: the operation leaves its AuditEvent, about the patient, naming no bogus resource."""
    seed_dmp(world, INS_A)
    assert generate(professional(world, INS_A, DR_DAVID), cda("VAC_2023.01.xml")).status_code == 201
    events = [e.json() for e in world.store.search(Query("AuditEvent", count=10), OPEN_SCOPE).matches]
    (event,) = [e for e in events if e["subtype"][0]["code"] == "operation"]
    assert event["outcome"] == "0"
    assert not any("$" in str(entity.get("what", {}).get("reference", "")) for entity in event["entity"])


def test_generate_metadata_is_bound_to_the_tokens_patient(world: World) -> None:
    """R1: the CDA's patient must be the token's; a CDA of a patient without a DMP has nowhere to go."""
    seed_dmp(world, INS_A)
    seed_dmp(world, INS_B)
    doctor_of_a = professional(world, INS_A, PHARMACIST_DISP, "21")
    refused = generate(doctor_of_a, cda("eDISP-MED_2024.01.xml"))  # INS_B's dispensation
    assert refused.status_code == 403, refused.get_data(as_text=True)
    no_dmp = ("urn:oid:1.2.250.1.213.1.4.8", "277076322082910")
    assert no_dmp == INS_B
    world.store.delete("Patient", f"pat-{INS_B[1]}")
    missing = generate(professional(world, INS_B, PHARMACIST_DISP, "21"), cda("eDISP-MED_2024.01.xml"))
    assert missing.status_code == 404, missing.get_data(as_text=True)
    assert count(world, "DocumentReference") == 0 and count(world, "Binary") == 0


def test_generate_metadata_follows_the_write_rules(world: World) -> None:
    """R15: the patient adds only their own documents; a professional's CDA is not one."""
    seed_dmp(world, INS_A)
    response = generate(patient(world, INS_A), cda("LDL-SES_2022.01.xml"))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert count(world, "Binary") == 0


NOT_A_CDA: dict[str, tuple[bytes, str, int, str]] = {
    "pdf": (PDF, "application/pdf", 422, "Binary.contentType"),
    "other-xml": (b"<note><to>x</to></note>", "text/xml", 422, "Binary.data"),
    "malformed": (b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>", "text/xml", 422, "Binary.data"),
    "doctype": (
        b'<!DOCTYPE x [<!ENTITY e "boom">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>',
        "text/xml",
        422,
        "Binary.data",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_A_CDA))
def test_generate_metadata_refuses_what_is_not_a_cda(world: World, case: str) -> None:
    data, content_type, status, where = NOT_A_CDA[case]
    seed_dmp(world, INS_A)
    response = generate(professional(world, INS_A, DR_DAVID), data, content_type)
    assert response.status_code == status, response.get_data(as_text=True)
    assert where in outcome_expressions(response)
    assert count(world, "Binary") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Binary", "contentType": "text/xml", "data": b64(b"<x/>")},
        parameters(),
        parameters({"name": "document", "valueString": "not a Binary of this server"}),
        parameters({"name": "document", "resource": {"resourceType": "Patient"}}),
    ],
    ids=["not-parameters", "no-document", "foreign-url", "not-a-binary"],
)
def test_generate_metadata_refuses_malformed_requests(world: World, body: dict[str, Any]) -> None:
    seed_dmp(world, INS_A)
    response = professional(world, INS_A, DR_DAVID).post("DocumentReference/$generate-metadata", body)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_generate_metadata_refuses_fhir_document_bundles(world: World) -> None:
    seed_dmp(world, INS_A)
    bundle = {"resourceType": "Bundle", "type": "document"}
    response = professional(world, INS_A, DR_DAVID).post(
        "DocumentReference/$generate-metadata", parameters({"name": "document", "resource": bundle})
    )
    assert response.status_code == 422
    assert response.get_json()["issue"][0]["code"] == "not-supported"


def test_generate_metadata_of_a_stored_binary(world: World) -> None:
    """Content uploaded first (``POST Binary``), described afterwards: the DocumentReference
    points at that Binary, no copy is made, and it is described only once."""
    seed_dmp(world, INS_A)
    grant(world, INS_A, DR_DAVID)
    doctor = professional(world, INS_A, DR_DAVID)
    data = cda("LDL-EES_2022.01.xml")
    url = uploaded_binary(world, doctor, data)
    response = doctor.post("DocumentReference/$generate-metadata", parameters({"name": "url", "valueUrl": url}))
    assert response.status_code == 201, response.get_data(as_text=True)
    attachment = response.get_json()["content"][0]["attachment"]
    assert attachment["url"] == url and attachment["hash"] == sha1_b64(data)
    assert attachment["contentType"] == "application/hl7-v3+xml"
    assert count(world, "Binary") == 1
    again = doctor.post("DocumentReference/$generate-metadata", parameters({"name": "url", "valueUrl": url}))
    assert again.status_code == 422
    stranger = professional(world, INS_A, OTHER_DOCTOR)  # no access: may not learn it exists
    hidden = stranger.post("DocumentReference/$generate-metadata", parameters({"name": "url", "valueUrl": url}))
    assert hidden.status_code == 404


def uploaded_binary(world: World, client: As, data: bytes) -> str:
    """The full URL of a Binary ``client`` sends (a CDA, as the client's own upload)."""
    uploaded = world.client.post(
        "/fhir/Binary", data=data, headers={**client.headers, "Content-Type": "application/hl7-v3+xml"}
    )
    assert uploaded.status_code == 201, uploaded.get_data(as_text=True)
    return f"{world.config.base_url}/Binary/{uploaded.get_json()['id']}"


def test_unknown_operations_are_not_found(world: World) -> None:
    seed_dmp(world, INS_A)
    doctor = professional(world, INS_A, DR_DAVID)
    assert doctor.post("DocumentReference/$no-such-operation", parameters()).status_code == 404
    assert doctor.get("DocumentReference/$generate-metadata").status_code == 405


def test_the_capability_statement_names_the_operation(world: World) -> None:
    statement = world.client.get("/fhir/metadata").get_json()
    (documents,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference"]
    assert documents["operation"] == [{"name": "generate-metadata", "definition": GENERATE_METADATA}]


# -------------------------------------------------------------------------- ITI-105


def simplified(pid: str, attachment: dict[str, Any], **elements: Any) -> dict[str, Any]:
    """A DocumentReference as an ITI-105 Document Source sends it: the document inline."""
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{pid}"},
        **elements,
        "content": [{"attachment": attachment}],
    }


CR_CONSULTATION = {"coding": [{"system": LOINC, "code": "11488-4"}]}
BY_DR_DAVID = [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR_DAVID}}]


def test_simplified_publish_of_a_pdf(world: World) -> None:
    pid = seed_dmp(world, INS_A)
    grant(world, INS_A, DR_DAVID)
    doctor = professional(world, INS_A, DR_DAVID)
    attachment = {"contentType": "application/pdf", "data": b64(PDF), "title": "CR"}
    response = doctor.post("DocumentReference", simplified(pid, attachment, type=CR_CONSULTATION, author=BY_DR_DAVID))
    assert response.status_code == 201, response.get_data(as_text=True)
    reference = response.get_json()
    stored = reference["content"][0]["attachment"]
    assert "data" not in stored
    assert stored == {
        "contentType": "application/pdf",
        "title": "CR",
        "url": stored["url"],
        "size": len(PDF),
        "hash": sha1_b64(PDF),
    }
    binary = stored_binary(world, stored["url"])
    assert base64.b64decode(binary["data"]) == PDF and binary["contentType"] == "application/pdf"
    assert binary["securityContext"] == {"reference": f"DocumentReference/{reference['id']}"}
    retrieved = doctor.get(local(world, stored["url"]), headers=RETRIEVE)
    assert retrieved.status_code == 200
    assert retrieved.get_data() == PDF
    assert retrieved.headers["Content-Type"] == "application/pdf"
    assert retrieved.headers["Content-Length"] == str(len(PDF))


@pytest.mark.parametrize(
    ("claim", "element"),
    [
        ({"size": len(PDF) + 1}, "DocumentReference.content[0].attachment.size"),
        ({"hash": sha1_b64(PDF + b"x")}, "DocumentReference.content[0].attachment.hash"),
        ({"hash": b64(hashlib.sha1(PDF).hexdigest().encode())}, "DocumentReference.content[0].attachment.hash"),
    ],
    ids=["size", "hash", "hash-of-hex"],
)
def test_simplified_publish_checks_size_and_hash(world: World, claim: dict[str, Any], element: str) -> None:
    pid = seed_dmp(world, INS_A)
    doctor = professional(world, INS_A, DR_DAVID)
    attachment = {"contentType": "application/pdf", "data": b64(PDF), **claim}
    response = doctor.post("DocumentReference", simplified(pid, attachment, type=CR_CONSULTATION, author=BY_DR_DAVID))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert outcome_expressions(response) == [element]
    assert count(world, "Binary") == 0 and count(world, "DocumentReference") == 0


def test_simplified_publish_accepts_a_correct_size_and_hash(world: World) -> None:
    pid = seed_dmp(world, INS_A)
    attachment = {"contentType": "application/pdf", "data": b64(PDF), "size": len(PDF), "hash": sha1_b64(PDF)}
    response = professional(world, INS_A, DR_DAVID).post(
        "DocumentReference", simplified(pid, attachment, type=CR_CONSULTATION, author=BY_DR_DAVID)
    )
    assert response.status_code == 201, response.get_data(as_text=True)


def test_simplified_publish_of_a_cda_fills_the_metadata_from_it(world: World) -> None:
    """A Document Source may send little more than the patient: the CDA says the rest."""
    pid = seed_dmp(world, INS_A)
    data = cda("LDL-SES_2022.01.xml")
    response = professional(world, INS_A, DR_DAVID).post(
        "DocumentReference", simplified(pid, {"contentType": "text/xml", "data": b64(data)})
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    reference = response.get_json()
    expected = EXPECTED["LDL-SES_2022.01.xml"]
    assert codings(reference["type"]) == [expected.type]
    assert [codings(c) for c in reference["category"]] == [[(TRE_A03, expected.class_code)]]
    assert reference["date"] == expected.date
    assert author_idnatps(reference) == expected.authors
    assert reference["masterIdentifier"]["value"] == parse_cda(data).document_id
    (content,) = reference["content"]
    assert (content["format"]["system"], content["format"]["code"]) == expected.format
    attachment = content["attachment"]
    assert attachment["size"] == len(data) and attachment["hash"] == sha1_b64(data)
    assert base64.b64decode(stored_binary(world, attachment["url"])["data"]) == data


def test_simplified_publish_keeps_what_the_client_gave(world: World) -> None:
    """Agreeing metadata is kept as sent; contained ids the client uses are not overwritten."""
    pid = seed_dmp(world, INS_A)
    data = cda("VAC-NOTE_2023.01.xml")
    mine = {"resourceType": "Organization", "id": "author1", "name": "my own"}
    body = simplified(
        pid,
        {"contentType": "text/xml", "data": b64(data)},
        contained=[mine],
        type={"coding": [{"system": LOINC, "code": "87273-9", "display": "mine"}]},
        custodian={"reference": "#author1"},
    )
    response = professional(world, INS_A, DR_DAVID).post("DocumentReference", body)
    assert response.status_code == 201, response.get_data(as_text=True)
    reference = response.get_json()
    assert reference["type"]["coding"][0]["display"] == "mine"
    assert mine in reference["contained"]
    assert author_idnatps(reference) == [DR_DAVID]
    assert all(a["reference"].startswith("#cda-") for a in reference["author"])


DISAGREEMENTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "type": ({"type": CR_CONSULTATION}, "LDL-SES_2022.01.xml", "DocumentReference.type"),
    "author": (
        {"author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": OTHER_DOCTOR}}]},
        "LDL-SES_2022.01.xml",
        "DocumentReference.author",
    ),
    "patient": ({}, "eDISP-MED_2024.01.xml", "DocumentReference.subject"),  # INS_B's CDA in INS_A's DMP
    "document-id": (
        {"masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"}},
        "LDL-SES_2022.01.xml",
        "DocumentReference.masterIdentifier",
    ),
}


@pytest.mark.parametrize("case", sorted(DISAGREEMENTS))
def test_simplified_publish_refuses_metadata_the_cda_contradicts(world: World, case: str) -> None:
    elements, name, element = DISAGREEMENTS[case]
    pid = seed_dmp(world, INS_A)
    body = simplified(pid, {"contentType": "text/xml", "data": b64(cda(name))}, **elements)
    response = professional(world, INS_A, PHARMACIST_DISP, "21").post("DocumentReference", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert element in outcome_expressions(response)
    assert count(world, "Binary") == 0 and count(world, "DocumentReference") == 0


def test_simplified_publish_follows_the_write_rules(world: World) -> None:
    """R1 and R15 apply as to any create: another patient's DMP, a role that may not feed."""
    pid_a = seed_dmp(world, INS_A)
    seed_dmp(world, INS_B)
    body = simplified(pid_a, {"contentType": "application/pdf", "data": b64(PDF)}, type=CR_CONSULTATION)
    assert professional(world, INS_B, DR_DAVID).post("DocumentReference", body).status_code == 403
    assert world.as_("ASS", patient=person(INS_A)).post("DocumentReference", body).status_code == 403
    assert count(world, "Binary") == 0 and count(world, "DocumentReference") == 0
    assert feed(world, INS_A).post("DocumentReference", body).status_code == 201
    assert count(world, "Binary") == 1


def test_simplified_publish_refuses_data_and_url_together(world: World) -> None:
    pid = seed_dmp(world, INS_A)
    attachment = {"contentType": "application/pdf", "data": b64(PDF), "url": "http://elsewhere/doc.pdf"}
    response = professional(world, INS_A, DR_DAVID).post("DocumentReference", simplified(pid, attachment))
    assert response.status_code == 422
    assert outcome_expressions(response) == ["DocumentReference.content[0].attachment.url"]


# -------------------------------------------------------------------------- ITI-68


@pytest.fixture
def published(world: World) -> tuple[str, bytes]:
    """LDL-SES in INS_A's DMP, by Dr David; Dr David and another doctor have access."""
    seed_dmp(world, INS_A)
    for idnatps in (DR_DAVID, OTHER_DOCTOR):
        grant(world, INS_A, idnatps)
    data = cda("LDL-SES_2022.01.xml")
    response = generate(professional(world, INS_A, DR_DAVID), data)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"], data


def mask(world: World, document_id: str) -> None:
    """R18: the patient hides the document from professionals (MASQUE_PS)."""
    me = patient(world, INS_A)
    current = me.get(f"DocumentReference/{document_id}").get_json()
    current["securityLabel"].append({"coding": [{"system": VISIBILITY_SYSTEM, "code": MASKED_FROM_PROFESSIONALS}]})
    assert me.put(f"DocumentReference/{document_id}", current).status_code == 200


def binary_path(world: World, document_id: str) -> str:
    reference = world.store.read("DocumentReference", document_id, OPEN_SCOPE).json()
    return local(world, reference["content"][0]["attachment"]["url"])


def test_retrieve_returns_the_exact_bytes(world: World, published: tuple[str, bytes]) -> None:
    document_id, data = published
    path = binary_path(world, document_id)
    for reader in (patient(world, INS_A), professional(world, INS_A, OTHER_DOCTOR)):
        response = reader.get(path, headers=RETRIEVE)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_data() == data
        assert response.headers["Content-Type"] == "text/xml"
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["ETag"] == 'W/"1"'
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    as_fhir = patient(world, INS_A).get(path)  # a FHIR client still gets the Binary resource
    assert as_fhir.get_json()["resourceType"] == "Binary"


def test_retrieve_hides_a_masked_document_as_unknown(world: World, published: tuple[str, bytes]) -> None:
    """R11: masked from professionals but its author and the médecin traitant; the others learn
    nothing, not even that it exists (404 as for an unknown id, never 403 or 410)."""
    document_id, data = published
    path = binary_path(world, document_id)
    other = professional(world, INS_A, OTHER_DOCTOR)
    assert other.get(path, headers=RETRIEVE).status_code == 200
    mask(world, document_id)
    hidden = other.get(path, headers=RETRIEVE)
    assert hidden.status_code == 404
    unknown = other.get("Binary/no-such-binary", headers=RETRIEVE)
    assert unknown.status_code == 404
    assert hidden.get_json()["issue"][0]["code"] == unknown.get_json()["issue"][0]["code"] == "not-found"
    assert other.get(f"DocumentReference/{document_id}").status_code == 404
    author = professional(world, INS_A, DR_DAVID).get(path, headers=RETRIEVE)
    assert author.status_code == 200 and author.get_data() == data
    assert patient(world, INS_A).get(path, headers=RETRIEVE).get_data() == data


def test_retrieve_answers_304_to_a_matching_if_none_match(world: World, published: tuple[str, bytes]) -> None:
    document_id, data = published
    path = binary_path(world, document_id)
    reader = patient(world, INS_A)
    first = reader.get(path, headers=RETRIEVE)
    unchanged = reader.get(path, headers={**RETRIEVE, "If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.get_data() == b""
    assert unchanged.headers["ETag"] == first.headers["ETag"]
    changed = reader.get(path, headers={**RETRIEVE, "If-None-Match": 'W/"7"'})
    assert changed.status_code == 200 and changed.get_data() == data


def test_retrieve_streams_large_content(world: World) -> None:
    """Several decoding chunks, a size that is no multiple of 3: every byte comes back in order."""
    pid = seed_dmp(world, INS_A)
    grant(world, INS_A, DR_DAVID)
    doctor = professional(world, INS_A, DR_DAVID)
    large = PDF + bytes(range(256)) * 1200 + b"end"
    attachment = {"contentType": "application/pdf", "data": b64(large)}
    created = doctor.post("DocumentReference", simplified(pid, attachment, type=CR_CONSULTATION, author=BY_DR_DAVID))
    assert created.status_code == 201, created.get_data(as_text=True)
    path = local(world, created.get_json()["content"][0]["attachment"]["url"])
    response = doctor.get(path, headers=RETRIEVE)
    assert response.is_streamed
    assert response.get_data() == large and response.headers["Content-Length"] == str(len(large))
    head = doctor.request("HEAD", path, headers=RETRIEVE)
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == str(len(large))


# -------------------------------------------------------------------------- encryption at rest


def test_published_documents_are_not_on_disk_in_clear(world: World) -> None:
    seed_dmp(world, INS_A)
    doctor = professional(world, INS_A, DR_DAVID)
    pid = f"pat-{INS_A[1]}"
    assert generate(doctor, cda("LDL-SES_2022.01.xml")).status_code == 201
    inline = simplified(pid, {"contentType": "text/xml", "data": b64(cda("LDL-EES_2022.01.xml"))})
    assert doctor.post("DocumentReference", inline).status_code == 201
    pdf = simplified(pid, {"contentType": "application/pdf", "data": b64(PDF)}, type=CR_CONSULTATION)
    assert doctor.post("DocumentReference", pdf).status_code == 201
    database = world.config.data_dir / "dmp.sqlite3"
    files = [database, database.with_name(database.name + "-wal")]
    assert all(path.exists() for path in files) and files[1].stat().st_size > 0
    secrets = (SECRET_PHRASE, b"ZQXJ-7734")
    assert [(path.name, s) for path in files for s in secrets if s in path.read_bytes()] == []
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert [s for s in secrets if s in database.read_bytes()] == []
