"""``dmp-server directory import`` (fhir_server/dmp/directory, fhir_server/cli/directory.py): the
Annuaire Santé extraction and FHIR Bundles become ADM-written Practitioner/PractitionerRole,
idempotently, and R6 then reads the professions there (CONTRACT §3).

The files are written here in the published formats: the extraction's header is the public
``PS_LibreAcces_Personne_activite`` one (pipe-separated, a trailing ``|`` on every line), the
Bundle the shape of the Annuaire Santé FHIR API (Practitioner with idNatPs/RPPS identifiers and
qualifications, PractitionerRole pointing at it by the API's ids). The people are invented.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from authz.terms import ACCESS, IDNATPS_SYSTEM, MEDECIN_TRAITANT, PROFESSION_SYSTEM, SPECIALTY_SYSTEM
from fhir_server.cli import main
from fhir_server.fhir.formats.xml import json_to_xml
from storage.query import EVERYTHING, OPEN_SCOPE, Query, Token
from tests.dmp import World
from tests.test_dmp_rules import consent

HEADER = (
    "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Code civilité d'exercice|"
    "Libellé civilité d'exercice|Code civilité|Libellé civilité|Nom d'exercice|Prénom d'exercice|"
    "Code profession|Libellé profession|Code catégorie professionnelle|Libellé catégorie professionnelle|"
    "Code type savoir-faire|Libellé type savoir-faire|Code savoir-faire|Libellé savoir-faire|"
    "Code mode exercice|Libellé mode exercice|Numéro SIRET site|Numéro SIREN site|Numéro FINESS site|"
    "Numéro FINESS établissement juridique|Identifiant technique de la structure|Raison sociale site|"
    "Enseigne commerciale site|Complément destinataire (coord. structure)|"
    "Complément point géographique (coord. structure)|Numéro Voie (coord. structure)|"
    "Indice répétition voie (coord. structure)|Code type de voie (coord. structure)|"
    "Libellé type de voie (coord. structure)|Libellé Voie (coord. structure)|"
    "Mention distribution (coord. structure)|Bureau cedex (coord. structure)|"
    "Code postal (coord. structure)|Code commune (coord. structure)|Libellé commune (coord. structure)|"
    "Code pays (coord. structure)|Libellé pays (coord. structure)|Téléphone (coord. structure)|"
    "Téléphone 2 (coord. structure)|Télécopie (coord. structure)|Adresse e-mail (coord. structure)|"
    "Code Département (structure)|Libellé Département (structure)|Ancien identifiant de la structure|"
    "Autorité d'enregistrement|Code secteur d'activité|Libellé secteur d'activité|"
    "Code section tableau pharmaciens|Libellé section tableau pharmaciens|Code rôle|Libellé rôle|"
    "Code genre activité|Libellé genre activité|"
)
COLUMNS = HEADER.split("|")
DOCTOR = "810100000017"
PHARMACIST = "810100000025"
INS = "180017512345660"


def line(**values: str) -> str:
    """One extraction line: the named columns set, every other one empty."""
    cells = dict.fromkeys(COLUMNS, "")
    for name, value in values.items():
        assert name in cells, name
        cells[name] = value
    return "|".join(cells[c] for c in COLUMNS)


def activity(idnatps: str, family: str, profession: str, structure: str, **more: str) -> str:
    return line(
        **{
            "Type d'identifiant PP": "8",
            "Identifiant PP": idnatps[1:],
            "Identification nationale PP": idnatps,
            "Code civilité d'exercice": "DR" if profession == "10" else "",
            "Nom d'exercice": family,
            "Prénom d'exercice": "CLAIRE",
            "Code profession": profession,
            "Identifiant technique de la structure": structure,
            **more,
        }
    )


LINES = [
    activity(
        DOCTOR,
        "DUPONT",
        "10",
        "R10100000001",
        **{
            "Code type savoir-faire": "S",
            "Code savoir-faire": "SM54",
            "Numéro FINESS site": "330780038",
            "Raison sociale site": "CENTRE HOSPITALIER EXEMPLE",
        },
    ),
    activity(DOCTOR, "DUPONT", "10", "R10100000002", **{"Code type savoir-faire": "S", "Code savoir-faire": "SM54"}),
    activity(PHARMACIST, "MARTIN", "21", "R10100000003", **{"Raison sociale site": "PHARMACIE DU PORT"}),
]


def extraction(tmp_path: Path, lines: list[str] = LINES, name: str = "PS_LibreAcces_Personne_activite.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def run(world: World, monkeypatch: pytest.MonkeyPatch, path: Path, *more: str) -> int:
    monkeypatch.setenv("DMP_DATA_DIR", str(world.config.data_dir))
    return main(["directory", "import", str(path), *more])


def directory(world: World, rtype: str) -> list[dict[str, Any]]:
    return [s.json() for s in world.store.search(Query(rtype, EVERYTHING, count=100), OPEN_SCOPE).matches]


def practitioner(world: World, idnatps: str) -> dict[str, Any]:
    [found] = world.store.search(
        Query("Practitioner", Token("identifier", IDNATPS_SYSTEM, idnatps)), OPEN_SCOPE
    ).matches
    resource: dict[str, Any] = found.json()
    return resource


def codes(resource: dict[str, Any], element: str) -> set[tuple[str, str]]:
    found = resource.get(element) or []
    concepts = [q["code"] for q in found] if element == "qualification" else found
    return {(c["system"], c["code"]) for concept in concepts for c in concept["coding"]}


def test_the_extraction_becomes_practitioners_and_their_activities(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(world, monkeypatch, extraction(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "5 created, 0 updated, 0 unchanged, 0 refused" in out  # 2 Practitioners, 3 roles
    assert "100%" in err  # the progress bar reached the end of the file
    doctor = practitioner(world, DOCTOR)
    assert {(i["system"], i["value"]) for i in doctor["identifier"]} == {
        (IDNATPS_SYSTEM, DOCTOR),
        ("http://rpps.fr", DOCTOR[1:]),
    }
    assert doctor["name"] == [{"use": "usual", "family": "DUPONT", "given": ["CLAIRE"], "prefix": ["DR"]}]
    assert codes(doctor, "qualification") == {(PROFESSION_SYSTEM, "10"), (SPECIALTY_SYSTEM, "SM54")}
    assert codes(practitioner(world, PHARMACIST), "qualification") == {(PROFESSION_SYSTEM, "21")}
    roles = [
        r
        for r in directory(world, "PractitionerRole")
        if r["practitioner"]["reference"] == f"Practitioner/{doctor['id']}"
    ]
    assert len(roles) == 2
    hospital = next(r for r in roles if "organization" in r)
    assert hospital["organization"] == {
        "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "330780038"},
        "display": "CENTRE HOSPITALIER EXEMPLE",
    }
    assert codes(hospital, "code") == {(PROFESSION_SYSTEM, "10")}
    assert codes(hospital, "specialty") == {(SPECIALTY_SYSTEM, "SM54")}


def test_a_second_import_changes_nothing_and_a_changed_line_one_resource(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = extraction(tmp_path)
    assert run(world, monkeypatch, path, "--no-progress") == 0
    versions = {r["id"]: r["meta"]["versionId"] for r in directory(world, "Practitioner")}
    assert run(world, monkeypatch, path, "--no-progress") == 0
    assert "0 created, 0 updated, 5 unchanged" in capsys.readouterr().out
    assert {r["id"]: r["meta"]["versionId"] for r in directory(world, "Practitioner")} == versions
    moved = [*LINES[:2], activity(PHARMACIST, "MARTIN-DURAND", "21", "R10100000003")]
    assert run(world, monkeypatch, extraction(tmp_path, moved), "--no-progress") == 0
    assert "0 created, 2 updated, 3 unchanged" in capsys.readouterr().out  # her name, her role's pharmacy name
    assert practitioner(world, PHARMACIST)["name"][0]["family"] == "MARTIN-DURAND"
    assert len(directory(world, "Practitioner")) == 2


def test_the_zip_ans_distributes_is_read_too(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = extraction(tmp_path).read_text(encoding="utf-8")
    archive = tmp_path / "Extraction_RPPS.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("PS_LibreAcces_Dipl_AutExerc_202612030000.txt", "x|y|\n")
        zf.writestr("PS_LibreAcces_Personne_activite_202612030000.txt", text)
    assert run(world, monkeypatch, archive, "--no-progress") == 0
    assert practitioner(world, DOCTOR)["name"][0]["family"] == "DUPONT"


def test_a_file_of_another_shape_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.txt"
    path.write_text("Nom|Prénom|\nDUPONT|CLAIRE|\n", encoding="utf-8")
    assert run(world, monkeypatch, path, "--no-progress") == 1
    assert "Identification nationale PP" in capsys.readouterr().err
    assert directory(world, "Practitioner") == []


def annuaire_bundle() -> dict[str, Any]:
    """A searchset as the Annuaire Santé FHIR API returns it: its own ids, references between them."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": "https://gateway.api.esante.gouv.fr/fhir/v2/Practitioner/003-5100090",
                "resource": {
                    "resourceType": "Practitioner",
                    "id": "003-5100090",
                    "meta": {"versionId": "3", "lastUpdated": "2026-11-02T10:00:00+01:00"},
                    "identifier": [{"use": "official", "system": "http://rpps.fr", "value": "10100000041"}],
                    "active": True,
                    "name": [{"use": "usual", "family": "LEROY", "given": ["PAUL"], "prefix": ["DR"]}],
                    "qualification": [
                        {"code": {"coding": [{"system": PROFESSION_SYSTEM, "code": "10"}]}},
                        {"code": {"coding": [{"system": SPECIALTY_SYSTEM, "code": "SM26"}]}},
                    ],
                },
            },
            {
                "fullUrl": "https://gateway.api.esante.gouv.fr/fhir/v2/PractitionerRole/005-3300701",
                "resource": {
                    "resourceType": "PractitionerRole",
                    "id": "005-3300701",
                    "active": True,
                    "practitioner": {"reference": "Practitioner/003-5100090"},
                    "organization": {"reference": "Organization/001-0123456", "display": "CABINET LEROY"},
                    "location": [{"reference": "Location/002-99"}],
                    "code": [{"coding": [{"system": PROFESSION_SYSTEM, "code": "10"}]}],
                },
            },
        ],
    }


