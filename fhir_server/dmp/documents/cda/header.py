"""Reading a CDA R2 header (ANS CI-SIS "Volet Structuration minimale") into a :class:`CdaDocument`.

Code tables come from ``ig/`` where they are (the OIDs of its CodeSystems); the few other code
systems a CDA header uses are small constants below, each citing its source.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path

from lxml import etree

from authz.terms import (
    CONFIDENTIALITY_SYSTEM,
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
    PROFESSION_SYSTEM,
    SPECIALTY_SYSTEM,
)
from fhir_server.dmp.documents.cda.model import (
    CdaAuthor,
    CdaDocument,
    CdaError,
    CdaName,
    CdaOrganization,
    Code,
    Identifier,
)
from fhir_server.dmp.documents.cda.safe_xml import MAX_BYTES, NS, parse_root, shorten
from fhir_server.runtime.config import PROJECT_ROOT

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
HEADER_SYSTEMS: dict[str, str] = {
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
CONFIDENTIALITY_DISPLAYS = {
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
LANGUAGE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
CONCEPT_MAP = Path("ConceptMap") / "ConceptMap-dmp-document-type-to-class.json"
PROFESSIONS_FILE = Path("CodeSystem") / "CodeSystem-TRE-G15-ProfessionSante.json"


def parse_cda(data: bytes, max_bytes: int = MAX_BYTES) -> CdaDocument:
    """Parse an untrusted CDA R2 document and read its header; CdaError when it cannot be used."""
    return header_of(parse_root(data, max_bytes))


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


# -------------------------------------------------------------------------- reading the header


@functools.cache
def _path(path: str) -> str:
    """A path of CDA element names in Clark notation (``{urn:hl7-org:v3}name/...``): made once, and
    found without a prefix map to resolve (a header reads ~45 paths; this halves their cost)."""
    return "/".join(f"{{{NS['v3']}}}{step}" for step in path.split("/"))


def find_one(element: etree._Element | None, path: str) -> etree._Element | None:
    return None if element is None else element.find(_path(path))


def find_all(element: etree._Element | None, path: str) -> list[etree._Element]:
    return [] if element is None else list(element.iterfind(_path(path)))


def text_of(element: etree._Element | None) -> str | None:
    """The element's text with whitespace normalised; None when empty."""
    if element is None:
        return None
    return " ".join("".join(element.itertext()).split()) or None


def _clean(value: str | None) -> str | None:
    return (" ".join(value.split()) or None) if value else None


def header_of(root: etree._Element) -> CdaDocument:
    template_ids = tuple(t.get("root", "") for t in find_all(root, "templateId"))
    patient = find_one(root, "recordTarget/patientRole/patient")
    legal = find_one(root, "legalAuthenticator/assignedEntity")
    return CdaDocument(
        patient_ins=_patient_ins(root),
        patient_name=_name(find_one(patient, "name")),
        birth_time=_date(find_one(patient, "birthTime")),
        gender=_GENDERS.get(attribute_of(find_one(patient, "administrativeGenderCode"), "code") or ""),
        type_code=_type_code(root),
        title=text_of(find_one(root, "title")),
        effective_time=_effective_time(root),
        confidentiality=_confidentiality(root),
        language=_clean(attribute_of(find_one(root, "languageCode"), "code")),
        authors=[_author(a, a.getparent()) for a in find_all(root, "author/assignedAuthor")],
        custodian=_organization(find_one(root, "custodian/assignedCustodian/representedCustodianOrganization")),
        document_id=_document_id(root),
        set_id=_unique_id(find_one(root, "setId")),
        version_number=_version_number(root),
        facility_type=_code(find_one(root, "componentOf/encompassingEncounter/location/healthCareFacility/code")),
        practice_setting=_practice_setting(root),
        format_code=_format_code(root, template_ids),
        service_period=_service_period(root),
        legal_authenticator=None if legal is None else _author(legal, legal.getparent()),
        template_ids=template_ids,
    )


def attribute_of(element: etree._Element | None, name: str) -> str | None:
    return None if element is None else element.get(name)


def _system(oid: str) -> str:
    """The FHIR URL of a code system OID; ``urn:oid:`` when this server does not know it."""
    oid = oid.strip()
    known = code_system_urls().get(oid)
    if known:
        return known
    if _OID.fullmatch(oid):
        return f"urn:oid:{oid}"
    return f"urn:uuid:{oid.lower()}" if _UUID.fullmatch(oid) else oid


