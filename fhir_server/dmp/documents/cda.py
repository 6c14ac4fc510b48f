"""CDA R2 documents (ANS CI-SIS) for the DMP: safe parsing, PDSm metadata, checks, rendering.

Why: an IHE MHD ITI-65 submission carries a CDA in a Binary next to the DocumentReference that
describes it. The server must

1. read the CDA without exposing itself to XML attacks (external entities, entity expansion,
   deep nesting, huge documents): the document comes from a client;
2. derive the DocumentReference the French PDSm profile expects from the CDA header, for clients
   that send only the document;
3. refuse metadata that contradicts the document: the DMP's access rules are decided on the
   DocumentReference (patient, type, author), so a mismatch would show the document to the wrong
   people or hide it from the right ones;
4. show a CDA to people without a CDA viewer, without letting the document run code in their
   browser.

Where each header element goes follows the CI-SIS "Volet Structuration minimale" and the ANS
PDSm examples (``ans.fhir.fr.pdsm4dmp``). Code tables come from ``ig/`` (the JDV_J66 type → TRE_A03
class ConceptMap, the TRE_G15 CodeSystem and the OIDs of the CodeSystems there); the few other code
systems a CDA header uses are small constants below, each citing its source.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import copy
import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from lxml import etree

from authz.terms import (
    CONFIDENTIALITY_SYSTEM,
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
    PROFESSION_SYSTEM,
    SPECIALTY_SYSTEM,
)
from fhir_server.runtime.config import PROJECT_ROOT

V3 = "urn:hl7-org:v3"
_NS = {"v3": V3}
_CLINICAL_DOCUMENT = f"{{{V3}}}ClinicalDocument"

#: Larger documents are refused before anything is parsed (ITI-65 bodies are bounded anyway).
MAX_BYTES = 20 * 1024 * 1024
#: Real CI-SIS documents stay below 20 levels; libxml2 itself stops at 256 without huge_tree.
MAX_DEPTH = 128
#: The pull parser is fed this much at a time, so that depth and root checks stop early.
_CHUNK = 64 * 1024

# No DTD is ever loaded or entity resolved; PIs (xml-stylesheet, oxygen) and comments are noise.
_PARSER_OPTIONS: dict[str, bool] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_pis": True,
    "remove_comments": True,
}
#: A DTD is the doorway to entity attacks; CDA R2 documents never have one. Searched in the
#: decoded text, so that UTF-16 or UTF-32 spellings are found too.
_DTD_MARKUP = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml\s.*?\?>", re.DOTALL)
_DECLARED_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]{1,40})[\"']")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: How an XML document without a byte order mark starts in the wider encodings (XML 1.0 App. F).
_UNMARKED_STARTS = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)
#: Encodings a declaration may name when the document starts as ASCII (codecs' canonical names).
_ASCII_COMPATIBLE = frozenset({"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"})

# -------------------------------------------------------------------------- code systems

LOINC = "http://loinc.org"
URI_SYSTEM = "urn:ietf:rfc:3986"
_CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"
_IDNATPS_OID = IDNATPS_SYSTEM.removeprefix("urn:oid:")
_INS_OIDS = frozenset(system.removeprefix("urn:oid:") for system in INS_SYSTEMS)
_TRE_A00 = "https://mos.esante.gouv.fr/NOS/TRE_A00-ProducteurDocNonPS/FHIR/TRE-A00-ProducteurDocNonPS"
_TRE_A01 = "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
_TRE_A02 = "https://mos.esante.gouv.fr/NOS/TRE_A02-ProfessionSavFaire-CISIS/FHIR/TRE-A02-ProfessionSavFaire-CISIS"
_TRE_A06 = "https://mos.esante.gouv.fr/NOS/TRE_A06-FormatCodeComplementaire/FHIR/TRE-A06-FormatCodeComplementaire"
_TRE_A11 = "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
_TRE_R02 = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"

#: OID → FHIR URL of the code systems a CI-SIS header uses that ``ig/CodeSystem`` does not list
#: (those are read from there). Sources: HL7 FHIR R4 terminology (LOINC, SNOMED CT, v3 codes);
#: the ANS NOS tables as published in the ANS terminology IG (ansforge/IG-terminologie-de-sante),
#: whose OIDs are those of ../shared/data/terminology/svs and of the CDA examples; TRE_G15 and
#: TRE_R38 URLs as authz.terms names them.
_HEADER_SYSTEMS: dict[str, str] = {
    "2.16.840.1.113883.6.1": LOINC,
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    _CONFIDENTIALITY_OID: CONFIDENTIALITY_SYSTEM,
    "2.16.840.1.113883.5.1": "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender",
    "1.2.250.1.71.1.2.7": PROFESSION_SYSTEM,  # TRE_G15-ProfessionSante
    "1.2.250.1.213.2.28": SPECIALTY_SYSTEM,  # TRE_R38-SpecialiteOrdinale
    "1.2.250.1.213.1.1.4.5": _TRE_A02,  # author codes "G15_10/SM26" (JDV_J01 XdsAuthorSpecialty)
    "1.2.250.1.213.1.1.4.6": _TRE_A00,  # non-professional producers: DISPOSITIF, ALIM_AM...
    "1.2.250.1.213.1.1.4.9": _TRE_A01,  # practice settings (JDV_J04)
    "1.2.250.1.71.4.2.4": _TRE_R02,  # facility types SA.. (JDV_J02)
}

#: CI-SIS document model (templateId) → XDS formatCode: the ANS ConceptMap
#: ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS v5.0.0 (https://mos.esante.gouv.fr/NOS/
#: ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS), without its organ-specific IHE APSR rows.
# fmt: off
_FORMAT_CODES: dict[str, tuple[str, str]] = {
    "1.2.250.1.213.1.1.1.5.1": (_TRE_A06, "urn:asip:ci-sis:cse-cs8:2017"),
    "1.2.250.1.213.1.1.1.5.2": (_TRE_A06, "urn:asip:ci-sis:cse-cs9:2017"),
    "1.2.250.1.213.1.1.1.5.3": (_TRE_A06, "urn:asip:ci-sis:cse-cs24:2017"),
    "1.2.250.1.213.1.1.1.5.4": (_TRE_A06, "urn:ans:ci-sis:cse-mde:2023"),
    "1.2.250.1.213.1.1.1.8": (_TRE_A06, "urn:asip:ci-sis:frcp:2011"),
    "1.2.250.1.213.1.1.1.9": (_TRE_A06, "urn:asip:ci-sis:idap:2011"),
    "1.2.250.1.213.1.1.1.12.1": (_TRE_A06, "urn:asip:ci-sis:obp-sap:2023"),
    "1.2.250.1.213.1.1.1.12.2": (_TRE_A06, "urn:asip:ci-sis:obp-snm:2023"),
    "1.2.250.1.213.1.1.1.12.3": (_TRE_A06, "urn:asip:ci-sis:obp-sne:2023"),
    "1.2.250.1.213.1.1.1.12.4": (_TRE_A06, "urn:asip:ci-sis:obp-scm:2023"),
    "1.2.250.1.213.1.1.1.12.5": (_TRE_A06, "urn:asip:ci-sis:obp-sem:2023"),
    "1.2.250.1.213.1.1.1.13": (_TRE_A06, "urn:asip:ci-sis:vsm:2012"),
    "1.2.250.1.213.1.1.1.15": (_TRE_A06, "urn:asip:ci-sis:aunv:2013"),
    "1.2.250.1.213.1.1.1.16": (_TRE_A06, "urn:asip:ci-sis:eunv:2013"),
    "1.2.250.1.213.1.1.1.17": (_TRE_A06, "urn:asip:ci-sis:sunv:2013"),
    "1.2.250.1.213.1.1.1.18": (_TRE_A06, "urn:asip:ci-sis:crrtn:2013"),
    "1.2.250.1.213.1.1.1.2.1.1": (_TRE_A06, "urn:asip:ci-sis:avk:2009"),
    "1.2.250.1.213.1.1.1.2.1.2": (_TRE_A06, "urn:asip:ci-sis:tap:2009"),
    "1.2.250.1.213.1.1.1.2.1.3": (_TRE_A06, "urn:asip:ci-sis:dci:2009"),
    "1.2.250.1.213.1.1.1.2.1.4": (_TRE_A06, "urn:asip:ci-sis:psc:2009"),
    "1.2.250.1.213.1.1.1.2.1.5": (_TRE_A06, "urn:asip:ci-sis:ppv:2009"),
    "1.2.250.1.213.1.1.1.21": (_TRE_A06, "urn:asip:ci-sis:ldl-ees:2017"),
    "1.2.250.1.213.1.1.1.22": (_TRE_A06, "urn:asip:ci-sis:dlu:2015"),
    "1.2.250.1.213.1.1.1.23": (_TRE_A06, "urn:asip:ci-sis:fludt:2017"),
    "1.2.250.1.213.1.1.1.24": (_TRE_A06, "urn:asip:ci-sis:fludr:2017"),
    "1.2.250.1.213.1.1.1.25": (_TRE_A06, "urn:asip:ci-sis:pavc:2016"),
    "1.2.250.1.213.1.1.1.26": (_TRE_A06, "urn:asip:ci-sis:pps-cancer:2017"),
    "1.2.250.1.213.1.1.1.27": (_TRE_A06, "urn:asip:ci-sis:d2lm-fin:2017"),
    "1.2.250.1.213.1.1.1.28": (_TRE_A06, "urn:asip:ci-sis:d2lm-fidd:2017"),
    "1.2.250.1.213.1.1.1.29": (_TRE_A06, "urn:asip:ci-sis:ldl-ses:2017"),
    "1.2.250.1.213.1.1.1.30": (_TRE_A06, "urn:asip:ci-sis:sdm-mr:2017"),
    "1.2.250.1.213.1.1.1.32": (_TRE_A06, "urn:asip:ci-sis:crgm:2018"),
    "1.2.250.1.213.1.1.1.36": (_TRE_A06, "urn:asip:ci-sis:hr:2019"),
    "1.2.250.1.213.1.1.1.37": (_TRE_A06, "urn:asip:ci-sis:vac:2019"),
    "1.2.250.1.213.1.1.1.38": (_TRE_A06, "urn:asip:ci-sis:tlm-da:2020"),
    "1.2.250.1.213.1.1.1.40": (_TRE_A06, "urn:asip:ci-sis:cr-anest:2020"),
    "1.2.250.1.213.1.1.1.41": (_TRE_A06, "urn:asip:ci-sis:cr-cpa:2020"),
    "1.2.250.1.213.1.1.1.46": (_TRE_A06, "urn:asip:ci-sis:vac-note:2021"),
    "1.2.250.1.213.1.1.1.47": (_TRE_A06, "urn:ans:ci-sis:img-da:2022"),
    "1.2.250.1.213.1.1.1.52": (_TRE_A06, "urn:ans:ci-sis:bio-ep-bio:2022"),
    "1.2.250.1.213.1.1.1.56": (_TRE_A06, "urn:asip:ci-sis:ppp:2023"),
    "1.2.250.1.213.1.1.1.58": (_TRE_A06, "urn:asip:ci-sis:export-dui:2023"),
    "1.2.250.1.213.1.1.1.59": (_TRE_A06, "urn:ans:ci-sis:trod:2024"),
    "1.2.250.1.213.1.1.1.61": (_TRE_A06, "urn:asip:ci-sis:ft-su:2024"),
    "1.2.250.1.213.1.1.1.62": (_TRE_A06, "urn:asip:ci-sis:fr-su:2024"),
    "1.2.250.1.213.1.1.1.39": (_TRE_A11, "urn:ihe:pharm:pre:2010"),
    "1.2.250.1.213.1.1.1.54": (_TRE_A11, "urn:ihe:pharm:dis:2010"),
    "1.2.250.1.213.1.1.1.42": (_TRE_A11, "urn:ihe:eyecare:geneyeevalcn:2014"),
    "1.2.250.1.213.1.1.1.43": (_TRE_A11, "urn:ihe:eyecare:geneyeevalcn:2014"),
    "1.2.250.1.213.1.1.1.44": (_TRE_A11, "urn:ihe:eyecare:geneyeevalcn:2014"),
    "1.2.250.1.213.1.1.1.45": (_TRE_A11, "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"),
    "1.2.250.1.213.1.1.1.51": (_TRE_A11, "urn:ihe:pcc:ips:2020"),
    "1.2.250.1.213.1.1.1.55": (_TRE_A11, "urn:ihe:lab:xd-lab:2008"),
    "1.2.250.1.213.1.1.1.57": (_TRE_A11, "urn:ihe:palm:apsr:2016"),
    "1.3.6.1.4.1.19376.1.3.3": (_TRE_A11, "urn:ihe:lab:xd-lab:2008"),
    "1.3.6.1.4.1.19376.1.8.1.1.1": (_TRE_A11, "urn:ihe:pat:apsr:all:2010"),
}
# fmt: on
#: Unstructured (N1) CDA: the format follows the embedded media type (same ConceptMap, TRE_R221).
_N1_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"
_N1_FORMAT_CODES = {
    "application/pdf": "urn:ihe:iti:xds-sd:pdf:2008",
    "text/plain": "urn:ihe:iti:xds-sd:text:2008",
    "image/jpeg": "urn:ihe:iti-fr:xds-sd:jpeg:2010",
    "text/rtf": "urn:ihe:iti-fr:xds-sd:rtf:2010",
    "image/tiff": "urn:ihe:iti-fr:xds-sd:tiff:2010",
}
#: HL7 v3 Confidentiality codes (a DMP uses N, R, V: JDV_J58) and their HL7 displays.
_CONFIDENTIALITY_DISPLAYS = {
    "U": "unrestricted",
    "L": "low",
    "M": "moderate",
    "N": "normal",
    "R": "restricted",
    "V": "very restricted",
}
#: HL7 v3 AdministrativeGender → FHIR AdministrativeGender (HL7 ConceptMap cm-administrative-gender-v3).
_GENDERS = {"F": "female", "M": "male", "UN": "other", "U": "unknown"}
#: "G15_<profession>[/<savoir-faire>]" (TRE_A02); the savoir-faire is a TRE_R38 specialty when it
#: is one of its SM (médecin), SCD (chirurgien-dentiste) or SI (infirmier) codes.
_AUTHOR_CODE = re.compile(r"G15_([0-9]+)(?:/(\S+))?")
_TRE_R38_CODE = re.compile(r"(?:SM|SCD|SI)[0-9]+")
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_UUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
_HL7_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?")
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
_CONCEPT_MAP = Path("ConceptMap") / "ConceptMap-dmp-document-type-to-class.json"
_PROFESSIONS = Path("CodeSystem") / "CodeSystem-TRE-G15-ProfessionSante.json"

Code = tuple[str, str, str | None]  # (system URL, code, display)
Identifier = tuple[str, str]  # (system, value)


class CdaError(ValueError):
    """A CDA the server cannot accept; the message says what is wrong and where, in words safe to
    send back to the client (nothing from outside the document, no library internals)."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.location = location


