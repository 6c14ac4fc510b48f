"""IHE MHD 4.2 Document Responder: ITI-67 Find Document References, ITI-66 Find Document Lists and
ITI-68 Retrieve Document, over HTTP through the DMP gatekeeper (tests/dmp.py: real tokens).

One record is built once for the module, through ITI-65 submissions a doctor makes (the directory
entries their authors point at are seeded, as the administration keeps the directory). Its six
documents differ in every piece of metadata a parameter searches, and each names its author in one
of the shapes MHD and PDSm sources use: a contained Practitioner; a contained PractitionerRole and
its contained Practitioner; a stored Practitioner; a stored PractitionerRole and its stored
Practitioner; a contained PractitionerRole and a stored Practitioner; a stored PractitionerRole
with its Practitioner contained. Each submission set names its source the same way. Document ``c``
replaces ``b`` (so ``b`` is ``superseded``); submission ``a`` also creates a Folder.

Every parameter is asked for a value that matches some documents and for one that matches others
or none, so that a parameter the server ignored would fail; every query runs as a GET and as a
POST ``_search`` (form-encoded), in JSON and in XML.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.test import TestResponse

from authz.terms import ACCESS, IDNATPS_SYSTEM
from fhir_server.fhir.formats.xml import xml_to_json
from tests.dmp import INS_SYSTEM, LOINC, As, World
from tests.test_mhd_folders import LIST_TYPES, OTHER_INS, SNOMED, folder, with_folder
from tests.test_mhd_provide import DR, INS, MHD, coding, created, submission

TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CCAM = "https://mos.esante.gouv.fr/NOS/TRE_R38-ActiviteCCAM/FHIR/TRE-R38-ActiviteCCAM"
ORDERS = "urn:oid:1.2.250.1.999.7"
RFC3986 = "urn:ietf:rfc:3986"
FOLDER_ID = "urn:oid:1.2.250.1.999.4.1"
FHIR_XML = "application/fhir+xml"


@dataclass(frozen=True)
class Doc:
    """What sets one document of the record apart (its dates come from its month)."""

    type_code: str  # a class-10, 11 or 31 type doctors read (R10)
    class_code: str
    confidentiality: str
    facility: str
    setting: str
    format_code: str
    given: str  # the author's
    family: str
    content_type: str = "text/plain"


DOCS = {
    "a": Doc("11488-4", "10", "N", "22232009", "394802001", "urn:ihe:iti:xds-sd:pdf:2008", "Jeanne", "Martin"),
    "b": Doc("11490-0", "10", "R", "225728007", "394585009", "urn:ihe:iti:xds-sd:text:2008", "Paul", "Durand"),
    "c": Doc("60591-5", "11", "V", "264358009", "394579002", "urn:ihe:pcc:xphr:2007", "Claire", "Lefèvre"),
    "d": Doc("11506-3", "10", "N", "394777002", "394582007", "urn:ihe:lab:xd-lab:2008", "Luc", "Bernard"),
    "e": Doc("34133-9", "11", "N", "35971002", "394583002", "urn:ihe:pat:apsr:all:2010", "Anne", "Petit"),
    "f": Doc("18748-4", "31", "N", "42665001", "394584008", "urn:ihe:rad:TEXT", "Marc", "Roux", "text/xml"),
}
KEYS = "".join(DOCS)


def content(key: str) -> bytes:
    """A document's bytes (``f`` is XML, no CDA: served as ``text/xml``, its own type)."""
    return b"<note>Document f</note>" if DOCS[key].content_type == "text/xml" else f"Document {key}".encode()


def month(key: str) -> int:
    """Document ``a`` is about January 2024, ``b`` February..."""
    return KEYS.index(key) + 1


def master_id(key: str) -> str:
    return f"urn:oid:1.2.250.1.999.1.{month(key)}"


def entry_uuid(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'doc-{key}')}"


def list_unique_id(key: str) -> str:
    return f"urn:oid:1.2.250.1.999.2.{month(key)}"


def source_id(key: str) -> str:
    return f"urn:oid:1.2.250.1.999.3.{month(key)}"


def designation(key: str) -> str:
    return f"{71388002 + month(key)}"


def human(key: str) -> dict[str, Any]:
    return {"family": DOCS[key].family, "given": [DOCS[key].given]}