def _code(element: etree._Element | None) -> Code | None:
    """A CD/CE as (system URL, code, display); None when absent or nullFlavored."""
    code, system = attribute_of(element, "code"), attribute_of(element, "codeSystem")
    if not code or not code.strip() or not system:
        return None
    return (_system(system), code.strip(), _clean(attribute_of(element, "displayName")))


def _ii(element: etree._Element | None) -> Identifier | None:
    """An II with root and extension as a FHIR (system, value)."""
    root, extension = attribute_of(element, "root"), _clean(attribute_of(element, "extension"))
    if not root or not extension:
        return None
    return (_system(root), extension)


def _unique_id(element: etree._Element | None) -> str | None:
    """An II as an XDS uniqueId URI: ``urn:oid:root``, ``urn:oid:root^extension`` (IHE ITI TF-3
    4.2.3.2.26, CI-SIS: the uniqueId of a CDA is its ClinicalDocument/id)."""
    root, extension = (attribute_of(element, "root") or "").strip(), _clean(attribute_of(element, "extension"))
    if _OID.fullmatch(root):
        base = f"urn:oid:{root}"
    elif _UUID.fullmatch(root):
        base = f"urn:uuid:{root.lower()}"
    else:
        return None
    return f"{base}^{extension}" if extension else base


def _date(element: etree._Element | None) -> str | None:
    """A TS as a FHIR date (birth dates): the time of day, if any, is dropped."""
    value = hl7_ts_to_fhir(attribute_of(element, "value"))
    return value.partition("T")[0] if value else None


def _time(element: etree._Element | None) -> str | None:
    return hl7_ts_to_fhir(attribute_of(element, "value"))


def _patient_ins(root: etree._Element) -> Identifier | None:
    for element in find_all(root, "recordTarget/patientRole/id"):
        oid, value = (element.get("root") or "").strip(), _clean(element.get("extension"))
        if oid in _INS_OIDS and value:
            return (f"urn:oid:{oid}", value)
    return None


def _name(element: etree._Element | None) -> CdaName | None:
    """CI-SIS names: ``family@qualifier=BR`` is the birth name, unqualified ``given`` the birth
    first names (``given@qualifier=BR`` the first of them, ``CL`` the used ones)."""
    if element is None:
        return None
    families = [(f.get("qualifier"), _name_part(f)) for f in find_all(element, "family")]
    givens = [(g.get("qualifier"), _name_part(g)) for g in find_all(element, "given")]
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
    text = text_of(element)
    return text if text and text.strip(".") else None


def _preferred(parts: list[tuple[str | None, str | None]], order: tuple[str | None, ...]) -> str | None:
    for wanted in order:
        for qualifier, text in parts:
            if qualifier == wanted and text:
                return text
    return next((text for _, text in parts if text), None)


def _type_code(root: etree._Element) -> Code:
    code = _code(find_one(root, "code"))
    if code is None:
        raise CdaError("ClinicalDocument/code: the document type needs @code and @codeSystem", "ClinicalDocument/code")
    return code


def _effective_time(root: etree._Element) -> str:
    element = find_one(root, "effectiveTime")
    value = _time(element)
    if value is None:
        shown = attribute_of(element, "value")
        problem = f"{shorten(shown, 40)!r} is not an HL7 TS" if shown else "missing @value"
        raise CdaError(f"ClinicalDocument/effectiveTime: {problem}", "ClinicalDocument/effectiveTime")
    return value


def _confidentiality(root: etree._Element) -> tuple[str, str]:
    where = "ClinicalDocument/confidentialityCode"
    element = find_one(root, "confidentialityCode")
    code, system = attribute_of(element, "code"), attribute_of(element, "codeSystem")
    if not code:
        raise CdaError(f"{where}: missing @code", where)
    if system and system.strip() != _CONFIDENTIALITY_OID:
        raise CdaError(f"{where}: code system {shorten(system, 60)} is not HL7 Confidentiality", where)
    if code not in CONFIDENTIALITY_DISPLAYS:
        raise CdaError(f"{where}: {shorten(code, 20)!r} is not an HL7 confidentiality code", where)
    return (CONFIDENTIALITY_SYSTEM, code)