class NotClinicalDocument(CdaError):
    """Well-formed XML whose root is not a CDA ``ClinicalDocument``: some other XML document,
    which a caller storing any content may accept as it is, while a caller expecting a CDA refuses it."""


# -------------------------------------------------------------------------- the header


@dataclass(frozen=True)
class CdaName:
    """A person's name as the CI-SIS writes it: birth family name and first names."""

    family: str | None
    given: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join([*self.given, *([self.family] if self.family else [])])


@dataclass(frozen=True)
class CdaOrganization:
    identifier: Identifier | None
    name: str | None


@dataclass(frozen=True)
class CdaAuthor:
    """An author (or the legal authenticator): a professional, a device or the patient."""

    identifier: Identifier | None
    name: CdaName | None
    profession: Code | None  # TRE_G15
    specialty: Code | None  # TRE_R38
    #: assignedAuthor/code as written: the XDS authorSpecialty (TRE_A02 "G15_10/SM26", TRE_A00 "DISPOSITIF").
    role: Code | None
    organization: CdaOrganization | None
    device: str | None  # assignedAuthoringDevice/softwareName
    time: str | None  # FHIR dateTime

    @property
    def idnatps(self) -> str | None:
        """The idNatPs (1.2.250.1.71.4.2.1) the DMP knows professionals and devices by."""
        if self.identifier and self.identifier[0] == IDNATPS_SYSTEM:
            return self.identifier[1]
        return None