@pytest.mark.parametrize("form", ["json", "xml"])
def test_annuaire_sante_bundles(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str) -> None:
    bundle = annuaire_bundle()
    path = tmp_path / f"annuaire.{form}"
    path.write_bytes(json.dumps(bundle).encode() if form == "json" else json_to_xml(bundle))
    assert run(world, monkeypatch, path, "--no-progress") == 0
    leroy = practitioner(world, "810100000041")  # the idNatPs of an RPPS number: 8 + RPPS
    assert leroy["id"] != "003-5100090" and leroy["meta"]["versionId"] == "1"
    [role] = directory(world, "PractitionerRole")
    assert role["practitioner"] == {"reference": f"Practitioner/{leroy['id']}"}
    assert role["organization"] == {"display": "CABINET LEROY"} and "location" not in role
    assert run(world, monkeypatch, path, "--no-progress") == 0  # idempotent
    assert (
        len(directory(world, "PractitionerRole")) == 1
        and practitioner(world, "810100000041")["meta"]["versionId"] == "1"
    )


def test_r6_reads_the_imported_directory(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    world.seed_patient(INS)
    for idnatps in (DOCTOR, PHARMACIST, "810100000099"):
        world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, idnatps))
    patient = world.patient(INS)

    def designate(idnatps: str) -> Any:
        return patient.post("Consent", consent(MEDECIN_TRAITANT, INS, (IDNATPS_SYSTEM, idnatps)))

    absent = designate(DOCTOR)
    assert absent.status_code == 422 and "not in the server's directory" in absent.get_json()["issue"][0]["diagnostics"]
    assert run(world, monkeypatch, extraction(tmp_path), "--no-progress") == 0
    pharmacist = designate(PHARMACIST)
    assert pharmacist.status_code == 422
    assert "the directory records 21" in pharmacist.get_json()["issue"][0]["diagnostics"]
    assert designate(DOCTOR).status_code == 201