def _document_id(root: etree._Element) -> str:
    unique_id = _unique_id(find_one(root, "id"))
    if unique_id is None:
        raise CdaError("ClinicalDocument/id: @root must be an OID or a UUID", "ClinicalDocument/id")
    return unique_id


def _version_number(root: etree._Element) -> int | None:
    value = (attribute_of(find_one(root, "versionNumber"), "value") or "").strip()
    return int(value) if value.isdigit() and len(value) < 10 else None


def _author(assigned: etree._Element, participation: etree._Element | None) -> CdaAuthor:
    """An author/assignedAuthor or legalAuthenticator/assignedEntity (same shape)."""
    role = _code(find_one(assigned, "code"))
    profession, specialty = _profession_and_specialty(role)
    return CdaAuthor(
        identifier=_author_identifier(find_all(assigned, "id")),
        name=_name(find_one(assigned, "assignedPerson/name")),
        profession=profession,
        specialty=specialty,
        role=role,
        organization=_organization(find_one(assigned, "representedOrganization")),
        device=text_of(find_one(assigned, "assignedAuthoringDevice/softwareName")),
        time=_time(find_one(participation, "time")),
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
        return (PROFESSION_SYSTEM, code, professions().get(code)), None
    if system == SPECIALTY_SYSTEM:
        return None, role
    match = _AUTHOR_CODE.fullmatch(code) if system == _TRE_A02 else None
    if match is None:
        return None, None
    profession: Code = (PROFESSION_SYSTEM, match[1], professions().get(match[1]))
    specialty = match[2] if match[2] and _TRE_R38_CODE.fullmatch(match[2]) else None
    return profession, (SPECIALTY_SYSTEM, specialty, None) if specialty else None


def _organization(element: etree._Element | None) -> CdaOrganization | None:
    if element is None:
        return None
    identifier = next((i for i in map(_ii, find_all(element, "id")) if i), None)
    name = text_of(find_one(element, "name"))
    return CdaOrganization(identifier, name) if identifier or name else None


def _practice_setting(root: etree._Element) -> Code | None:
    """The CI-SIS practice setting (TRE_A01): on the service event's performer, else an author's
    organization."""
    paths = (
        "documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/standardIndustryClassCode",
        "author/assignedAuthor/representedOrganization/standardIndustryClassCode",
    )
    for path in paths:
        for element in find_all(root, path):
            code = _code(element)
            if code:
                return code
    return None


def _format_code(root: etree._Element, template_ids: tuple[str, ...]) -> Code | None:
    """The XDS formatCode of the document model; the last (most specific) known templateId wins."""
    if _N1_TEMPLATE in template_ids:
        media_type = attribute_of(find_one(root, "component/nonXMLBody/text"), "mediaType")
        n1 = _N1_FORMAT_CODES.get((media_type or "").strip().lower())
        if n1:
            return (_TRE_A11, n1, None)
    known = [_FORMAT_CODES[t] for t in template_ids if t in _FORMAT_CODES]
    return (*known[-1], None) if known else None


def _service_period(root: etree._Element) -> tuple[str | None, str | None] | None:
    for element in find_all(root, "documentationOf/serviceEvent/effectiveTime"):
        start = _time(find_one(element, "low")) or _time(element)
        end = _time(find_one(element, "high"))
        if start or end:
            return (start, end)
    return None


@functools.cache
def code_system_urls(ig_dir: Path = PROJECT_ROOT / "ig") -> dict[str, str]:
    """OID → URL: the constants above, plus every CodeSystem in ``ig/`` that declares its OID."""
    urls = dict(HEADER_SYSTEMS)
    for path in sorted((ig_dir / "CodeSystem").glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        for identifier in resource.get("identifier") or []:
            value = str(identifier.get("value", ""))
            if value.startswith("urn:oid:") and resource.get("url"):
                urls[value.removeprefix("urn:oid:")] = resource["url"]
    return urls


@functools.cache
def professions(ig_dir: Path = PROJECT_ROOT / "ig") -> dict[str, str]:
    """TRE_G15 code → display, from ``ig/``."""
    path = ig_dir / PROFESSIONS_FILE
    if not path.is_file():
        return {}
    concepts = json.loads(path.read_text(encoding="utf-8")).get("concept") or []
    return {c["code"]: c.get("display") or c["code"] for c in concepts}