def practitioner(key: str, rid: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Practitioner", "id": rid, "name": [human(key)]}
    if key == "b":  # the doctor himself, so that he may replace the document (R19)
        resource["identifier"] = [{"system": IDNATPS_SYSTEM, "value": DR}]
    return resource


def author(key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The author's Reference and the resources it needs contained, in this document's shape."""
    match key:
        case "a":  # a contained Practitioner
            return {"reference": "#auth"}, [practitioner(key, "auth")]
        case "b":  # a contained PractitionerRole and its contained Practitioner
            role = {"resourceType": "PractitionerRole", "id": "auth", "practitioner": {"reference": "#person"}}
            return {"reference": "#auth"}, [role, practitioner(key, "person")]
        case "c":  # a stored Practitioner
            return {"reference": "Practitioner/prat-c"}, []
        case "d":  # a stored PractitionerRole and its stored Practitioner
            return {"reference": "PractitionerRole/role-d"}, []
        case "e":  # a contained PractitionerRole and a stored Practitioner
            stored = {"reference": "Practitioner/prat-e"}
            return {"reference": "#auth"}, [{"resourceType": "PractitionerRole", "id": "auth", "practitioner": stored}]
    # f: a stored PractitionerRole with its Practitioner contained
    return {"reference": "PractitionerRole/role-f"}, []


def seed_directory(world: World) -> None:
    """The directory entries the stored author shapes point at."""
    for key in "cde":
        world.store.create(practitioner(key, f"prat-{key}"))
    world.store.create(
        {"resourceType": "PractitionerRole", "id": "role-d", "practitioner": {"reference": "Practitioner/prat-d"}}
    )
    world.store.create(
        {
            "resourceType": "PractitionerRole",
            "id": "role-f",
            "contained": [practitioner("f", "person")],
            "practitioner": {"reference": "#person"},
        }
    )


def document_metadata(key: str, replaces: str | None = None) -> dict[str, Any]:
    """The DocumentReference elements of document ``key`` that differ from the others'."""
    doc, m = DOCS[key], month(key)
    reference, contained = author(key)
    src = {"resourceType": "Patient", "id": "src", "identifier": [{"system": "urn:oid:1.2.3", "value": "7"}]}
    related: list[dict[str, Any]] = [{"identifier": {"system": ORDERS, "value": f"ORDER-{key}"}}]
    if key in "bc":
        related.append({"reference": f"Encounter/enc-{key}"})
    metadata: dict[str, Any] = {
        "contained": [src, *contained],
        "masterIdentifier": {"system": RFC3986, "value": master_id(key)},
        "identifier": [{"use": "official", "system": RFC3986, "value": entry_uuid(key)}],
        "type": coding(LOINC, doc.type_code),
        "category": [coding(TRE_A03, doc.class_code)],
        "date": f"2024-{m:02d}-10T10:00:00+01:00",
        "author": [reference],
        "securityLabel": [coding(CONFIDENTIALITY, doc.confidentiality)],
        "context": {
            "event": [coding(CCAM, f"EVT{key.upper()}")],
            "period": {"start": f"2024-{m:02d}-01T12:00:00+01:00", "end": f"2024-{m:02d}-05T12:00:00+01:00"},
            "facilityType": coding(SNOMED, doc.facility),
            "practiceSetting": coding(SNOMED, doc.setting),
            "sourcePatientInfo": {"reference": "#src"},
            "related": related,
        },
    }
    if replaces:
        metadata["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{replaces}"}}]
    return metadata


def provide(pid: str, key: str, replaces: str | None = None) -> dict[str, Any]:
    """The ITI-65 of document ``key``: its submission set sourced by its author; ``a`` also
    creates a Folder holding the document."""
    m = month(key)
    metadata = document_metadata(key, replaces)
    bundle = submission(pid, content(key), content_type=DOCS[key].content_type, **metadata)
    set_entry, doc_entry, _ = bundle["entry"]
    document = doc_entry["resource"]
    document["content"][0]["attachment"]["creation"] = f"2024-{m:02d}-09T08:00:00+01:00"
    document["content"][0]["format"] = {"system": FORMAT_CODES, "code": DOCS[key].format_code}
    source, contained = author(key)
    submission_set = set_entry["resource"]
    submission_set["extension"] = [
        {"url": f"{MHD}ihe-sourceId", "valueIdentifier": {"system": RFC3986, "value": source_id(key)}},
        {"url": f"{MHD}ihe-designationType", "valueCodeableConcept": coding(SNOMED, designation(key))},
    ]
    submission_set["identifier"][0]["value"] = list_unique_id(key)
    submission_set["date"] = f"2024-{m:02d}-10T10:00:00+01:00"
    submission_set["source"] = source
    if contained:
        submission_set["contained"] = contained
    if key == "a":
        identifier = [{"use": "usual", "system": RFC3986, "value": FOLDER_ID}]
        with_folder(bundle, folder(pid, doc_entry["fullUrl"], identifier=identifier, date="2024-01-20T10:00:00+01:00"))
    return bundle


