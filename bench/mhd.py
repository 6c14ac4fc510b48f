"""IHE MHD requests of the bench: ITI-65 Provide Document Bundles carrying a real CDA R2 document.

The CDA is one of the CI-SIS examples of the shared data (``cda/AVC-SUNV_2022.01.xml``, a
*Synthèse d'épisode de soins*, LOINC 34133-9, class 11, which doctors read), cut to about 10 KB: its
comments and indentation removed, its whole header kept and as many of its body sections, in order,
as fit. Per document only what must differ is replaced: the document's id (a ``2.25.`` OID from a
fresh UUID, so that ids never repeat, even in a reused directory), its date, the patient's INS in
``recordTarget`` and the idNatPs of its author (the bench doctor, who sends it). The server checks
every one of those against the DocumentReference (fhir_server/dmp/documents/cda.py, ``check_against``),
as it checks the size and SHA-1 of the Binary.

The Bundle follows the ANS PDSm profiles for the DMP (``pdsm-comprehensive-provide-document-bundle``,
as the PDSm-for-DMP example ``Bundle-example-td2-iti65-lot-soumission`` does): a SubmissionSet List,
then per document a DocumentReference and the Binary it points at (``urn:uuid`` fullUrls), the
patient named as DMP clients know it, by INS (``Patient?identifier=``, resolved by the server).
"""

from __future__ import annotations

import base64
import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

from bench.datagen import INS_NIR, fhir_instant, ins, random_date

ROOT = Path(__file__).resolve().parent.parent
#: The shared data folder beside the checkout (``../shared/data``), as the tests find it.
SHARED_DATA = ROOT.parent / "shared" / "data"
CDA_EXAMPLE = SHARED_DATA / "cda" / "AVC-SUNV_2022.01.xml"
#: What a CDA of the bench is cut to, at most (the whole header is always kept).
CDA_TARGET_BYTES = 10_240

HL7 = "urn:hl7-org:v3"
IDNATPS_OID = "1.2.250.1.71.4.2.1"
IDNATPS_SYSTEM = f"urn:oid:{IDNATPS_OID}"
INS_OIDS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
SNOMED = "http://snomed.info/sct"
FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
CDA_MEDIA_TYPE = "application/xml"
#: The sending system (SubmissionSet sourceId) and the custodian (a FINESS) of every Bundle.
SOURCE_ID = "urn:oid:1.2.250.1.999.2"
CUSTODIAN = "330780038"
#: The example's class (TRE_A03) for its type 34133-9, as ig/ConceptMap maps it.
DOCUMENT_CLASS = ("11", "Synthèse")
#: Placeholders of the template, replaced per document (none can occur in the example's text).
_DOC_ID, _INS, _TIME, _AUTHOR = "@@DOC-ID@@", "@@INS@@", "@@TIME@@", "@@IDNATPS@@"


@dataclass(frozen=True)
class CdaTemplate:
    """The example, cut and with placeholders where each document differs; rendered per document."""

    text: str
    type_code: tuple[str, str, str]  # (system, code, display) of ClinicalDocument/code, as FHIR says it
    title: str
    source: str  # the example's file name
    example_bytes: int  # the example as published (comments and indentation included)
    sections_kept: int
    sections: int

    def render(self, doc_oid: str, patient_ins: str, idnatps: str, moment: datetime) -> bytes:
        hl7_ts = moment.strftime("%Y%m%d%H%M%S+0000")
        text = self.text.replace(_DOC_ID, doc_oid).replace(_INS, patient_ins)
        return text.replace(_TIME, hl7_ts).replace(_AUTHOR, idnatps).encode("utf-8")


def _h(tag: str) -> str:
    return f"{{{HL7}}}{tag}"


@cache
def cda_template(path: Path = CDA_EXAMPLE, target_bytes: int = CDA_TARGET_BYTES) -> CdaTemplate:
    """Read the example once: placeholders for the document id, date, patient INS and author, then
    the body's sections kept in order while the document stays within ``target_bytes``."""
    from fhir_server.dmp.documents.cda import parse_cda  # the server's reading of it: type and title

    raw = path.read_bytes()
    parser = etree.XMLParser(remove_comments=True, remove_pis=True, remove_blank_text=True, resolve_entities=False)
    root = etree.fromstring(raw, parser)
    original = parse_cda(raw)
    root.find(_h("id")).attrib.clear()
    root.find(_h("id")).set("root", _DOC_ID)
    set_id = root.find(_h("setId"))
    if set_id is not None:
        set_id.attrib.clear()
        set_id.set("root", _DOC_ID + ".0")
    root.find(_h("effectiveTime")).set("value", _TIME)
    for ident in root.iterfind(f"{_h('recordTarget')}/{_h('patientRole')}/{_h('id')}"):
        if ident.get("root") in INS_OIDS:
            ident.set("root", INS_OIDS[0])
            ident.set("extension", _INS)
    authors = {a.idnatps for a in original.authors if a.idnatps}
    for ident in root.iter(_h("id")):  # the author wherever they appear (legal authenticator, ...)
        if ident.get("root") == IDNATPS_OID and ident.get("extension") in authors:
            ident.set("extension", _AUTHOR)
    body = root.find(f"{_h('component')}/{_h('structuredBody')}")
    components = body.findall(_h("component")) if body is not None else []
    for component in components:
        body.remove(component)  # type: ignore[union-attr]  # components imply a body
    kept = 0
    for index, component in enumerate(components):
        body.append(component)  # type: ignore[union-attr]
        if index > 0 and len(_serialise(root)) > target_bytes:
            body.remove(component)  # type: ignore[union-attr]
        else:
            kept += 1
    return CdaTemplate(
        text=_serialise(root).decode("utf-8"),
        type_code=(str(original.type_code[0]), str(original.type_code[1]), str(original.type_code[2] or "")),
        title=original.title or "",
        source=path.name,
        example_bytes=len(raw),
        sections_kept=kept,
        sections=len(components),
    )


