#!/usr/bin/env python3
"""Build the terminology and authorisation data of ``ig/`` from ``../shared/data``.

Writes FHIR R4 JSON resources (one per file, ``<ResourceType>-<id>.json``) into
``ig/CodeSystem``, ``ig/ValueSet`` and ``ig/ConceptMap``, and the R10 authorisation matrix with
its README into ``ig/authorisation``. Re-runnable; the output depends only on the input files
(concepts sorted by code, groups by system, fixed key order, UTF-8, LF line ends).

Usage::

    python ig/tools/build_terminology.py [--data ../shared/data] [--out ig]

Why one file of ~600 lines: it is a stand-alone tool (it runs without the server installed) that
reads each source format of ``../shared/data`` in turn; it is not imported by the server.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "ig"

CANON = "https://dmp.example.org/fhir"
VERSION = "0.1.0"  # version of these project-built resources (the server's version)
BUILT_BY = "Built by ig/tools/build_terminology.py"

LOINC = "http://loinc.org"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
TRE_A12 = "https://mos.esante.gouv.fr/NOS/TRE_A12-NomenclatureASTM/FHIR/TRE-A12-NomenclatureASTM"
# CONTRACT §8: emit the hyphen spelling; the CSV carries the underscore one (also accepted).
TRE_R248 = "https://mos.esante.gouv.fr/NOS/TRE_R248-ModeAcces/FHIR/TRE-R248-ModeAcces"
JDV_J66 = "https://mos.esante.gouv.fr/NOS/JDV_J66-TypeCode-DMP/FHIR/JDV-J66-TypeCode-DMP"
JDV_J57 = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"

J66_CSV = "terminology/document-types-J66-with-class.csv"
J07_SVS = "terminology/svs/JDV_J07_XdsTypeCode_CISIS.xml"
SVS_NS = "{urn:ihe:iti:svs:2008}"
J57_CSV = "terminology/document-classes-J57.csv"
G15_CSV = "terminology/professions-TRE_G15.csv"
R248_CSV = "terminology/access-modes-TRE_R248.csv"
R260_CSV = "terminology/related-person-roles-TRE_R260.csv"
MATRIX_CSV = "authorisation-matrix.csv"
COPIED = {
    "terminology/CodeSystem-TRE-A07-StatutVisibiliteDocument.json": "CodeSystem",
    "terminology/ValueSet-JDV-J58-ConfidentialityCode-DMP.json": "ValueSet",
    "terminology/ValueSet-JDV-J52-AvailabilityStatus-CISIS.json": "ValueSet",
}
LOINC_COPYRIGHT = (
    "This material contains content from LOINC (http://loinc.org). LOINC is copyright © Regenstrief "
    "Institute, Inc. and the LOINC Committee. The French labels are those of the ANS."
)

STATUS_PROPERTIES = [
    {
        "code": "status",
        "uri": "http://hl7.org/fhir/concept-properties#status",
        "description": "Statut du concept dans la source (active, deprecated)",
        "type": "code",
    },
    {
        "code": "deprecationDate",
        "uri": "http://hl7.org/fhir/concept-properties#deprecationDate",
        "description": "Date à laquelle le concept a été déprécié",
        "type": "dateTime",
    },
    {
        "code": "note",
        "description": "Remarque de la source (statut ou notes du fichier CSV)",
        "type": "string",
    },
]

USER_ROLES = [
    # code, French display, English display, definition (CONTRACT §2)
    ("PAT", "Patient", "Patient", "The patient (holder of the DMP); identified by sub = the patient's INS."),
    (
        "LEGREP",
        "Représentant légal",
        "Legal representative",
        "A legal representative of a minor or protected adult; identified by sub = the representative's INS.",
    ),
    (
        "HCP",
        "Professionnel de santé",
        "Health professional",
        "A health professional; identified by national_provider_identifier = idNatPs (urn:oid:1.2.250.1.71.4.2.1).",
    ),
    (
        "ASS",
        "Personnel administratif ou d'accueil, secrétariat",
        "Administrative or reception staff",
        "Administrative or reception staff, secretaries; identified by sub.",
    ),
    (
        "TCU",
        "Système technique",
        "Technical system",
        "A technical system (e.g. the insurer's feed, a hospital's automatic upload); identified by "
        "sub = client id and subject_organization_id.",
    ),
    ("ADM", "Administration du DMP", "DMP administration", "DMP administration (support service); identified by sub."),
]

CONSENT_TYPES = [
    # code, French display, English display, definition (CONTRACT §4)
    (
        "access",
        "Autorisation d'accès",
        "Access authorisation",
        "The patient authorises a professional (or an establishment's care team). Provision permit; actor; "
        "period (default one year, renewable by update).",
    ),
    (
        "block",
        "Blocage d'un professionnel",
        "Block",
        "The patient blocks a professional: overrides every other rule, emergencies included. Provision deny; actor.",
    ),
    (
        "emergency-access",
        "Accès en urgence",
        "Emergency access setting",
        "Two settings created permit with the DMP, one per purpose bris_de_glace / centre_15; the patient turns "
        "type to deny to oppose, back to permit to allow.",
    ),
    (
        "medecin-traitant",
        "Médecin traitant DMP",
        "DMP attending doctor",
        "The designated médecin traitant DMP (one at a time, an authorised doctor). Provision permit; actor.",
    ),
    (
        "legal-representative",
        "Représentant légal",
        "Legal representative",
        "A legal representative of a minor or protected adult (several allowed). Provision permit; actor = the "
        "representative's INS; period.end = the minor's 18th birthday.",
    ),
]

AUTHORISATION_README = """\
# ig/authorisation — the R10 authorisation matrix