@dataclass
class Record:
    """The module's record: who reads it, and the ids of what was submitted (``a``: document
    ``a``; ``set-a``: its submission set; ``folder-a``: the folder submission ``a`` created)."""

    world: World
    pid: str
    doctor: As
    ids: dict[str, str]

    def keys(self, ids: set[str]) -> set[str]:
        names = {rid: key for key, rid in self.ids.items()}
        return {names.get(rid, rid) for rid in ids}


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Record]:
    world = World(tmp_path_factory.mktemp("mhd-find"))
    pid = world.seed_patient(INS)
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
    other = world.seed_patient(OTHER_INS)
    world.seed_document(other, doc_id="z")
    seed_directory(world)
    doctor = world.doctor(DR, INS)
    ids: dict[str, str] = {}
    for key in KEYS:
        targets = created(doctor.post("", provide(pid, key, replaces=ids["b"] if key == "c" else None)))
        lists = [t.split("/")[1] for t in targets if t.startswith("List/")]
        ids[f"set-{key}"] = lists[0]
        if len(lists) > 1:
            ids[f"folder-{key}"] = lists[1]
        ids[key] = next(t.split("/")[1] for t in targets if t.startswith("DocumentReference/"))
    yield Record(world, pid, doctor, ids)
    world.close()


# -------------------------------------------------------------------------- the four ways to ask


TRANSPORTS = ("GET json", "GET xml", "POST json", "POST xml")


def ask(client: As, rtype: str, query: str, transport: str) -> TestResponse:
    """A search of ``rtype`` by ``query`` (already percent-encoded, as a client sends it)."""
    if transport == "GET json":
        return client.get(f"{rtype}?{query}")
    if transport == "GET xml":  # the format asked by parameter (ITI TF-2x Z.6)
        return client.get(f"{rtype}?{query}&_format=xml")
    headers = {**client.headers, "Content-Type": "application/x-www-form-urlencoded"}
    if transport == "POST xml":  # the format asked by Accept
        headers["Accept"] = FHIR_XML
    return client.client.open(f"/fhir/{rtype}/_search", method="POST", data=query, headers=headers)


def bundle_of(response: TestResponse, transport: str) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    if transport.endswith("xml"):
        assert response.mimetype == FHIR_XML, response.mimetype
        return xml_to_json(response.get_data())
    assert response.mimetype == "application/fhir+json", response.mimetype
    body: dict[str, Any] = response.get_json()
    return body


def found(record: Record, rtype: str, query: str, transport: str) -> set[str]:
    """The keys of what the search matched (checked to be all of ``rtype``, and counted)."""
    bundle = bundle_of(ask(record.doctor, rtype, query, transport), transport)
    assert bundle["type"] == "searchset"
    matches = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert all(e["resource"]["resourceType"] == rtype for e in matches)
    assert bundle["total"] == len(matches)
    return record.keys({e["resource"]["id"] for e in matches})


def q(**params: str) -> str:
    """A query string; ``_`` in a name stands for ``.``, ``__`` for ``:`` and values are encoded."""
    return urlencode({k.replace("__", ":").replace("_", "."): v for k, v in params.items()})


ALL = set(KEYS)
CURRENT = ALL - {"b"}


# -------------------------------------------------------------------------- ITI-67