@dataclass(frozen=True)
class CdaDocument:
    """What the DMP needs from a CDA header, already in FHIR terms (URLs, FHIR dates)."""

    patient_ins: Identifier | None
    patient_name: CdaName | None
    birth_time: str | None  # FHIR date
    gender: str | None  # FHIR AdministrativeGender
    type_code: Code
    title: str | None
    effective_time: str  # FHIR dateTime
    confidentiality: tuple[str, str]
    language: str | None
    authors: list[CdaAuthor]
    custodian: CdaOrganization | None
    document_id: str  # XDS uniqueId as a URI: urn:oid:root or urn:oid:root^extension
    set_id: str | None
    version_number: int | None
    facility_type: Code | None
    practice_setting: Code | None
    format_code: Code | None
    service_period: tuple[str | None, str | None] | None
    legal_authenticator: CdaAuthor | None = None
    template_ids: tuple[str, ...] = field(default=())

    def require_ins(self) -> Identifier:
        """The patient's INS; a DMP document without one belongs to no DMP."""
        if self.patient_ins is None:
            systems = ", ".join(sorted(INS_SYSTEMS))
            raise CdaError(f"recordTarget/patientRole/id: no INS ({systems})", "recordTarget/patientRole/id")
        return self.patient_ins


def parse_cda(data: bytes, max_bytes: int = MAX_BYTES) -> CdaDocument:
    """Parse an untrusted CDA R2 document and read its header; CdaError when it cannot be used."""
    return _document(_parse_root(data, max_bytes))


