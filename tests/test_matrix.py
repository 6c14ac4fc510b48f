"""The terminology built into ``ig/`` and the R10 authorisation matrix read from it."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from fhir.resources.R4B import get_fhir_model_class

from authz.matrix import AuthorisationMatrix
from fhirmodel.terminology import Terminology
from tests.paths import ROOT, SHARED_DATA

IG = ROOT / "ig"
BUILD_SCRIPT = IG / "tools" / "build_terminology.py"
BUILT_FOLDERS = ("CodeSystem", "ValueSet", "ConceptMap", "authorisation")
TERMINOLOGY = SHARED_DATA / "terminology"
MATRIX_CSV = SHARED_DATA / "authorisation-matrix.csv"

LOINC = "http://loinc.org"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
TRE_A12 = "https://mos.esante.gouv.fr/NOS/TRE_A12-NomenclatureASTM/FHIR/TRE-A12-NomenclatureASTM"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
JDV_J66 = "https://mos.esante.gouv.fr/NOS/JDV_J66-TypeCode-DMP/FHIR/JDV-J66-TypeCode-DMP"
JDV_J57 = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"
JDV_J07 = "https://mos.esante.gouv.fr/NOS/JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"
CANON = "https://dmp.example.org/fhir"

COPIED = {
    "CodeSystem-TRE-A07-StatutVisibiliteDocument.json",
    "ValueSet-JDV-J58-ConfidentialityCode-DMP.json",
    "ValueSet-JDV-J52-AvailabilityStatus-CISIS.json",
}


# required codes the R4B models do not check (they accept any string there)
PUBLICATION_STATUS = {"draft", "active", "retired", "unknown"}
CS_CONTENT = {"not-present", "example", "fragment", "complete", "supplement"}
CM_EQUIVALENCE = {
    "relatedto",
    "equivalent",
    "equal",
    "wider",
    "subsumes",
    "narrower",
    "specializes",
    "inexact",
    "unmatched",
    "disjoint",
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


J66_ROWS = read_csv(TERMINOLOGY / "document-types-J66-with-class.csv")
MATRIX_ROWS = read_csv(MATRIX_CSV)


def ig_json_files() -> list[Path]:
    return sorted(p for folder in ("CodeSystem", "ValueSet", "ConceptMap") for p in (IG / folder).glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def by_url(url: str) -> dict[str, Any]:
    matches = [res for res in map(load, ig_json_files()) if res.get("url") == url]
    assert len(matches) == 1, url
    return matches[0]


@pytest.fixture(scope="module")
def matrix() -> AuthorisationMatrix:
    return AuthorisationMatrix.load(IG)


# --- the ig files -------------------------------------------------------------------------------


def test_expected_files_exist() -> None:
    names = {p.name for p in ig_json_files()}
    assert {
        "CodeSystem-dmp-user-role.json",
        "CodeSystem-dmp-consent-type.json",
        "CodeSystem-TRE-G15-ProfessionSante.json",
        "CodeSystem-TRE-A03-ClasseDocument.json",
        "CodeSystem-TRE-A05-TypeDocComplementaire.json",
        "CodeSystem-TRE-A12-NomenclatureASTM.json",
        "CodeSystem-TRE-R248-ModeAcces.json",
        "CodeSystem-TRE-R260-HL7RoleClass.json",
        "CodeSystem-TRE-A07-StatutVisibiliteDocument.json",
        "ValueSet-JDV-J66-TypeCode-DMP.json",
        "ValueSet-JDV-J07-XdsTypeCode-CISIS.json",
        "ValueSet-JDV-J57-ClassCode-DMP.json",
        "ValueSet-JDV-J58-ConfidentialityCode-DMP.json",
        "ValueSet-JDV-J52-AvailabilityStatus-CISIS.json",
        "ConceptMap-dmp-document-type-to-class.json",
    } <= names
    assert (IG / "authorisation" / "authorisation-matrix.csv").is_file()
    assert (IG / "authorisation" / "README.md").is_file()


@pytest.mark.parametrize("path", ig_json_files(), ids=lambda p: p.name)
def test_ig_resource_is_valid_r4(path: Path) -> None:
    res = load(path)
    rt = res["resourceType"]
    assert path.parent.name == rt
    assert path.name == f"{rt}-{res['id']}.json"
    get_fhir_model_class(rt).model_validate(res)
    for key in ("url", "version", "name", "status", "description"):
        assert res.get(key), f"{path.name}: no {key}"
    assert res["status"] == "active"
    assert res["status"] in PUBLICATION_STATUS
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]{0,254}", res["name"]), res["name"]
    if rt == "CodeSystem":
        assert res["content"] in CS_CONTENT
        codes = [c["code"] for c in res["concept"]]
        assert len(codes) == len(set(codes))
        if "count" in res:
            assert res["count"] == len(codes)
    if rt == "ConceptMap":
        for group in res["group"]:
            for element in group["element"]:
                for target in element["target"]:
                    assert target["equivalence"] in CM_EQUIVALENCE
                    assert ("code" in target) == (target["equivalence"] != "unmatched")


@pytest.mark.parametrize("path", ig_json_files(), ids=lambda p: p.name)
def test_built_resources_state_their_provenance(path: Path) -> None:
    res = load(path)
    if path.name in COPIED:
        return
    assert "build_terminology.py" in res["description"]
    assert "../shared/data/" in res["description"] or "CONTRACT.md" in res["description"]


@pytest.mark.parametrize("name", sorted(COPIED))
def test_shipped_resources_are_copied_unchanged(name: str) -> None:
    folder = name.split("-", 1)[0]
    assert (IG / folder / name).read_bytes() == (TERMINOLOGY / name).read_bytes()
    if folder == "CodeSystem":
        assert load(IG / folder / name)["url"] == TRE_A07


def run_build(out: Path) -> None:
    subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--data", str(SHARED_DATA), "--out", str(out)],
        check=True,
        capture_output=True,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in BUILT_FOLDERS
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def test_build_is_deterministic_and_matches_the_committed_files(tmp_path: Path) -> None:
    run_build(tmp_path / "a")
    run_build(tmp_path / "b")
    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert first == second
    assert len(first) == 17
    committed = tree(IG)
    assert sorted(committed) == sorted(first), "ig/ holds files the build does not make, or lacks some"
    for rel, content in first.items():
        assert committed[rel] == content, f"ig/{rel} differs from the build's output: re-run {BUILD_SCRIPT.name}"


def test_authorisation_matrix_is_a_verbatim_copy() -> None:
    assert (IG / "authorisation" / "authorisation-matrix.csv").read_bytes() == MATRIX_CSV.read_bytes()
    readme = (IG / "authorisation" / "README.md").read_text(encoding="utf-8")
    assert "Provisional" in readme and "26 October 2023" in readme
    assert "no code change" in readme


def test_own_code_systems() -> None:
    roles = by_url(f"{CANON}/CodeSystem/dmp-user-role")
    assert {c["code"] for c in roles["concept"]} == {"PAT", "LEGREP", "HCP", "ASS", "TCU", "ADM"}
    for concept in roles["concept"]:
        assert concept["display"] and concept["designation"][0]["language"] == "en"
    consents = by_url(f"{CANON}/CodeSystem/dmp-consent-type")
    assert {c["code"] for c in consents["concept"]} == {
        "access",
        "block",
        "emergency-access",
        "medecin-traitant",
        "legal-representative",
    }
    assert all(c["definition"] for c in consents["concept"])


def test_professions_keep_deprecated_codes_with_their_status() -> None:
    g15 = by_url(TRE_G15)
    rows = read_csv(TERMINOLOGY / "professions-TRE_G15.csv")
    assert g15["content"] == "complete"
    assert {c["code"] for c in g15["concept"]} == {r["code"] for r in rows}
    status = {c["code"]: next(p["valueCode"] for p in c["property"] if p["code"] == "status") for c in g15["concept"]}
    for row in rows:
        assert status[row["code"]] == row["status_in_NOS_v20250328"].split()[0]
    assert status["35"] == "deprecated"
    assert status["10"] == "active"


# --- value sets and the concept map -------------------------------------------------------------


def test_j66_expands_to_exactly_the_csv_rows() -> None:
    terminology = Terminology.load(IG / "CodeSystem", IG / "ValueSet")
    expected = {(r["type_system"], r["type_code"]) for r in J66_ROWS}
    assert len(expected) == len(J66_ROWS) == 108
    assert terminology.expand(JDV_J66) == expected
    assert {system for system, _ in expected} == {
        LOINC,
        TRE_A05,
        "https://mos.esante.gouv.fr/NOS/TRE_A12-NomenclatureASTM/FHIR/TRE-A12-NomenclatureASTM",
    }


def test_j07_expands_to_exactly_the_svs_concepts() -> None:
    """JDV_J07 (CONTRACT §5: DocumentReference.type) holds every concept of the CI-SIS SVS file,
    each under the FHIR URL of its code system, and every DMP type (JDV_J66) is among them."""
    terminology = Terminology.load(IG / "CodeSystem", IG / "ValueSet")
    svs = ElementTree.parse(TERMINOLOGY / "svs" / "JDV_J07_XdsTypeCode_CISIS.xml")
    url_of = {"2.16.840.1.113883.6.1": LOINC, "1.2.250.1.213.1.1.4.12": TRE_A05, "ASTM": TRE_A12}
    concepts = svs.getroot().iter("{urn:ihe:iti:svs:2008}Concept")
    expected = {(url_of[c.get("codeSystem", "")], c.get("code", "")) for c in concepts}
    assert len(expected) == 114
    assert terminology.expand(JDV_J07) == expected
    assert {(r["type_system"], r["type_code"]) for r in J66_ROWS} < expected
    oid = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.213.1.1.5.471"}
    assert by_url(JDV_J07)["identifier"] == [oid]


def test_j57_expands_to_the_eleven_classes() -> None:
    terminology = Terminology.load(IG / "CodeSystem", IG / "ValueSet")
    classes = {(TRE_A03, r["code"]) for r in read_csv(TERMINOLOGY / "document-classes-J57.csv")}
    assert len(classes) == 11
    assert terminology.expand(JDV_J57) == classes
    # the TRE_A03 CodeSystem holds the same codes
    assert {(TRE_A03, c["code"]) for c in by_url(TRE_A03)["concept"]} == classes


def test_concept_map_covers_every_j66_row() -> None:
    cm = load(IG / "ConceptMap" / "ConceptMap-dmp-document-type-to-class.json")
    mapped: dict[tuple[str, str], str | None] = {}
    for group in cm["group"]:
        assert group["target"] == TRE_A03
        for element in group["element"]:
            key = (group["source"], element["code"])
            assert key not in mapped
            mapped[key] = element["target"][0].get("code")
    expected = {(r["type_system"], r["type_code"]): r["class_code_TRE_A03"] or None for r in J66_ROWS}
    assert mapped == expected
    assert None in mapped.values()  # the rows of the table without a class are kept, unmatched


def test_the_terminology_reads_the_concept_map() -> None:
    """``Terminology.translate`` gives each J66 row's class, and nothing for an unmatched row or
    an unknown code or map."""
    terminology = Terminology.load(*(IG / folder for folder in ("CodeSystem", "ValueSet", "ConceptMap")))
    url = f"{CANON}/ConceptMap/dmp-document-type-to-class"
    assert terminology.has_concept_map(url) and not terminology.has_concept_map(f"{CANON}/ConceptMap/none")
    for row in J66_ROWS:
        expected = {(TRE_A03, row["class_code_TRE_A03"])} if row["class_code_TRE_A03"] else set()
        assert terminology.translate(url, row["type_system"], row["type_code"]) == expected, row
    assert terminology.translate(url, LOINC, "28655-9") == frozenset()
    assert terminology.translate(f"{CANON}/ConceptMap/none", LOINC, "11488-4") == frozenset()


# --- the matrix on the real data ----------------------------------------------------------------


def types_of_class(class_code: str) -> list[tuple[str, str]]:
    return [(r["type_system"], r["type_code"]) for r in J66_ROWS if r["class_code_TRE_A03"] == class_code]


def test_the_csv_has_type_level_exceptions() -> None:
    exceptions = [r for r in MATRIX_ROWS if r["type_code"] != "*"]
    assert exceptions, "the shipped matrix is expected to hold type-level exceptions"
    assert {r["class_code"] for r in exceptions} <= {"*", "95"}


def test_class_of(matrix: AuthorisationMatrix) -> None:
    assert matrix.class_of(LOINC, "11488-4") == "10"
    assert matrix.class_of(TRE_A05, "ATTEST-RESID") == "95"
    assert matrix.class_of(LOINC, "101881-1") is None  # in J66, no class
    assert matrix.class_of(LOINC, "00000-0") is None
    assert matrix.class_of(TRE_A05, "11488-4") is None  # right code, wrong system


def test_medecin_reads_class_10(matrix: AuthorisationMatrix) -> None:
    class_10 = types_of_class("10")
    assert class_10
    assert all(matrix.may_read("10", system, code) for system, code in class_10)


def test_sage_femme_is_denied_class_95(matrix: AuthorisationMatrix) -> None:
    class_95 = types_of_class("95")
    assert class_95
    assert not any(matrix.may_read("50", system, code) for system, code in class_95)
    assert matrix.may_read("50", LOINC, "11488-4")  # but reads a compte rendu


def test_profession_absent_from_the_matrix_reads_nothing(matrix: AuthorisationMatrix) -> None:
    listed = {r["profession_code"] for r in MATRIX_ROWS}
    assert "32" not in listed  # physicien médical: a TRE_G15 profession with no row
    assert matrix.is_known_profession("32")
    assert matrix.readable_types("32") == frozenset()
    assert not matrix.may_read("32", LOINC, "11488-4")
    assert not matrix.is_known_profession("99")
    assert matrix.readable_types("99") == frozenset()
    assert matrix.is_known_profession("35")  # deprecated, still a TRE_G15 code


def test_type_level_exceptions_win_over_the_class_row(matrix: AuthorisationMatrix) -> None:
    # médecin: class 95 allowed, ATTEST-RESID (class 95) denied by a type row
    assert matrix.may_read("10", TRE_A05, "ATTEST-DROITS-AM")
    assert not matrix.may_read("10", TRE_A05, "ATTEST-RESID")
    # chirurgien-dentiste: classes 10, 11 and 44 allowed, five LOINC types of them denied
    assert matrix.may_read("40", LOINC, "18776-5")  # class 44
    assert not matrix.may_read("40", LOINC, "80788-3")  # class 44, excepted
    assert matrix.may_read("40", LOINC, "11488-4")  # class 10
    assert not matrix.may_read("40", LOINC, "75496-0")  # class 10, excepted
    assert not matrix.may_read("40", LOINC, "68599-0")  # class 11, excepted
    # every exception row of the CSV decides its type
    for row in MATRIX_ROWS:
        if row["type_code"] == "*":
            continue
        (system,) = [r["type_system"] for r in J66_ROWS if r["type_code"] == row["type_code"]]
        assert matrix.may_read(row["profession_code"], system, row["type_code"]) == (row["access"] == "allow")


def test_unknown_types_are_denied(matrix: AuthorisationMatrix) -> None:
    assert not matrix.may_read("10", LOINC, "00000-0")
    assert not matrix.may_read("10", TRE_A05, "11488-4")  # known code in another system
    assert not matrix.may_read("10", LOINC, "101881-1")  # J66 type without a class


def test_matrix_agrees_with_a_plain_reading_of_the_csv(matrix: AuthorisationMatrix) -> None:
    """An independent oracle: for every listed profession and every J66 type."""
    class_rule = {(r["profession_code"], r["class_code"]): r["access"] for r in MATRIX_ROWS if r["type_code"] == "*"}
    type_rule = {(r["profession_code"], r["type_code"]): r["access"] for r in MATRIX_ROWS if r["type_code"] != "*"}
    for profession in {r["profession_code"] for r in MATRIX_ROWS}:
        expected = set()
        for r in J66_ROWS:
            access = type_rule.get((profession, r["type_code"])) or class_rule.get(
                (profession, r["class_code_TRE_A03"]), "deny"
            )
            if access == "allow":
                expected.add((r["type_system"], r["type_code"]))
        assert matrix.readable_types(profession) == expected, profession
        for system, code in expected:
            assert matrix.may_read(profession, system, code)


# --- the rules on a tiny matrix -----------------------------------------------------------------

HEADER = "profession_code,profession,class_code,type_code,access\n"


def tiny_ig(tmp_path: Path, body: str) -> Path:
    ig = tmp_path / "ig"
    shutil.copytree(IG / "CodeSystem", ig / "CodeSystem")
    shutil.copytree(IG / "ConceptMap", ig / "ConceptMap")
    (ig / "authorisation").mkdir()
    (ig / "authorisation" / "authorisation-matrix.csv").write_text(HEADER + body, encoding="utf-8")
    return ig


def test_tiny_matrix_type_allow_wins_over_class_deny(tmp_path: Path) -> None:
    ig = tiny_ig(
        tmp_path,
        "21,Pharmacien,10,*,deny\n"
        "21,Pharmacien,*,11488-4,allow\n"
        "21,Pharmacien,*,101881-1,allow\n"
        "21,Pharmacien,11,*,allow\n"
        "21,Pharmacien,11,68599-0,deny\n",
    )
    m = AuthorisationMatrix.load(ig)
    assert m.may_read("21", LOINC, "11488-4")  # type allow beats class 10 deny
    assert not m.may_read("21", LOINC, "11490-0")  # the rest of class 10 stays denied
    assert m.may_read("21", LOINC, "101881-1")  # a class-less type, allowed by its own row
    assert not m.may_read("21", LOINC, "68599-0")  # type deny beats class 11 allow
    assert m.may_read("21", LOINC, "18761-7")
    assert m.readable_types("21") == {(LOINC, "11488-4"), (LOINC, "101881-1")} | (
        set(types_of_class("11")) - {(LOINC, "68599-0")}
    )
    assert m.readable_types("10") == frozenset()  # not in this matrix


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("10,Médecin,10,*,allow\n99,Inconnu,10,*,allow\n", 3, "unknown profession"),
        ("10,Médecin,10,*,maybe\n", 2, "allow or deny"),
        ("10,Médecin,77,*,allow\n", 2, "unknown document class"),
        ("10,Médecin,*,NOPE,deny\n", 2, "unknown document type"),
        ("10,Médecin,10,ATTEST-RESID,deny\n", 2, "is of class '95'"),
        ("10,Médecin,*,*,allow\n", 2, "both"),
        ("10,Médecin,10,*,allow\n10,Médecin,11,*,allow\n10,Médecin,10,*,deny\n", 4, "duplicate"),
        ("10,Médecin,95,ATTEST-RESID,deny\n10,Médecin,*,ATTEST-RESID,allow\n", 3, "duplicate"),
        ("10,Médecin,10,*\n", 2, "expected 5 fields"),
        ("10,,10,*,allow\n", 2, "empty profession label"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    with pytest.raises(ValueError, match=rf"line {line}: .*{re.escape(message)}"):
        AuthorisationMatrix.load(tiny_ig(tmp_path, body))


def test_bad_header_is_refused(tmp_path: Path) -> None:
    ig = tiny_ig(tmp_path, "")
    (ig / "authorisation" / "authorisation-matrix.csv").write_text("profession,class,access\n10,10,allow\n")
    with pytest.raises(ValueError, match="line 1: expected the header"):
        AuthorisationMatrix.load(ig)