`authorisation-matrix.csv` is a verbatim copy of `../shared/data/authorisation-matrix.csv`
(project data), written by `ig/tools/build_terminology.py`. The server reads it at start through
`authz.matrix.AuthorisationMatrix.load(ig_dir)`, together with
`ConceptMap/ConceptMap-dmp-document-type-to-class.json` (document type → class, from JDV_J66) and
the TRE_G15 and TRE_A03 CodeSystems.

**Provisional.** The official annex of the arrêté of 26 October 2023 (which professions may read
which document classes and types) is not available to the project. The doctor and dentist rows
follow published summaries of it; the pédicure-podologue and opticien rows follow the mission's
own statements; the other rows are the project's. Replace the file with the official table, in
the same format, when it is available: no code change is needed (replace
`../shared/data/authorisation-matrix.csv` and re-run the build script, or replace this copy).

Format: a header `profession_code,profession,class_code,type_code,access`, then one rule a row.
- `profession_code`: a TRE_G15 code; `profession` its label (informative only).
- A **class row** has a TRE_A03 `class_code` and `type_code` `*`: it rules every document type
  of that class.
- A **type row** (a type-level exception) has a document type code in `type_code` (a JDV_J66
  code: LOINC, TRE_A05 or TRE_A12, without its system, which must be unambiguous) and
  `class_code` `*` or that type's own class. It wins over the class row.
- `access`: `allow` or `deny`. Anything not allowed is denied (unlisted professions read nothing;
  types without a class are readable only through an `allow` type row).