def _serialise(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _urn(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def provide_bundle(rng: random.Random, patient: int, idnatps: str, documents: int = 1) -> dict[str, Any]:
    """One ITI-65 Provide Document Bundle of ``documents`` CDA documents about one patient, from one author."""
    template = cda_template()
    nir = ins(patient)
    subject = {"reference": f"Patient?identifier={INS_NIR}|{nir}"}
    submitted = fhir_instant(datetime.now().astimezone())
    set_url = _urn(rng)
    entries: list[dict[str, Any]] = []
    items = []
    for _ in range(documents):
        moment = random_date(rng)
        doc_oid = f"2.25.{uuid.uuid4().int}"
        data = template.render(doc_oid, nir, idnatps, moment)
        ref_url, bin_url = _urn(rng), _urn(rng)
        items.append({"item": {"reference": ref_url}})
        reference = _document_reference(template, subject, nir, idnatps, doc_oid, moment, data, bin_url)
        binary = {"resourceType": "Binary", "contentType": CDA_MEDIA_TYPE, "data": base64.b64encode(data).decode()}
        entries.append(_post(ref_url, reference))
        entries.append(_post(bin_url, binary))
    submission_set = _submission_set(rng, subject, nir, idnatps, submitted, items)
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [f"{PDSM}pdsm-comprehensive-provide-document-bundle"]},
        "type": "transaction",
        "entry": [_post(set_url, submission_set), *entries],
    }


def provide_bundle_bytes(rng: random.Random, patient: int, idnatps: str, documents: int = 1) -> bytes:
    return orjson.dumps(provide_bundle(rng, patient, idnatps, documents))


def _post(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _source_patient(nir: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "patient-source", "identifier": [{"system": INS_NIR, "value": nir}]}


def _author(idnatps: str) -> dict[str, Any]:
    identifier = [{"system": IDNATPS_SYSTEM, "value": idnatps}]
    return {"resourceType": "Practitioner", "id": "practitioner-author", "identifier": identifier}


def _submission_set(
    rng: random.Random, subject: dict[str, Any], nir: str, idnatps: str, submitted: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "resourceType": "List",
        "meta": {"profile": [f"{PDSM}pdsm-submissionset-comprehensive"]},
        "contained": [_source_patient(nir), _author(idnatps)],
        "extension": [
            {"url": f"{MHD}ihe-designationType", "valueCodeableConcept": _coding(TRE_A03, *DOCUMENT_CLASS)},
            {"url": f"{MHD}ihe-sourceId", "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": SOURCE_ID}},
            {"url": f"{MHD}ihe-sourcePatientId", "valueReference": {"reference": "#patient-source"}},
        ],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": _urn(rng)}],
        "status": "current",
        "mode": "working",
        "code": _coding(LIST_TYPES, "submissionset"),
        "subject": subject,
        "date": submitted,
        "source": {"reference": "#practitioner-author"},
        "entry": items,
    }


def _document_reference(
    template: CdaTemplate,
    subject: dict[str, Any],
    nir: str,
    idnatps: str,
    doc_oid: str,
    moment: datetime,
    data: bytes,
    binary_url: str,
) -> dict[str, Any]:
    when = fhir_instant(moment)
    finess = [{"system": FINESS, "value": CUSTODIAN}]
    custodian = {"resourceType": "Organization", "id": "custodian", "identifier": finess}
    return {
        "resourceType": "DocumentReference",
        "meta": {"profile": [f"{PDSM}pdsm-comprehensive-document-reference"]},
        "contained": [_source_patient(nir), _author(idnatps), custodian],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc_oid}"},
        "status": "current",
        "type": _coding(*template.type_code),
        "category": [_coding(TRE_A03, *DOCUMENT_CLASS)],
        "subject": subject,
        "date": when,
        "author": [{"reference": "#practitioner-author"}],
        "custodian": {"reference": "#custodian"},
        "securityLabel": [_coding(CONFIDENTIALITY, "N", "normal")],
        "content": [
            {
                "attachment": {
                    "contentType": CDA_MEDIA_TYPE,
                    "language": "fr-FR",
                    "url": binary_url,
                    "size": len(data),
                    "hash": sha1_b64(data),
                    "title": template.title,
                    "creation": when,
                },
                "format": {"system": FORMAT_CODES, "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"},
            }
        ],
        "context": {
            "period": {"start": when},
            "facilityType": _coding(SNOMED, "22232009", "Hospital"),
            "practiceSetting": _coding(SNOMED, "394802001", "General medicine"),
            "sourcePatientInfo": {"reference": "#patient-source"},
        },
    }