#: (query beyond ``patient=``, the documents it finds), for every ITI-67 parameter.
FIND_DOCUMENTS: list[tuple[str, str, set[str]]] = [
    # status: the short codes, no system; a comma is an OR
    ("status", "status=current", CURRENT),
    ("status", "status=superseded", {"b"}),
    ("status", "status=current,superseded", ALL),
    ("status", "status=entered-in-error", set()),
    # type (typeCode), with or without system, OR lists
    ("type", f"type={LOINC}|11488-4", {"a"}),
    ("type", "type=11490-0", {"b"}),
    ("type", f"type={LOINC}|11488-4,{LOINC}|60591-5", {"a", "c"}),
    ("type", f"type={SNOMED}|11488-4", set()),
    # category (classCode)
    ("category", f"category={TRE_A03}|10", {"a", "b", "d"}),
    ("category", "category=11", {"c", "e"}),
    ("category", f"category={TRE_A03}|31,{TRE_A03}|11", {"c", "e", "f"}),
    ("category", f"category={TRE_A03}|90", set()),
    # creation (attachment.creation): date prefixes
    ("creation", "creation=2024-01-09", {"a"}),
    ("creation", "creation=ge2024-05-01", {"e", "f"}),
    ("creation", "creation=lt2024-02-01", {"a"}),
    ("creation", "creation=ge2024-02-01&creation=lt2024-04-01", {"b", "c"}),
    ("creation", "creation=2024-01-10", set()),
    # date (DocumentReference.date)
    ("date", "date=2024-02-10", {"b"}),
    ("date", "date=gt2024-05-10T10:00:00%2B01:00", {"f"}),
    ("date", "date=le2024-01-31", {"a"}),
    ("date", "date=2023", set()),
    # period (serviceStart/StopTime): ``eq`` contains, ``ge``/``lt`` overlap at either end
    ("period", "period=2024-03", {"c"}),
    ("period", "period=ge2024-06-04", {"f"}),
    ("period", "period=lt2024-01-02", {"a"}),
    ("period", "period=ge2024-01-04&period=lt2024-02-02", {"a", "b"}),
    ("period", "period=2024-03-03", set()),
    # event (eventCodeList)
    ("event", f"event={CCAM}|EVTA", {"a"}),
    ("event", "event=EVTB,EVTD", {"b", "d"}),
    ("event", f"event={SNOMED}|EVTA", set()),
    # facility (healthcareFacilityTypeCode)
    ("facility", f"facility={SNOMED}|22232009", {"a"}),
    ("facility", "facility=225728007,42665001", {"b", "f"}),
    ("facility", f"facility={SNOMED}|394802001", set()),
    # setting (practiceSettingCode)
    ("setting", f"setting={SNOMED}|394802001", {"a"}),
    ("setting", "setting=394585009,394579002", {"b", "c"}),
    ("setting", f"setting={SNOMED}|22232009", set()),
    # format (formatCode)
    ("format", f"format={FORMAT_CODES}|urn:ihe:iti:xds-sd:pdf:2008", {"a"}),
    ("format", "format=urn:ihe:lab:xd-lab:2008,urn:ihe:rad:TEXT", {"d", "f"}),
    ("format", f"format={FORMAT_CODES}|urn:ihe:iti:xds-sd:audio:2008", set()),
    # identifier: masterIdentifier (uniqueId) and identifier (entryUUID)
    ("identifier", f"identifier={RFC3986}|{master_id('a')}", {"a"}),
    ("identifier", f"identifier={entry_uuid('d')}", {"d"}),
    ("identifier", f"identifier={master_id('b')},{entry_uuid('e')}", {"b", "e"}),
    ("identifier", f"identifier={RFC3986}|urn:oid:1.2.250.1.999.1.99", set()),
    # related (referenceIdList): context.related by identifier, or by reference
    ("related", f"related:identifier={ORDERS}|ORDER-a", {"a"}),
    ("related", "related:identifier=ORDER-c,ORDER-d", {"c", "d"}),
    ("related", "related=Encounter/enc-b", {"b"}),
    ("related", "related=Encounter/enc-b,Encounter/enc-c", {"b", "c"}),
    ("related", "related=Encounter/enc-a", set()),
    ("related", f"related:identifier={ORDERS}|ORDER-z", set()),
    # security-label (confidentialityCode)
    ("security-label", f"security-label={CONFIDENTIALITY}|N", {"a", "d", "e", "f"}),
    ("security-label", "security-label=R,V", {"b", "c"}),
    ("security-label", f"security-label={CONFIDENTIALITY}|U", set()),
    # author.given / author.family (authorPerson), through every author shape; string search:
    # starts with, case and accents folded, ``:exact`` exact, a comma an OR
    ("author.given", "author.given=Jeanne", {"a"}),
    ("author.given", "author.given=paul", {"b"}),
    ("author.given", "author.given=Claire", {"c"}),
    ("author.given", "author.given=Luc", {"d"}),
    ("author.given", "author.given=Anne", {"e"}),
    ("author.given", "author.given=Marc", {"f"}),
    ("author.given", "author.given=Jea,Ma", {"a", "f"}),
    ("author.given", "author.given=Martin", set()),
    ("author.family", "author.family=Martin", {"a"}),
    ("author.family", "author.family=durand", {"b"}),
    ("author.family", "author.family=Lefevre", {"c"}),
    ("author.family", "author.family:exact=Lef%C3%A8vre", {"c"}),
    ("author.family", "author.family:exact=Lefevre", set()),
    ("author.family", "author.family=Bernard", {"d"}),
    ("author.family", "author.family=Petit", {"e"}),
    ("author.family", "author.family=Roux", {"f"}),
    ("author.family", "author.family=Jeanne", set()),
    ("author.given", "author.given=Paul&author.family=Durand", {"b"}),
    ("author.given", "author.given=Paul&author.family=Martin", set()),
]