def hl7_ts_to_fhir(value: str | None) -> str | None:
    """An HL7 v3 TS (``20220101120000+0100``) as a FHIR dateTime (``2022-01-01T12:00:00+01:00``).

    None when the value is not a valid TS. A time without a zone cannot be a FHIR dateTime: only
    its date is kept, which is certain, rather than a zone being guessed.
    """
    match = _HL7_TS.fullmatch((value or "").strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if fraction and not second:
        return None
    try:
        datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    date = year + (f"-{month}" if month else "") + (f"-{day}" if day else "")
    if hour is None or zone is None:
        return date
    zone_hours, zone_minutes = int(zone[1:3]), int(zone[3:])
    if zone_hours > 14 or zone_minutes > 59:
        return None
    return f"{date}T{hour}:{minute or '00'}:{second or '00'}{fraction or ''}{zone[:3]}:{zone[3:]}"


# -------------------------------------------------------------------------- safe parsing


def _parse_root(data: bytes, max_bytes: int) -> etree._Element:
    """The ClinicalDocument element of untrusted bytes; every failure is a CdaError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CdaError("the CDA must be given as bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise CdaError(f"the CDA is larger than {max_bytes} bytes")
    if not data.strip():
        raise CdaError("the CDA is empty")
    text = _decode(data)
    if _DTD_MARKUP.search(text):
        raise CdaError("DOCTYPE and ENTITY declarations are not allowed in a CDA")
    # libxml2 reads exactly the text checked above: UTF-8, the declaration (and its encoding) gone.
    declaration = _XML_DECLARATION.match(text)
    if declaration:
        text = "\n" * declaration.group().count("\n") + text[declaration.end() :]
    root = _pull_parse(text.encode("utf-8"))
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise CdaError("DOCTYPE and ENTITY declarations are not allowed in a CDA")
    return root


def _decode(data: bytes) -> str:
    """The document's text, decoded the way its byte order mark, first bytes or declaration say."""
    encoding = _detect_encoding(data)
    for bom, name in _BOMS:
        if name == encoding and data.startswith(bom):
            data = data[len(bom) :]
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise CdaError(f"the CDA is not valid {encoding.upper()}") from None


def _detect_encoding(data: bytes) -> str:
    """XML 1.0 Appendix F autodetection; a declared encoding is honoured only among the few
    ASCII-compatible ones a CDA uses, so that no exotic decoder can hide a DOCTYPE."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    for start, name in _UNMARKED_STARTS:
        if data.startswith(start):
            return name
    declared = _DECLARED_ENCODING.match(data)
    if declared is None:
        return "utf-8"
    label = declared.group(1).decode("ascii")
    try:
        encoding = codecs.lookup(label).name
    except LookupError:
        encoding = ""
    if encoding not in _ASCII_COMPATIBLE:
        raise CdaError(f"XML declaration: encoding {label!r} is not supported (use UTF-8)")
    return encoding


def _pull_parse(payload: bytes) -> etree._Element:
    """Parse in chunks, counting depth and checking the root as elements open, so that a hostile
    document is stopped early rather than after it has been built."""
    parser = etree.XMLPullParser(events=("start", "end"), **_PARSER_OPTIONS)
    depth = 0
    try:
        for offset in range(0, len(payload), _CHUNK):
            parser.feed(payload[offset : offset + _CHUNK])
            depth = _follow(parser.read_events(), depth)
        root = parser.close()
        _follow(parser.read_events(), depth)
    except CdaError:
        raise
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from exc
    except (etree.LxmlError, ValueError) as exc:
        raise CdaError("the CDA could not be parsed as XML") from exc
    return root


def _follow(events: Iterator[tuple[str, Any]], depth: int) -> int:
    """Track the nesting depth over parser events; refuse too deep or non-CDA documents."""
    for event, element in events:
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise CdaError(f"the CDA is nested deeper than {MAX_DEPTH} levels")
        if depth == 1 and element.tag != _CLINICAL_DOCUMENT:
            raise NotClinicalDocument(f"the root element is {_shorten(str(element.tag))}, not ClinicalDocument in {V3}")
    return depth


def _syntax_error(exc: etree.XMLSyntaxError) -> CdaError:
    """libxml2's complaint about the client's own document, with its position; nothing else."""
    message = str(exc.msg or exc)
    if "depth" in message.lower():
        return CdaError(f"the CDA is nested deeper than {MAX_DEPTH} levels")
    where = f"line {exc.lineno}, column {exc.offset}" if exc.lineno else "somewhere"
    reason = re.sub(r", line \d+, column \d+$", "", message)
    return CdaError(f"the CDA is not well-formed XML ({where}): {_shorten(reason)}")


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------------------- reading the header


def _path(path: str) -> str:
    return "/".join(f"v3:{step}" for step in path.split("/"))


def _find(element: etree._Element | None, path: str) -> etree._Element | None:
    return None if element is None else element.find(_path(path), _NS)


def _findall(element: etree._Element | None, path: str) -> list[etree._Element]:
    return [] if element is None else list(element.iterfind(_path(path), _NS))


def _text(element: etree._Element | None) -> str | None:
    """The element's text with whitespace normalised; None when empty."""
    if element is None:
        return None
    return " ".join("".join(element.itertext()).split()) or None


def _clean(value: str | None) -> str | None:
    return (" ".join(value.split()) or None) if value else None


def _document(root: etree._Element) -> CdaDocument:
    template_ids = tuple(t.get("root", "") for t in _findall(root, "templateId"))
    patient = _find(root, "recordTarget/patientRole/patient")
    legal = _find(root, "legalAuthenticator/assignedEntity")
    return CdaDocument(
        patient_ins=_patient_ins(root),
        patient_name=_name(_find(patient, "name")),
        birth_time=_date(_find(patient, "birthTime")),
        gender=_GENDERS.get(_attribute(_find(patient, "administrativeGenderCode"), "code") or ""),
        type_code=_type_code(root),
        title=_text(_find(root, "title")),
        effective_time=_effective_time(root),
        confidentiality=_confidentiality(root),
        language=_clean(_attribute(_find(root, "languageCode"), "code")),
        authors=[_author(a, a.getparent()) for a in _findall(root, "author/assignedAuthor")],
        custodian=_organization(_find(root, "custodian/assignedCustodian/representedCustodianOrganization")),
        document_id=_document_id(root),
        set_id=_unique_id(_find(root, "setId")),
        version_number=_version_number(root),
        facility_type=_code(_find(root, "componentOf/encompassingEncounter/location/healthCareFacility/code")),
        practice_setting=_practice_setting(root),
        format_code=_format_code(root, template_ids),
        service_period=_service_period(root),
        legal_authenticator=None if legal is None else _author(legal, legal.getparent()),
        template_ids=template_ids,
    )


def _attribute(element: etree._Element | None, name: str) -> str | None:
    return None if element is None else element.get(name)


def _system(oid: str) -> str:
    """The FHIR URL of a code system OID; ``urn:oid:`` when this server does not know it."""
    oid = oid.strip()
    known = _code_system_urls().get(oid)
    if known:
        return known
    if _OID.fullmatch(oid):
        return f"urn:oid:{oid}"
    return f"urn:uuid:{oid.lower()}" if _UUID.fullmatch(oid) else oid


def _code(element: etree._Element | None) -> Code | None:
    """A CD/CE as (system URL, code, display); None when absent or nullFlavored."""
    code, system = _attribute(element, "code"), _attribute(element, "codeSystem")
    if not code or not code.strip() or not system:
        return None
    return (_system(system), code.strip(), _clean(_attribute(element, "displayName")))


def _ii(element: etree._Element | None) -> Identifier | None:
    """An II with root and extension as a FHIR (system, value)."""
    root, extension = _attribute(element, "root"), _clean(_attribute(element, "extension"))
    if not root or not extension:
        return None
    return (_system(root), extension)


def _unique_id(element: etree._Element | None) -> str | None:
    """An II as an XDS uniqueId URI: ``urn:oid:root``, ``urn:oid:root^extension`` (IHE ITI TF-3
    4.2.3.2.26, CI-SIS: the uniqueId of a CDA is its ClinicalDocument/id)."""
    root, extension = (_attribute(element, "root") or "").strip(), _clean(_attribute(element, "extension"))
    if _OID.fullmatch(root):
        base = f"urn:oid:{root}"
    elif _UUID.fullmatch(root):
        base = f"urn:uuid:{root.lower()}"
    else:
        return None
    return f"{base}^{extension}" if extension else base


def _date(element: etree._Element | None) -> str | None:
    """A TS as a FHIR date (birth dates): the time of day, if any, is dropped."""
    value = hl7_ts_to_fhir(_attribute(element, "value"))
    return value.partition("T")[0] if value else None


def _time(element: etree._Element | None) -> str | None:
    return hl7_ts_to_fhir(_attribute(element, "value"))


def _patient_ins(root: etree._Element) -> Identifier | None:
    for element in _findall(root, "recordTarget/patientRole/id"):
        oid, value = (element.get("root") or "").strip(), _clean(element.get("extension"))
        if oid in _INS_OIDS and value:
            return (f"urn:oid:{oid}", value)
    return None


def _name(element: etree._Element | None) -> CdaName | None:
    """CI-SIS names: ``family@qualifier=BR`` is the birth name, unqualified ``given`` the birth
    first names (``given@qualifier=BR`` the first of them, ``CL`` the used ones)."""
    if element is None:
        return None
    families = [(f.get("qualifier"), _name_part(f)) for f in _findall(element, "family")]
    givens = [(g.get("qualifier"), _name_part(g)) for g in _findall(element, "given")]
    family = _preferred(families, ("BR", None))
    given = [text for qualifier, text in givens if qualifier is None and text]
    if not given:
        given = [text for text in (_preferred(givens, ("BR", "CL")),) if text]
    if family is None and not given:
        text = _clean(element.text)
        return CdaName(text) if text else None
    return CdaName(family, tuple(given))


def _name_part(element: etree._Element) -> str | None:
    """A name part; the CI-SIS writes "." for an unknown one (a device's first name)."""
    text = _text(element)
    return text if text and text.strip(".") else None


def _preferred(parts: list[tuple[str | None, str | None]], order: tuple[str | None, ...]) -> str | None:
    for wanted in order:
        for qualifier, text in parts:
            if qualifier == wanted and text:
                return text
    return next((text for _, text in parts if text), None)


def _type_code(root: etree._Element) -> Code:
    code = _code(_find(root, "code"))
    if code is None:
        raise CdaError("ClinicalDocument/code: the document type needs @code and @codeSystem", "ClinicalDocument/code")
    return code


def _effective_time(root: etree._Element) -> str:
    element = _find(root, "effectiveTime")
    value = _time(element)
    if value is None:
        shown = _attribute(element, "value")
        problem = f"{_shorten(shown, 40)!r} is not an HL7 TS" if shown else "missing @value"
        raise CdaError(f"ClinicalDocument/effectiveTime: {problem}", "ClinicalDocument/effectiveTime")
    return value


def _confidentiality(root: etree._Element) -> tuple[str, str]:
    where = "ClinicalDocument/confidentialityCode"
    element = _find(root, "confidentialityCode")
    code, system = _attribute(element, "code"), _attribute(element, "codeSystem")
    if not code:
        raise CdaError(f"{where}: missing @code", where)
    if system and system.strip() != _CONFIDENTIALITY_OID:
        raise CdaError(f"{where}: code system {_shorten(system, 60)} is not HL7 Confidentiality", where)
    if code not in _CONFIDENTIALITY_DISPLAYS:
        raise CdaError(f"{where}: {_shorten(code, 20)!r} is not an HL7 confidentiality code", where)
    return (CONFIDENTIALITY_SYSTEM, code)


def _document_id(root: etree._Element) -> str:
    unique_id = _unique_id(_find(root, "id"))
    if unique_id is None:
        raise CdaError("ClinicalDocument/id: @root must be an OID or a UUID", "ClinicalDocument/id")
    return unique_id


def _version_number(root: etree._Element) -> int | None:
    value = (_attribute(_find(root, "versionNumber"), "value") or "").strip()
    return int(value) if value.isdigit() and len(value) < 10 else None


def _author(assigned: etree._Element, participation: etree._Element | None) -> CdaAuthor:
    """An author/assignedAuthor or legalAuthenticator/assignedEntity (same shape)."""
    role = _code(_find(assigned, "code"))
    profession, specialty = _profession_and_specialty(role)
    return CdaAuthor(
        identifier=_author_identifier(_findall(assigned, "id")),
        name=_name(_find(assigned, "assignedPerson/name")),
        profession=profession,
        specialty=specialty,
        role=role,
        organization=_organization(_find(assigned, "representedOrganization")),
        device=_text(_find(assigned, "assignedAuthoringDevice/softwareName")),
        time=_time(_find(participation, "time")),
    )


def _author_identifier(ids: list[etree._Element]) -> Identifier | None:
    """The idNatPs when there is one (the DMP's key for professionals), else the INS (patient
    authors), else the first identifier."""
    found = [(element.get("root", "").strip(), _ii(element)) for element in ids]
    for wanted in (frozenset({_IDNATPS_OID}), _INS_OIDS):
        for oid, identifier in found:
            if oid in wanted and identifier:
                return identifier
    return next((identifier for _, identifier in found if identifier), None)


def _profession_and_specialty(role: Code | None) -> tuple[Code | None, Code | None]:
    """TRE_G15 profession and TRE_R38 specialty from an author code (TRE_A02 "G15_10/SM26" is
    profession 10 with specialty SM26)."""
    if role is None:
        return None, None
    system, code, _ = role
    if system == PROFESSION_SYSTEM:
        return (PROFESSION_SYSTEM, code, _professions().get(code)), None
    if system == SPECIALTY_SYSTEM:
        return None, role
    match = _AUTHOR_CODE.fullmatch(code) if system == _TRE_A02 else None
    if match is None:
        return None, None
    profession: Code = (PROFESSION_SYSTEM, match[1], _professions().get(match[1]))
    specialty = match[2] if match[2] and _TRE_R38_CODE.fullmatch(match[2]) else None
    return profession, (SPECIALTY_SYSTEM, specialty, None) if specialty else None


def _organization(element: etree._Element | None) -> CdaOrganization | None:
    if element is None:
        return None
    identifier = next((i for i in map(_ii, _findall(element, "id")) if i), None)
    name = _text(_find(element, "name"))
    return CdaOrganization(identifier, name) if identifier or name else None


def _practice_setting(root: etree._Element) -> Code | None:
    """The CI-SIS practice setting (TRE_A01): on the service event's performer, else an author's
    organization."""
    paths = (
        "documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/standardIndustryClassCode",
        "author/assignedAuthor/representedOrganization/standardIndustryClassCode",
    )
    for path in paths:
        for element in _findall(root, path):
            code = _code(element)
            if code:
                return code
    return None


def _format_code(root: etree._Element, template_ids: tuple[str, ...]) -> Code | None:
    """The XDS formatCode of the document model; the last (most specific) known templateId wins."""
    if _N1_TEMPLATE in template_ids:
        media_type = _attribute(_find(root, "component/nonXMLBody/text"), "mediaType")
        n1 = _N1_FORMAT_CODES.get((media_type or "").strip().lower())
        if n1:
            return (_TRE_A11, n1, None)
    known = [_FORMAT_CODES[t] for t in template_ids if t in _FORMAT_CODES]
    return (*known[-1], None) if known else None


def _service_period(root: etree._Element) -> tuple[str | None, str | None] | None:
    for element in _findall(root, "documentationOf/serviceEvent/effectiveTime"):
        start = _time(_find(element, "low")) or _time(element)
        end = _time(_find(element, "high"))
        if start or end:
            return (start, end)
    return None


# -------------------------------------------------------------------------- ig/ terminology


@dataclass(frozen=True)
class _TypeClasses:
    class_system: str
    classes: dict[tuple[str, str], tuple[str, str | None]]  # (type system, type code) -> class


@functools.cache
def _code_system_urls(ig_dir: Path = PROJECT_ROOT / "ig") -> dict[str, str]:
    """OID → URL: the constants above, plus every CodeSystem in ``ig/`` that declares its OID."""
    urls = dict(_HEADER_SYSTEMS)
    for path in sorted((ig_dir / "CodeSystem").glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        for identifier in resource.get("identifier") or []:
            value = str(identifier.get("value", ""))
            if value.startswith("urn:oid:") and resource.get("url"):
                urls[value.removeprefix("urn:oid:")] = resource["url"]
    return urls


@functools.cache
def _professions(ig_dir: Path = PROJECT_ROOT / "ig") -> dict[str, str]:
    """TRE_G15 code → display, from ``ig/``."""
    path = ig_dir / _PROFESSIONS
    if not path.is_file():
        return {}
    concepts = json.loads(path.read_text(encoding="utf-8")).get("concept") or []
    return {c["code"]: c.get("display") or c["code"] for c in concepts}


@functools.cache
def _type_classes(ig_dir: Path) -> _TypeClasses:
    """The DMP class (TRE_A03) of each DMP document type, from the JDV_J66 ConceptMap in ``ig/``;
    ``unmatched`` types have none."""
    concept_map = json.loads((ig_dir / _CONCEPT_MAP).read_text(encoding="utf-8"))
    classes: dict[tuple[str, str], tuple[str, str | None]] = {}
    class_system = ""
    for group in concept_map.get("group") or []:
        class_system = group.get("target") or class_system
        for element in group.get("element") or []:
            target = next((t for t in element.get("target") or [] if t.get("equivalence") != "unmatched"), None)
            if target and target.get("code"):
                classes[(group["source"], element["code"])] = (target["code"], target.get("display"))
    return _TypeClasses(class_system, classes)


# -------------------------------------------------------------------------- DocumentReference


def document_reference_from_cda(
    doc: CdaDocument,
    *,
    patient_reference: dict[str, Any],
    binary_url: str,
    size: int,
    sha1_b64: str,
    content_type: str = "text/xml",
    ig_dir: Path | None = None,
) -> dict[str, Any]:
    """An R4 DocumentReference in the French PDSm shape describing ``doc``, stored at ``binary_url``.

    Authors become contained resources (a PractitionerRole carrying the idNatPs, pointing at a
    Practitioner and an Organization; a Device for software authors; a Patient for the patient), as
    the PDSm examples and the DMP's authorship rules (author-identifier) expect.
    """
    contained = _Contained()
    source_patient = contained.source_patient(doc)
    authors, roles = _authors(doc, contained)
    resource: dict[str, Any] = {"resourceType": "DocumentReference"}
    body: dict[str, Any] = {
        "masterIdentifier": {"system": URI_SYSTEM, "value": doc.document_id},
        "status": "current",
        "type": _concept(doc.type_code),
        "category": _category(doc.type_code, ig_dir or PROJECT_ROOT / "ig"),
        "subject": copy.deepcopy(patient_reference),
        "date": doc.effective_time if "T" in doc.effective_time else None,
        "author": authors or None,
        "authenticator": _authenticator(doc.legal_authenticator, roles, contained),
        "custodian": contained.organization(doc.custodian),
        "description": doc.title,
        "securityLabel": [_concept((*doc.confidentiality, _CONFIDENTIALITY_DISPLAYS[doc.confidentiality[1]]))],
        "content": [_content(doc, binary_url, size, sha1_b64, content_type)],
        "context": _context(doc, source_patient),
    }
    if contained.resources:
        resource["contained"] = contained.resources
    resource.update({key: value for key, value in body.items() if value is not None})
    return resource


class _Contained:
    """The contained resources of one DocumentReference; organizations are shared, not repeated."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self._organizations: dict[tuple[Identifier | None, str | None], dict[str, str]] = {}
        self._patient: tuple[Identifier | None, dict[str, str]] | None = None

    def add(self, resource: dict[str, Any]) -> dict[str, str]:
        self.resources.append(resource)
        return {"reference": f"#{resource['id']}"}

    def organization(self, organization: CdaOrganization | None) -> dict[str, str] | None:
        if organization is None:
            return None
        key = (organization.identifier, organization.name)
        if key not in self._organizations:
            resource: dict[str, Any] = {"resourceType": "Organization", "id": f"org{len(self._organizations) + 1}"}
            if organization.identifier:
                resource["identifier"] = [_identifier(organization.identifier)]
            if organization.name:
                resource["name"] = organization.name
            self._organizations[key] = self.add(resource)
        return self._organizations[key]

    def source_patient(self, doc: CdaDocument) -> dict[str, str] | None:
        """The patient as the CDA describes them (context.sourcePatientInfo)."""
        patient = _patient(doc.patient_ins, doc.patient_name, "patient")
        if doc.gender:
            patient["gender"] = doc.gender
        if doc.birth_time:
            patient["birthDate"] = doc.birth_time
        if len(patient) == 2:
            return None
        reference = self.add(patient)
        self._patient = (doc.patient_ins, reference)
        return reference

    def patient_author(self, author: CdaAuthor, index: int) -> dict[str, str]:
        if self._patient and self._patient[0] == author.identifier:
            return self._patient[1]
        return self.add(_patient(author.identifier, author.name, f"author{index}"))


def _authors(doc: CdaDocument, contained: _Contained) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    """DocumentReference.author, and the PractitionerRole reference of each idNatPs."""
    references: list[dict[str, str]] = []
    roles: dict[str, dict[str, str]] = {}
    for index, author in enumerate(doc.authors, start=1):
        reference = _author_reference(author, f"author{index}", index, contained)
        if reference is None:
            continue
        references.append(reference)
        if author.idnatps and not author.device:
            roles.setdefault(author.idnatps, reference)
    return references, roles


def _author_reference(author: CdaAuthor, name: str, index: int, contained: _Contained) -> dict[str, str] | None:
    """The contained resource an author becomes; None for an author the CDA says nothing about.
    (Every contained resource must be referenced (dom-3): none is added for nothing.)"""
    if author.identifier and author.identifier[0] in INS_SYSTEMS:
        return contained.patient_author(author, index)
    if author.identifier is None and author.name is None and author.device is None:
        return None
    organization = contained.organization(author.organization)
    if author.device:
        return contained.add(_device(author, name, organization))
    practitioner = contained.add(_practitioner(author, name))
    return contained.add(_practitioner_role(author, f"{name}-role", practitioner, organization))


def _authenticator(
    legal: CdaAuthor | None, roles: dict[str, dict[str, str]], contained: _Contained
) -> dict[str, str] | None:
    """The legal authenticator, when a professional (DocumentReference.authenticator cannot be a
    patient or a device)."""
    if legal is None or legal.idnatps is None or legal.device:
        return None
    if legal.idnatps in roles:
        return roles[legal.idnatps]
    practitioner = contained.add(_practitioner(legal, "authenticator"))
    organization = contained.organization(legal.organization)
    return contained.add(_practitioner_role(legal, "authenticator-role", practitioner, organization))


def _patient(identifier: Identifier | None, name: CdaName | None, resource_id: str) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": resource_id}
    if identifier:
        patient["identifier"] = [_identifier(identifier)]
    if name and _human_name(name):
        patient["name"] = [_human_name(name)]
    return patient


def _practitioner(author: CdaAuthor, resource_id: str) -> dict[str, Any]:
    practitioner: dict[str, Any] = {"resourceType": "Practitioner", "id": resource_id}
    if author.identifier:
        practitioner["identifier"] = [_identifier(author.identifier)]
    if author.name and _human_name(author.name):
        practitioner["name"] = [_human_name(author.name)]
    return practitioner


def _practitioner_role(
    author: CdaAuthor, resource_id: str, practitioner: dict[str, str], organization: dict[str, str] | None
) -> dict[str, Any]:
    """The role carries the idNatPs too: the PDSm examples do, and the DMP finds a document's
    author through the resource DocumentReference.author points at."""
    role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": resource_id}
    if author.identifier:
        role["identifier"] = [_identifier(author.identifier)]
    role["practitioner"] = practitioner
    if organization:
        role["organization"] = organization
    if author.profession:
        role["code"] = [_concept(author.profession)]
    specialties = [_concept(code) for code in (author.specialty, author.role) if code and code != author.profession]
    if specialties:
        role["specialty"] = specialties
    return role


def _device(author: CdaAuthor, resource_id: str, organization: dict[str, str] | None) -> dict[str, Any]:
    device: dict[str, Any] = {"resourceType": "Device", "id": resource_id}
    if author.identifier:
        device["identifier"] = [_identifier(author.identifier)]
    if author.device:
        device["deviceName"] = [{"name": author.device, "type": "user-friendly-name"}]
    if author.role:
        device["type"] = _concept(author.role)
    if organization:
        device["owner"] = organization
    return device


def _category(type_code: Code, ig_dir: Path) -> list[dict[str, Any]] | None:
    table = _type_classes(ig_dir)
    found = table.classes.get((type_code[0], type_code[1]))
    return [_concept((table.class_system, *found))] if found else None


def _content(doc: CdaDocument, url: str, size: int, sha1_b64: str, content_type: str) -> dict[str, Any]:
    attachment: dict[str, Any] = {"contentType": content_type}
    if doc.language:
        attachment["language"] = doc.language
    attachment.update({"url": url, "size": size, "hash": sha1_b64})
    if doc.title:
        attachment["title"] = doc.title
    attachment["creation"] = doc.effective_time
    content: dict[str, Any] = {"attachment": attachment}
    if doc.format_code:
        content["format"] = _coding(doc.format_code)
    return content


def _context(doc: CdaDocument, source_patient: dict[str, str] | None) -> dict[str, Any] | None:
    context: dict[str, Any] = {}
    if doc.service_period:
        start, end = doc.service_period
        context["period"] = {key: value for key, value in (("start", start), ("end", end)) if value}
    if doc.facility_type:
        context["facilityType"] = _concept(doc.facility_type)
    if doc.practice_setting:
        context["practiceSetting"] = _concept(doc.practice_setting)
    if source_patient:
        context["sourcePatientInfo"] = source_patient
    return context or None


def _coding(code: Code) -> dict[str, str]:
    system, value, display = code
    return {"system": system, "code": value, **({"display": display} if display else {})}


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [_coding(code)]}


def _identifier(identifier: Identifier) -> dict[str, str]:
    return {"system": identifier[0], "value": identifier[1]}


def _human_name(name: CdaName) -> dict[str, Any]:
    human: dict[str, Any] = {}
    if name.family:
        human["family"] = name.family
    if name.given:
        human["given"] = list(name.given)
    return human


# -------------------------------------------------------------------------- consistency


def check_against(doc: CdaDocument, reference: dict[str, Any], patient_ins: Identifier | None = None) -> list[str]:
    """What a submitted DocumentReference says that its CDA contradicts, one message per element.

    ``patient_ins`` is the INS of the stored Patient the DocumentReference's subject refers to;
    without it the INS is read from the subject itself (identifier, ``Patient?identifier=``
    conditional reference, contained Patient). An element the DocumentReference leaves out is not
    a disagreement: the CDA can fill it in. Malformed elements are skipped (validation reports
    them).
    """
    contained = {
        f"#{item['id']}": item
        for item in map(_dict, _list(reference.get("contained")))
        if isinstance(item.get("id"), str)
    }
    return [
        *_master_identifier_problems(doc, reference),
        *_patient_problems(doc, reference, contained, patient_ins),
        *_type_problems(doc, reference),
        *_author_problems(doc, reference, contained),
    ]


def _master_identifier_problems(doc: CdaDocument, reference: dict[str, Any]) -> list[str]:
    """IHE: masterIdentifier is the document's uniqueId, which for a CDA is ClinicalDocument/id."""
    value = _dict(reference.get("masterIdentifier")).get("value")
    if not isinstance(value, str) or _bare_uid(value) == _bare_uid(doc.document_id):
        return []
    return [f"DocumentReference.masterIdentifier: {_shorten(value, 80)} but the CDA's id is {doc.document_id}"]


def _bare_uid(value: str) -> str:
    return value.strip().removeprefix("urn:oid:").removeprefix("urn:uuid:").lower()


def _patient_problems(
    doc: CdaDocument, reference: dict[str, Any], contained: dict[str, dict[str, Any]], patient_ins: Identifier | None
) -> list[str]:
    source = _dict(_dict(reference.get("context")).get("sourcePatientInfo"))
    subject = [patient_ins] if patient_ins else _subject_ins(reference.get("subject"), contained)
    claims = {
        "DocumentReference.subject": subject,
        "DocumentReference.context.sourcePatientInfo": _contained_ins(source.get("reference"), contained),
    }
    if doc.patient_ins:
        cda = f"{doc.patient_ins[0]}|{doc.patient_ins[1]}"
    else:
        cda = "nothing (no INS in recordTarget/patientRole/id)"
    return [
        f"{element}: INS {ins[0][0]}|{ins[0][1]} but the CDA says {cda}"
        for element, ins in claims.items()
        if ins and doc.patient_ins not in ins
    ]


def _subject_ins(subject: Any, contained: dict[str, dict[str, Any]]) -> list[Identifier]:
    """The INS a subject names: as an identifier, in a conditional reference, or contained."""
    subject = _dict(subject)
    found = _ins_of([subject.get("identifier")])
    reference = subject.get("reference")
    if isinstance(reference, str) and reference.startswith("Patient?"):
        queried = [value for key, value in parse_qsl(reference.partition("?")[2]) if key == "identifier"]
        found += _ins_of({"system": system, "value": value} for system, _, value in (q.partition("|") for q in queried))
    return found + _contained_ins(reference, contained)


def _contained_ins(reference: Any, contained: dict[str, dict[str, Any]]) -> list[Identifier]:
    target = _target(reference, contained)
    if target.get("resourceType") != "Patient":
        return []
    return _ins_of(_list(target.get("identifier")))


def _ins_of(identifiers: Iterable[Any]) -> list[Identifier]:
    return [
        (i["system"], i["value"])
        for i in map(_dict, identifiers)
        if i.get("system") in INS_SYSTEMS and isinstance(i.get("value"), str)
    ]


def _type_problems(doc: CdaDocument, reference: dict[str, Any]) -> list[str]:
    codings = [c for c in map(_dict, _list(_dict(reference.get("type")).get("coding"))) if c]
    system, code, _ = doc.type_code
    if not codings or any((c.get("system"), c.get("code")) == (system, code) for c in codings):
        return []
    same_system = [c for c in codings if c.get("system") == system]
    if same_system:
        return [f"DocumentReference.type: {same_system[0].get('code')} but the CDA says {code}"]
    first = codings[0]
    return [f"DocumentReference.type: {first.get('system')}|{first.get('code')} but the CDA says {system}|{code}"]


def _author_problems(doc: CdaDocument, reference: dict[str, Any], contained: dict[str, dict[str, Any]]) -> list[str]:
    claimed = _author_idnatps(reference, contained)
    ours = {author.idnatps for author in doc.authors if author.idnatps}
    if not claimed or claimed & ours:
        return []
    theirs = f"are {', '.join(sorted(ours))}" if ours else "have no idNatPs (author/assignedAuthor/id)"
    return [f"DocumentReference.author: idNatPs {', '.join(sorted(claimed))} but the CDA's authors {theirs}"]


def _author_idnatps(reference: dict[str, Any], contained: dict[str, dict[str, Any]]) -> set[str]:
    """The idNatPs a DocumentReference names as author: inline, on a contained Practitioner or
    PractitionerRole, or on the Practitioner a contained PractitionerRole points at."""
    found: set[str] = set()
    for author in map(_dict, _list(reference.get("author"))):
        targets = [author, _target(author.get("reference"), contained)]
        if targets[1].get("resourceType") == "PractitionerRole":
            practitioner = _dict(targets[1].get("practitioner"))
            targets += [practitioner, _target(practitioner.get("reference"), contained)]
        for target in targets:
            identifiers = target.get("identifier")
            for identifier in map(_dict, identifiers if isinstance(identifiers, list) else [identifiers]):
                if identifier.get("system") == IDNATPS_SYSTEM and isinstance(identifier.get("value"), str):
                    found.add(identifier["value"])
    return found


def _target(reference: Any, contained: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return contained.get(reference, {}) if isinstance(reference, str) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# -------------------------------------------------------------------------- rendering

#: Only what CSP allows runs: nothing. Belt and braces, since nothing active is ever written. The
#: page carries it, and the server sends it as a header too (with what only a header can say).
PAGE_CSP = (
    "default-src 'none'; img-src 'none'; style-src 'none'; script-src 'none'; base-uri 'none'; form-action 'none'"
)
#: CDA narrative block elements rendered as the HTML element of the same meaning.
_NARRATIVE_TAGS = {
    "paragraph": "p",
    "item": "li",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "th": "th",
    "td": "td",
    "colgroup": "colgroup",
    "col": "col",
    "sub": "sub",
    "sup": "sup",
    "footnote": "small",
    "linkHtml": "span",
}
_STYLE_TAGS = (("bold", "strong"), ("italics", "em"), ("underline", "u"))
_SPAN = re.compile(r"[1-9][0-9]{0,2}")
_NOT_SHOWN = "[contenu multimédia non affiché]"
#: What XML (hence lxml) cannot hold; only decoded base64 text can bring it into the page.
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def cda_to_html(data: bytes, max_bytes: int = MAX_BYTES) -> str:
    """A CDA as a self-contained HTML page for people: header, then each section's narrative.

    Built element by element in Python (no XSLT): only the elements and attributes written here
    can appear, all text is escaped by the serialiser, and nothing from the document (attributes,
    links, foreign markup, embedded media) is copied through.
    """
    root = _parse_root(data, max_bytes)
    doc = _document(root)
    html = etree.Element("html", lang=_page_language(doc.language))
    head = etree.SubElement(html, "head")
    etree.SubElement(head, "meta", charset="utf-8")
    etree.SubElement(head, "meta", {"http-equiv": "Content-Security-Policy", "content": PAGE_CSP})
    etree.SubElement(head, "title").text = doc.title or doc.type_code[2] or doc.type_code[1]
    body = etree.SubElement(html, "body")
    _render_header(body, doc)
    _render_body(body, root)
    return str(etree.tostring(html, method="html", encoding="unicode", doctype="<!DOCTYPE html>"))


def _page_language(language: str | None) -> str:
    return language if language and _LANGUAGE.fullmatch(language) else "fr"


def _render_header(body: etree._Element, doc: CdaDocument) -> None:
    header = etree.SubElement(body, "header")
    etree.SubElement(header, "h1").text = doc.title or doc.type_code[2] or doc.type_code[1]
    facts = etree.SubElement(header, "dl")
    _fact(facts, "Patient", [_patient_line(doc)])
    _fact(facts, "Auteur(s)", [_author_line(author) for author in doc.authors])
    _fact(facts, "Date", [_human_date(doc.effective_time)])
    _fact(facts, "Type", [" — ".join(filter(None, (doc.type_code[2], doc.type_code[1])))])


def _fact(facts: etree._Element, label: str, values: list[str]) -> None:
    values = [value for value in values if value]
    if not values:
        return
    etree.SubElement(facts, "dt").text = label
    for value in values:
        etree.SubElement(facts, "dd").text = value


def _patient_line(doc: CdaDocument) -> str:
    parts = [doc.patient_name.text if doc.patient_name else ""]
    if doc.birth_time:
        parts.append(f"né(e) le {_human_date(doc.birth_time)}")
    if doc.patient_ins:
        parts.append(f"INS {doc.patient_ins[1]}")
    return ", ".join(part for part in parts if part)


def _author_line(author: CdaAuthor) -> str:
    who = author.name.text if author.name else author.device
    parts = [who, author.role[2] if author.role else None, author.organization.name if author.organization else None]
    return ", ".join(part for part in parts if part)


def _human_date(value: str) -> str:
    """A FHIR date/dateTime the French way: 12/03/2020 11:17 (UTC+01:00)."""
    date, _, time = value.partition("T")
    shown = "/".join(reversed(date.split("-")))
    if time:
        shown += f" {time[:5]} (UTC{time[-6:]})"
    return shown


def _render_body(body: etree._Element, root: etree._Element) -> None:
    structured = _find(root, "component/structuredBody")
    if structured is not None:
        for section in _findall(structured, "component/section"):
            _render_section(body, section, 2)
        return
    text = _find(root, "component/nonXMLBody/text")
    media_type = (_attribute(text, "mediaType") or "").strip().lower()
    note = etree.SubElement(body, "p")
    note.text = f"Ce document a un corps non structuré ({media_type or 'type inconnu'})."
    if text is not None and media_type == "text/plain":
        etree.SubElement(body, "pre").text = _plain_text(text)
    else:
        note.text += " Il n'est pas affiché ici."


def _plain_text(text: etree._Element) -> str:
    raw = "".join(text.itertext())
    if (text.get("representation") or "").upper() != "B64":
        return raw
    try:
        decoded = base64.b64decode("".join(raw.split()), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return "[texte illisible : base64 invalide]"
    return _NOT_XML_TEXT.sub("\ufffd", decoded)


def _render_section(parent: etree._Element, section: etree._Element, level: int) -> None:
    wrapper = etree.SubElement(parent, "section")
    title = _text(_find(section, "title"))
    if title:
        etree.SubElement(wrapper, f"h{min(level, 6)}").text = title
    text = _find(section, "text")
    if text is not None:
        _convert_children(text, etree.SubElement(wrapper, "div"))
    for child in _findall(section, "component/section"):
        _render_section(wrapper, child, level + 1)


def _convert_children(source: etree._Element, target: etree._Element) -> None:
    """Copy the content of a narrative element: text, then each child converted, then its tail."""
    _append_text(target, source.text)
    for child in source:
        if isinstance(child.tag, str):
            _convert(child, target)
        _append_text(target, child.tail)


def _append_text(target: etree._Element, text: str | None) -> None:
    if not text:
        return
    if len(target):
        target[-1].tail = (target[-1].tail or "") + text
    else:
        target.text = (target.text or "") + text


def _convert(source: etree._Element, target: etree._Element) -> None:
    """One narrative element. Unknown CDA elements are unwrapped (their text is kept); elements of
    other namespaces (XHTML, XInclude, SVG...) are no narrative and are dropped with their content."""
    qname = etree.QName(source)
    if qname.namespace != V3:
        return
    name = qname.localname
    if name == "br":
        etree.SubElement(target, "br")
    elif name == "list":
        _convert_list(source, target)
    elif name == "table":
        table = etree.SubElement(target, "table", border="1")
        _convert_children(source, table)
    elif name == "content":
        _convert_children(source, etree.SubElement(target, _content_tag(source)))
    elif name == "caption":
        tag = "caption" if target.tag == "table" else "strong"
        _convert_children(source, etree.SubElement(target, tag))
    elif name == "renderMultiMedia":
        _append_text(target, _NOT_SHOWN)
    elif name == "footnoteRef":
        return
    elif name in _NARRATIVE_TAGS:
        _convert_children(source, _element_with_spans(source, target, _NARRATIVE_TAGS[name]))
    else:
        _convert_children(source, target)


def _convert_list(source: etree._Element, target: etree._Element) -> None:
    for caption in source.iterfind("v3:caption", _NS):
        _convert_children(caption, etree.SubElement(etree.SubElement(target, "p"), "strong"))
    tag = "ol" if (source.get("listType") or "").strip() == "ordered" else "ul"
    html_list = etree.SubElement(target, tag)
    for item in source.iterfind("v3:item", _NS):
        _convert_children(item, etree.SubElement(html_list, "li"))


def _content_tag(source: etree._Element) -> str:
    styles = (source.get("styleCode") or "").lower().split()
    return next((tag for style, tag in _STYLE_TAGS if style in styles), "span")


def _element_with_spans(source: etree._Element, target: etree._Element, tag: str) -> etree._Element:
    """The HTML element; table cells keep colspan/rowspan when they are small positive numbers."""
    element = etree.SubElement(target, tag)
    if tag in ("td", "th"):
        for attribute in ("colspan", "rowspan"):
            value = (source.get(attribute) or "").strip()
            if _SPAN.fullmatch(value):
                element.set(attribute, value)
    return element
