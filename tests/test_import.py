"""``dmp-server import``: real files (a collection Bundle, NDJSON, an ITI-65 transaction), imported
through the FHIR service by the command line, resumable, in the trail as the operator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.app import create_service
from fhir_server.cli import main
from fhir_server.dmp.imports.run import IMPORT_KIND
from fhir_server.fhir.service import FhirService
from fhir_server.runtime.config import Config
from storage.query import OPEN_SCOPE, Query, Reference, ReferenceIdentifier
from tests.dmp import IDNATPS_SYSTEM, INS_SYSTEM, PROFESSION_SYSTEM
from tests.test_mhd_provide import DR, INS, submission

PID = "pat-imported"
CNAM = "urn:oid:1.2.250.1.71.4.2.2|CNAM"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("DMP_DATA_DIR", str(data))
    return data


@pytest.fixture
def service(data_dir: Path) -> Iterator[Callable[[], FhirService]]:
    """The store as the server sees it, opened after each import by the test."""
    opened: list[FhirService] = []

    def open_() -> FhirService:
        svc = create_service(Config.from_env())
        opened.append(svc)
        return svc

    yield open_
    for svc in opened:
        svc.store.close()


def practitioner(idnatps: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": f"prat-{idnatps}",
        "identifier": [{"system": IDNATPS_SYSTEM, "value": idnatps}],
        "qualification": [{"code": {"coding": [{"system": PROFESSION_SYSTEM, "code": "10"}]}}],
    }


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PID,
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"family": "Importé", "given": ["Jeanne"]}],
        "birthDate": "1970-01-02",
        "active": True,
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A folder as an operator would get it: the directory as NDJSON (one line broken), the DMP in a
    collection Bundle."""
    folder = tmp_path / "export"
    folder.mkdir()
    lines = [json.dumps(practitioner(DR)), "", json.dumps(practitioner("899700000002"))]
    lines.append(json.dumps({**practitioner("899700000003"), "gender": "sometimes"}))  # invalid
    (folder / "directory.ndjson").write_text("\n".join(lines) + "\n")
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient()}]}
    (folder / "patients.json").write_text(json.dumps(collection))
    return folder


def run(*args: str) -> int:
    return main(["import", *args])


def audit_of(svc: FhirService) -> list[dict[str, Any]]:
    about = ReferenceIdentifier("patient", INS_SYSTEM, INS)
    return [s.json() for s in svc.store.search(Query("AuditEvent", about, count=1000), OPEN_SCOPE).matches]


def test_import_goes_through_the_service_reports_failures_and_resumes(
    source: Path, service: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(source)) == 1  # one unit was refused
    out, err = capsys.readouterr()
    assert "imported 3 unit(s), skipped 0 already imported, 1 failed" in out
    assert "directory.ndjson:4: 422" in err and "gender" in err  # the line and why
    assert "import: 100%" in err  # the progress bar

    svc = service()
    assert svc.store.read("Patient", PID, OPEN_SCOPE).json()["name"][0]["family"] == "Importé"
    assert svc.store.exists("Practitioner", f"prat-{DR}") == 1
    assert svc.store.exists("Practitioner", "prat-899700000003") is None
    # A DMP created by the import starts like any other: its emergency settings (R5).
    consents = Query("Consent", ReferenceIdentifier("patient", INS_SYSTEM, INS), count=10)
    assert svc.store.search(consents, OPEN_SCOPE).total == 2
    # The trail names the operator who brought the record in.
    creation = [e for e in audit_of(svc) if e["outcome"] == "0"]
    assert creation and "dmp-server import (" in creation[0]["agent"][0]["who"]["display"]
    assert len(svc.store.record_keys(IMPORT_KIND)) == 3
    svc.store.close()

    # Restarted: what was done is skipped (no new version), the failed unit is tried again.
    assert run("--quiet", str(source)) == 1
    out, _ = capsys.readouterr()
    assert "imported 0 unit(s), skipped 3 already imported, 1 failed" in out
    svc = service()
    assert svc.store.exists("Patient", PID) == 1 and svc.store.exists("Practitioner", f"prat-{DR}") == 1

    # The operator fixes the line: only it is new.
    fixed = (source / "directory.ndjson").read_text().replace('"gender": "sometimes"', '"gender": "female"')
    (source / "directory.ndjson").write_text(fixed)
    assert run("--quiet", str(source)) == 0
    out, _ = capsys.readouterr()
    # The file changed, so its units are new to the import: each is written again (PUT, a new
    # version); the collection Bundle is unchanged and skipped.
    assert "skipped 1 already imported, 0 failed" in out
    assert svc.store.exists("Practitioner", "prat-899700000003") == 1


def test_documents_are_imported_as_a_feed_by_the_dmp_rules(
    source: Path, service: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ITI-65 transaction imported by the insurer's feed role (TCU, R15): checked as an ITI-65
    (profiles, codes), stored whole; the same file refused to a role that may not add documents."""
    (source / "directory.ndjson").unlink()
    assert run("--quiet", str(source)) == 0
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "iti65.json").write_text(json.dumps(submission(PID)))
    assert run("--quiet", "--role", "ASS", str(documents)) == 1  # R9: ASS adds nothing
    assert "403" in capsys.readouterr().err
    assert run("--quiet", "--role", "TCU", "--organization", CNAM, str(documents)) == 0
    svc = service()
    of_patient = Query("DocumentReference", Reference("subject", "Patient", PID))
    assert svc.store.search(of_patient, OPEN_SCOPE).total == 1
    assert run("--quiet", "--role", "TCU", "--organization", CNAM, str(documents)) == 0  # resumed: nothing new
    assert svc.store.search(of_patient, OPEN_SCOPE).total == 1


def test_a_file_that_is_no_json_stops_the_import_before_anything(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    assert run(str(tmp_path / "broken.json")) == 2
    assert "broken.json: not JSON" in capsys.readouterr().err
    assert run(str(tmp_path / "missing")) == 2