SETS = {f"set-{key}" for key in KEYS}
LISTS = SETS | {"folder-a"}

#: (parameter, query beyond ``patient=``, the Lists it finds), for every ITI-66 parameter.
FIND_LISTS: list[tuple[str, str, set[str]]] = [
    # code: a SubmissionSet or a Folder (MHDlistTypes), with or without its system
    ("code", "code=submissionset", SETS),
    ("code", f"code={LIST_TYPES}|folder", {"folder-a"}),
    ("code", "code=submissionset,folder", LISTS),
    ("code", f"code={LOINC}|folder", set()),
    # status: the short codes, no system
    ("status", "status=current", LISTS),
    ("status", "status=current,retired", LISTS),
    ("status", "status=retired", set()),
    # date: submissionTime of a SubmissionSet, lastUpdateTime of a Folder
    ("date", "date=2024-02-10", {"set-b"}),
    ("date", "date=ge2024-05-01", {"set-e", "set-f"}),
    ("date", "date=ge2024-01-15&date=lt2024-02-01", {"folder-a"}),
    ("date", "date=2023", set()),
    # designationType: contentType of a SubmissionSet, codeList of a Folder
    ("designationType", f"designationType={SNOMED}|{designation('a')}", {"set-a"}),
    ("designationType", f"designationType={designation('c')},77386006", {"set-c", "folder-a"}),
    ("designationType", f"designationType={LOINC}|{designation('a')}", set()),
    # identifier: uniqueId (and entryUUID)
    ("identifier", f"identifier={RFC3986}|{list_unique_id('d')}", {"set-d"}),
    ("identifier", f"identifier={FOLDER_ID}", {"folder-a"}),
    ("identifier", f"identifier={RFC3986}|{master_id('d')}", set()),
    # sourceId
    ("sourceId", f"sourceId={RFC3986}|{source_id('e')}", {"set-e"}),
    ("sourceId", f"sourceId={source_id('a')},{source_id('f')}", {"set-a", "set-f"}),
    ("sourceId", f"sourceId={RFC3986}|{list_unique_id('e')}", set()),
    # source.given / source.family (the SubmissionSet's authorPerson), through every author shape
    ("source.given", "source.given=jeanne", {"set-a"}),
    ("source.given", "source.given=Paul", {"set-b"}),
    ("source.given", "source.given=Claire,Luc", {"set-c", "set-d"}),
    ("source.given", "source.given=Anne", {"set-e"}),
    ("source.given", "source.given=Marc", {"set-f"}),
    ("source.given", "source.given=Martin", set()),
    ("source.family", "source.family=MARTIN", {"set-a"}),
    ("source.family", "source.family=Durand", {"set-b"}),
    ("source.family", "source.family=lefevre", {"set-c"}),
    ("source.family", "source.family=Bernard,Petit", {"set-d", "set-e"}),
    ("source.family", "source.family:exact=Roux", {"set-f"}),
    ("source.family", "source.family=Jeanne", set()),
]

#: The parameters of ITI-67 (2:3.67.4.1.2.1) and ITI-66 (2:3.66.4.1.2.1) of MHD 4.2 besides
#: ``patient`` and ``patient.identifier`` (test_patient_parameters); ITI-67's
#: ``targetCommunityIdList`` belongs to the Target Communities Option, not declared here.
MHD_PARAMETERS = {
    "DocumentReference": {
        "author.given",
        "author.family",
        "category",
        "creation",
        "date",
        "event",
        "facility",
        "format",
        "identifier",
        "period",
        "related",
        "security-label",
        "setting",
        "status",
        "type",
    },
    "List": {"code", "date", "designationType", "identifier", "source.given", "source.family", "sourceId", "status"},
}
CASES = {"DocumentReference": FIND_DOCUMENTS, "List": FIND_LISTS}