A malformed row (unknown profession, class or type, a type row whose class is not the type's,
a duplicate rule, a bad `access` value) stops the server at start with an error naming the line.
"""


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def oid_identifier(oid: str) -> list[dict[str, str]]:
    if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", oid):
        return []
    return [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid}"}]


def single(rows: list[dict[str, str]], column: str, path: str) -> str:
    values = {row[column] for row in rows}
    if len(values) != 1:
        raise ValueError(f"{path}: expected one value in column {column!r}, found {sorted(values)}")
    return values.pop()


def status_properties(status: str) -> list[dict[str, Any]]:
    """``active`` or ``deprecated YYYY-MM-DD (remark)`` as in the NOS CSV files."""
    m = re.fullmatch(r"(active|deprecated)(?:\s+(\d{4}-\d{2}-\d{2}))?\s*(?:\((.*)\))?", status)
    if not m:
        raise ValueError(f"unexpected status {status!r}")
    props: list[dict[str, Any]] = [{"code": "status", "valueCode": m.group(1)}]
    if m.group(2):
        props.append({"code": "deprecationDate", "valueDateTime": m.group(2)})
    if m.group(3):
        props.append({"code": "note", "valueString": m.group(3)})
    return props


def code_system(
    *,
    id: str,
    url: str,
    name: str,
    title: str,
    description: str,
    concepts: list[dict[str, Any]],
    content: str = "complete",
    oid: str = "",
    properties: list[dict[str, Any]] | None = None,
    language: str | None = "fr-FR",
    case_sensitive: bool | None = None,
    copyright: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "CodeSystem", "id": id}
    if language:
        res["language"] = language
    res["url"] = url
    if identifier := oid_identifier(oid):
        res["identifier"] = identifier
    res |= {"version": VERSION, "name": name, "title": title, "status": "active", "experimental": False}
    res["description"] = description
    if copyright:
        res["copyright"] = copyright
    if case_sensitive is not None:
        res["caseSensitive"] = case_sensitive
    res["content"] = content
    if content == "complete":
        res["count"] = len(concepts)
    if properties:
        res["property"] = properties
    res["concept"] = sorted(concepts, key=lambda c: c["code"])
    return res


def own_code_system(id: str, name: str, title: str, description: str, rows: list[tuple[str, ...]]) -> dict[str, Any]:
    concepts = [
        {"code": code, "display": fr, "designation": [{"language": "en", "value": en}], "definition": definition}
        for code, fr, en, definition in rows
    ]
    return code_system(
        id=id,
        url=f"{CANON}/CodeSystem/{id}",
        name=name,
        title=title,
        description=description,
        concepts=concepts,
        language=None,
        case_sensitive=True,
    )


def nos_code_system(
    *,
    source: str,
    rows: list[dict[str, str]],
    url: str,
    id: str,
    name: str,
    title: str,
    origin: str,
    content: str = "complete",
    status_column: str | None = None,
    note_column: str | None = None,
    oid: str = "",
) -> dict[str, Any]:
    concepts: list[dict[str, Any]] = []
    for row in rows:
        concept: dict[str, Any] = {"code": row["code"], "display": row["display_fr"]}
        props: list[dict[str, Any]] = []
        if status_column:
            props += status_properties(row[status_column])
        if note_column and row[note_column]:
            props.append({"code": "note", "valueString": row[note_column]})
        if props:
            concept["property"] = props
        concepts.append(concept)
    extent = (
        "all the codes of the source table"
        if content == "complete"
        else "a fragment of the NOS table, only the codes that JDV_J66 lists"
    )
    description = f"{title}: {extent}. {BUILT_BY} from ../shared/data/{source} ({origin})."
    return code_system(
        id=id,
        url=url,
        name=name,
        title=title,
        description=description,
        concepts=concepts,
        content=content,
        oid=oid,
        properties=STATUS_PROPERTIES if (status_column or note_column) else None,
    )


def svs_value_set(path: Path, source: str, systems: dict[str, str], use: str) -> dict[str, Any]:
    """A CI-SIS value set published in IHE SVS format, as a FHIR ValueSet listing its codes.

    SVS names each code system by OID; ``systems`` gives the FHIR URL of each (the JDV_J66 table
    carries both), and an OID without one is an error rather than a guessed URL. The canonical URL
    is the ANS one: ``urlFichier`` + ``/FHIR/`` + the file name with hyphens (as PDSm binds it).
    """
    root = ET.parse(path).getroot()  # project data, not client input
    value_set = root.find(f"{SVS_NS}ValueSet")
    if value_set is None:
        raise ValueError(f"{source}: no SVS ValueSet")
    page = value_set.get("urlFichier", "")
    name = page.rsplit("/", 1)[-1]
    if not re.fullmatch(r"JDV_J\d+-[A-Za-z]+-[A-Za-z]+", name):
        raise ValueError(f"{source}: unexpected urlFichier {page!r}")
    fhir_id = name.replace("_", "-")
    concepts: dict[str, list[dict[str, str]]] = {}
    for concept in value_set.iter(f"{SVS_NS}Concept"):
        oid = concept.get("codeSystem", "")
        if oid not in systems:
            raise ValueError(f"{source}: code {concept.get('code')} of code system {oid!r}, whose FHIR URL is unknown")
        concepts.setdefault(systems[oid], []).append(
            {"code": concept.get("code", ""), "display": concept.get("displayName", "")}
        )
    includes = [
        {"system": system, "concept": sorted(listed, key=lambda c: c["code"])}
        for system, listed in sorted(concepts.items())
    ]
    return {
        "resourceType": "ValueSet",
        "id": fhir_id,
        "language": "fr-FR",
        "url": f"{page}/FHIR/{fhir_id}",
        "identifier": oid_identifier(value_set.get("id", "")),
        "version": VERSION,
        "name": name.replace("-", "_"),
        "title": f"{name.split('-')[0]} {value_set.get('description', '')}".strip(),
        "status": "active",
        "experimental": False,
        "description": f"{value_set.get('description', name)} ({use}): every code "
        f"of the CI-SIS value set as published on {value_set.get('dateMaj', '?')[:8]}. {BUILT_BY} from "
        f"../shared/data/{source} (ansforge/TestContenuCDA-3-0, jeuxDeValeurs).",
        "copyright": LOINC_COPYRIGHT,
        "compose": {"include": includes},
    }


def build(data: Path) -> dict[str, dict[str, Any]]:
    """Every generated resource, keyed by its path relative to the ig directory."""
    out: dict[str, dict[str, Any]] = {}

    def put(res: dict[str, Any]) -> None:
        out[f"{res['resourceType']}/{res['resourceType']}-{res['id']}.json"] = res

    put(
        own_code_system(
            "dmp-user-role",
            "DmpUserRole",
            "DMP user roles",
            "The user role carried by an access token's ihe_iua.subject_role (one per token). Project code "
            f"system defined by the server's contract (shared/design/CONTRACT.md §2). {BUILT_BY}.",
            USER_ROLES,
        )
    )
    put(
        own_code_system(
            "dmp-consent-type",
            "DmpConsentType",
            "DMP consent types",
            "The kind of patient decision a Consent records (Consent.category). Project code system defined by "
            f"the server's contract (shared/design/CONTRACT.md §4). {BUILT_BY}.",
            CONSENT_TYPES,
        )
    )

    g15 = read_csv(data / G15_CSV)
    put(
        nos_code_system(
            source=G15_CSV,
            rows=g15,
            url=single(g15, "system", G15_CSV),
            id="TRE-G15-ProfessionSante",
            name="TRE_G15_ProfessionSante",
            title="TRE_G15 Profession de santé",
            origin="ANS NOS TRE_G15, statuses as in NOS v20250328; deprecated codes kept with their status",
            status_column="status_in_NOS_v20250328",
            oid=single(g15, "system_oid", G15_CSV),
        )
    )

    j57 = read_csv(data / J57_CSV)
    if single(j57, "system", J57_CSV) != TRE_A03:
        raise ValueError(f"{J57_CSV}: system is not {TRE_A03}")
    put(
        nos_code_system(
            source=J57_CSV,
            rows=j57,
            url=TRE_A03,
            id="TRE-A03-ClasseDocument",
            name="TRE_A03_ClasseDocument",
            title="TRE_A03 Classe de document",
            origin="the DMP document classes of ANS NOS TRE_A03 / JDV_J57, from the ANS terminology IG "
            "ansforge/ig-terminlogie-de-sante",
            oid=single(j57, "system_oid", J57_CSV),
        )
    )

    j66 = read_csv(data / J66_CSV)
    systems = sorted({row["type_system"] for row in j66})
    unknown = set(systems) - {LOINC, TRE_A05, TRE_A12}
    if unknown:
        raise ValueError(f"{J66_CSV}: unexpected type systems {sorted(unknown)}")
    for system, id, name, title in (
        (TRE_A05, "TRE-A05-TypeDocComplementaire", "TRE_A05_TypeDocComplementaire", "TRE_A05 Type de document"),
        (TRE_A12, "TRE-A12-NomenclatureASTM", "TRE_A12_NomenclatureASTM", "TRE_A12 Nomenclature ASTM"),
    ):
        rows = [{"code": r["type_code"], "display_fr": r["type_display_fr"]} for r in j66 if r["type_system"] == system]
        if not rows:
            continue
        oid = single([r for r in j66 if r["type_system"] == system], "type_system_oid", J66_CSV)
        put(
            nos_code_system(
                source=J66_CSV,
                rows=rows,
                url=system,
                id=id,
                name=name,
                title=title,
                origin="the rows of JDV_J66 in this system, from the ANS terminology IG "
                "ansforge/ig-terminlogie-de-sante",
                content="fragment",
                oid=oid,
            )
        )

    r248 = read_csv(data / R248_CSV)
    put(
        nos_code_system(
            source=R248_CSV,
            rows=r248,
            url=TRE_R248,
            id="TRE-R248-ModeAcces",
            name="TRE_R248_ModeAcces",
            title="TRE_R248 Mode d'accès",
            origin=f"ANS NOS TRE_R248; the CSV spells the system {single(r248, 'system_fhir', R248_CSV)}, "
            "which the server also accepts (CONTRACT §8)",
            note_column="notes",
            oid=single(r248, "system_oid", R248_CSV),
        )
    )

    r260 = read_csv(data / R260_CSV)
    put(
        nos_code_system(
            source=R260_CSV,
            rows=r260,
            url=single(r260, "system", R260_CSV),
            id="TRE-R260-HL7RoleClass",
            name="TRE_R260_HL7RoleClass",
            title="TRE_R260 Rôle de la personne liée (HL7 RoleClass)",
            origin="ANS NOS TRE_R260; deprecated codes kept with their status",
            status_column="status",
            oid=single(r260, "system_oid", R260_CSV),
        )
    )

    # JDV_J66: every row, each code with its own system, LOINC codes listed explicitly.
    includes = []
    for system in systems:
        rows = sorted((r for r in j66 if r["type_system"] == system), key=lambda r: r["type_code"])
        concepts = [{"code": r["type_code"], "display": r["type_display_fr"]} for r in rows]
        includes.append({"system": system, "concept": concepts})
    put(
        {
            "resourceType": "ValueSet",
            "id": "JDV-J66-TypeCode-DMP",
            "language": "fr-FR",
            "url": JDV_J66,
            "version": VERSION,
            "name": "JDV_J66_TypeCode_DMP",
            "title": "JDV_J66 Types de document du DMP",
            "status": "active",
            "experimental": False,
            "description": f"The DMP document types (DocumentReference.type): LOINC, TRE_A05 and TRE_A12 codes. "
            f"{BUILT_BY} from ../shared/data/{J66_CSV} (ANS terminology IG ansforge/ig-terminlogie-de-sante).",
            "copyright": LOINC_COPYRIGHT,
            "compose": {"include": includes},
        }
    )
    put(
        {
            "resourceType": "ValueSet",
            "id": "JDV-J57-ClassCode-DMP",
            "language": "fr-FR",
            "url": JDV_J57,
            "version": VERSION,
            "name": "JDV_J57_ClassCode_DMP",
            "title": "JDV_J57 Classes de document du DMP",
            "status": "active",
            "experimental": False,
            "description": f"The DMP document classes (DocumentReference.category), TRE_A03 codes. {BUILT_BY} "
            f"from ../shared/data/{J57_CSV} (ANS terminology IG ansforge/ig-terminlogie-de-sante).",
            "compose": {
                "include": [
                    {
                        "system": TRE_A03,
                        "concept": [
                            {"code": r["code"], "display": r["display_fr"]}
                            for r in sorted(j57, key=lambda r: r["code"])
                        ],
                    }
                ]
            },
        }
    )

    oid_systems = {r["type_system_oid"]: r["type_system"] for r in j66}
    put(svs_value_set(data / J07_SVS, J07_SVS, oid_systems, "DocumentReference.type, CONTRACT §5"))

    # type (system, code) -> class (TRE_A03), every J66 row; rows without a class are "unmatched".
    class_codes = {r["code"] for r in j57}
    groups = []
    for system in systems:
        elements = []
        for r in sorted((r for r in j66 if r["type_system"] == system), key=lambda r: r["type_code"]):
            cls = r["class_code_TRE_A03"]
            if cls:
                if cls not in class_codes or r["class_system"] != TRE_A03:
                    raise ValueError(f"{J66_CSV}: type {r['type_code']} has unknown class {r['class_system']}|{cls}")
                target = {"code": cls, "display": r["class_display"], "equivalence": "wider"}
            else:
                target = {"equivalence": "unmatched", "comment": "No DMP class given for this type in JDV_J66."}
            elements.append({"code": r["type_code"], "display": r["type_display_fr"], "target": [target]})
        groups.append({"source": system, "target": TRE_A03, "element": elements})
    put(
        {
            "resourceType": "ConceptMap",
            "id": "dmp-document-type-to-class",
            "language": "fr-FR",
            "url": f"{CANON}/ConceptMap/dmp-document-type-to-class",
            "version": VERSION,
            "name": "DmpDocumentTypeToClass",
            "title": "DMP document type to document class",
            "status": "active",
            "experimental": False,
            "description": f"The DMP class (TRE_A03, JDV_J57) of each DMP document type (JDV_J66), as given by the "
            f"ASS_X16 correspondence; types without a class are unmatched. {BUILT_BY} from "
            f"../shared/data/{J66_CSV} (ANS terminology IG ansforge/ig-terminlogie-de-sante).",
            "copyright": LOINC_COPYRIGHT,
            "sourceCanonical": JDV_J66,
            "targetCanonical": JDV_J57,
            "group": groups,
        }
    )
    return out


def dump(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=2, ensure_ascii=False) + "\n"


def write(data: Path, out: Path) -> list[Path]:
    """Write every output file under ``out``; returns their paths, sorted."""
    written: list[Path] = []
    for rel, res in sorted(build(data).items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(res), encoding="utf-8", newline="\n")
        written.append(path)
    for source, folder in sorted(COPIED.items()):
        res = json.loads((data / source).read_text(encoding="utf-8"))
        if res.get("resourceType") != folder:
            raise ValueError(f"{source}: not a {folder}")
        if res["resourceType"] == "CodeSystem" and res.get("url") != TRE_A07:
            raise ValueError(f"{source}: url is {res.get('url')!r}, expected {TRE_A07}")
        path = out / folder / Path(source).name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / source, path)
        written.append(path)
    auth = out / "authorisation"
    auth.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / MATRIX_CSV, auth / "authorisation-matrix.csv")
    (auth / "README.md").write_text(AUTHORISATION_README, encoding="utf-8", newline="\n")
    written += [auth / "authorisation-matrix.csv", auth / "README.md"]
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the ig folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write(args.data, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