@pytest.mark.parametrize("rtype", CASES)
def test_every_mhd_parameter_is_covered(rtype: str) -> None:
    """Each parameter has a case that finds something and one that finds something else or
    nothing: a parameter the server ignored fails."""
    cases = CASES[rtype]
    assert {name for name, _, _ in cases} == MHD_PARAMETERS[rtype]
    for name in MHD_PARAMETERS[rtype]:
        results = [expected for n, _, expected in cases if n == name]
        assert any(results) and any(r != results[0] for r in results), name


def _id(case: tuple[str, str, set[str]]) -> str:
    return case[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", FIND_DOCUMENTS, ids=_id)
def test_find_document_references(record: Record, case: tuple[str, str, set[str]], transport: str) -> None:
    """ITI-67."""
    _, query, expected = case
    assert found(record, "DocumentReference", f"patient={record.pid}&{query}", transport) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", FIND_LISTS, ids=_id)
def test_find_document_lists(record: Record, case: tuple[str, str, set[str]], transport: str) -> None:
    """ITI-66."""
    _, query, expected = case
    assert found(record, "List", f"patient={record.pid}&{query}", transport) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("rtype", "everything"), [("DocumentReference", ALL), ("List", LISTS)])
def test_patient_parameters(record: Record, rtype: str, everything: set[str], transport: str) -> None:
    """``patient`` (id, relative or absolute reference) and ``patient.identifier`` (the INS, with
    or without its system) find the patient's documents and lists; naming another patient is
    refused (R1, CONTRACT §2), whatever the transport."""
    base = record.world.config.base_url
    pid = record.pid
    for query in (
        f"patient={pid}",
        f"patient=Patient/{pid}",
        q(patient=f"{base}/Patient/{pid}"),
        q(patient_identifier=f"{INS_SYSTEM}|{INS}"),
        q(patient_identifier=INS),
    ):
        assert found(record, rtype, query, transport) == everything, query
    for query in ("patient=pat-" + OTHER_INS, q(patient_identifier=f"{INS_SYSTEM}|{OTHER_INS}")):
        assert ask(record.doctor, rtype, query, transport).status_code == 403, query


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("rtype", ["DocumentReference", "List"])
def test_a_search_must_name_the_patient(record: Record, rtype: str, transport: str) -> None:
    """ITI-67 and ITI-66 require ``patient`` or ``patient.identifier`` (CONTRACT §7: 400 with an
    OperationOutcome)."""
    response = ask(record.doctor, rtype, f"status=current&_id={record.ids['set-a']},{record.ids['a']}", transport)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = xml_to_json(response.get_data()) if transport.endswith("xml") else response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert "patient" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("rtype", ["DocumentReference", "List"])
def test_post_search_parameters_in_the_url_the_body_or_both(record: Record, rtype: str) -> None:
    """The POST forms of the ITI-67/ITI-66 examples (2:3.67.4.1.2.3): parameters in the URL, in a
    form body, or split between them; ``_format`` in the body chooses the format as in the URL."""
    client, pid = record.doctor, record.pid
    form = {**client.headers, "Content-Type": "application/x-www-form-urlencoded"}
    only_url = client.client.post(f"/fhir/{rtype}/_search?patient={pid}&status=current", headers=client.headers)
    split = client.client.post(f"/fhir/{rtype}/_search?patient={pid}", data="status=current", headers=form)
    body = client.client.post(f"/fhir/{rtype}/_search", data=f"patient={pid}&status=current&_format=xml", headers=form)
    expected = len(found(record, rtype, f"patient={pid}&status=current", "GET json"))
    assert only_url.get_json()["total"] == split.get_json()["total"] == expected > 0
    assert body.mimetype == FHIR_XML
    assert xml_to_json(body.get_data())["total"] == expected


def test_a_patient_named_by_its_ins_only_is_found_by_patient(tmp_path: Path) -> None:
    """ITI-65 accepts a logical reference by national identifier (2:3.65.4.1.2.2): a document and
    submission set whose subject is the INS alone are found by ``patient``, ``patient.identifier``
    and ``patient:identifier`` all the same (the recipient records the Patient it names)."""
    world = World(tmp_path)
    try:
        pid = world.seed_patient(INS)
        world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
        doctor = world.doctor(DR, INS)
        logical = {"identifier": {"system": INS_SYSTEM, "value": INS}}
        bundle = submission(pid, subject=logical)
        bundle["entry"][0]["resource"]["subject"] = logical
        created(doctor.post("", bundle))
        record = Record(world, pid, doctor, {})
        for rtype in ("DocumentReference", "List"):
            for query in (f"patient={pid}", q(patient_identifier=INS), q(patient__identifier=f"{INS_SYSTEM}|{INS}")):
                assert len(found(record, rtype, query, "GET json")) == 1, (rtype, query)
    finally:
        world.close()


def test_type_is_no_iti66_parameter(record: Record) -> None:
    """MHD 4.2 ITI-66 has no ``type`` (MHD 3's DocumentManifest had): like any parameter the
    server does not know, it is refused under ``handling=strict`` and otherwise ignored with a
    warning, never silently."""
    query = f"List?patient={record.pid}&type=submissionset"
    strict = record.doctor.get(query, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.get_data(as_text=True)
    lenient = bundle_of(record.doctor.get(query), "GET json")
    outcomes = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "type" in outcomes[0]["issue"][0]["diagnostics"]


# -------------------------------------------------------------------------- ITI-68


def attachments(record: Record) -> list[tuple[str, dict[str, Any]]]:
    """``(key, content.attachment)`` of every document an ITI-67 returns."""
    bundle = bundle_of(ask(record.doctor, "DocumentReference", f"patient={record.pid}", "GET json"), "GET json")
    found = [
        (record.keys({e["resource"]["id"]}).pop(), e["resource"]["content"][0]["attachment"]) for e in bundle["entry"]
    ]
    assert {key for key, _ in found} == ALL
    return found


def retrieve(record: Record, url: str, accept: str | None) -> TestResponse:
    """ITI-68: a GET of the attachment URL itself, as an HTTP client makes it."""
    headers = {**record.doctor.headers, **({"Accept": accept} if accept else {})}
    return record.doctor.client.get(url, headers=headers)


@pytest.mark.parametrize("accept", ["*/*", "own", "application/octet-stream", "text/*, application/fhir+json;q=0.5"])
def test_attachment_urls_retrieve_the_documents(record: Record, accept: str) -> None:
    """Each result's ``content.attachment.url`` is a full URL (2:3.67.4.2.2.1.1) that ITI-68 answers
    with the document's bytes under its media type, to a client asking for anything, for that
    type (``text/xml`` for ``f``: its own type, not FHIR XML) or for bytes."""
    base = record.world.config.base_url
    for key, attachment in attachments(record):
        assert attachment["url"].startswith(f"{base}/Binary/"), attachment["url"]
        response = retrieve(record, attachment["url"], attachment["contentType"] if accept == "own" else accept)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == attachment["contentType"] == DOCS[key].content_type
        assert response.get_data() == content(key)
        assert response.headers["Content-Length"] == str(attachment["size"])


@pytest.mark.parametrize("accept", [None, "application/fhir+json", FHIR_XML, "application/fhir+json, */*;q=0.8"])
def test_a_fhir_client_gets_the_binary_resource(record: Record, accept: str | None) -> None:
    """The same URL read as FHIR (no ``Accept``, or a FHIR type first) gives the Binary resource."""
    for key, attachment in attachments(record):
        response = retrieve(record, attachment["url"], accept)
        assert response.status_code == 200, response.get_data(as_text=True)
        xml = accept == FHIR_XML
        binary = xml_to_json(response.get_data()) if xml else response.get_json()
        assert response.mimetype == (FHIR_XML if xml else "application/fhir+json")
        assert binary["resourceType"] == "Binary"
        assert base64.b64decode(binary["data"]) == content(key)


def test_a_document_is_not_served_in_a_type_it_does_not_have(record: Record) -> None:
    """ITI-68: 406 when the document cannot be given in a type the consumer accepts."""
    key, attachment = attachments(record)[0]
    response = retrieve(record, attachment["url"], "application/pdf")
    assert response.status_code == 406, (key, response.get_data(as_text=True))
    assert response.get_json()["resourceType"] == "OperationOutcome"
