"""``dmp-server backup`` and ``restore``, as real processes: a backup taken while a real server
writes is consistent, keeps the keys apart, and restores to exactly what its manifest counts."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtoken import make_dev_token
from authz.keys import load_or_create_server_key
from authz.tokens import own_issuer
from fhir_server.app import create_service
from fhir_server.runtime.config import Config
from storage.query import OPEN_SCOPE, Query
from tests.paths import ROOT
from tests.smtp_sink import free_port

INS = "299017512345649"
IDNATPS = "810002673899"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhir_server.cli", *args]


def _env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {**os.environ, "DMP_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **settings}
    env.pop("DMP_MASTER_KEY_FILE", None)
    return env


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), env=_env(data_dir), cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``dmp-server serve`` on its own data directory."""
    port = free_port()
    base_url, data_dir = f"http://127.0.0.1:{port}/fhir", tmp_path / "data"
    env = _env(data_dir, DMP_BASE_URL=base_url)
    server = subprocess.Popen(_command("serve", "--port", str(port)), env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "the server did not start"
                time.sleep(0.1)
        yield base_url, data_dir
    finally:
        server.terminate()
        server.wait(timeout=30)


def _request(method: str, url: str, token: str, body: object = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}"})
    if data is not None:
        request.add_header("Content-Type", "application/fhir+json")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def _audit_events(data_dir: Path) -> int:
    """How many AuditEvents the database holds now (read beside the running server)."""
    service = create_service(Config(data_dir=data_dir))
    try:
        total = service.store.search(Query("AuditEvent", total=True, count=0), OPEN_SCOPE).total
    finally:
        service.store.close()
    assert total is not None
    return total


def test_a_backup_taken_while_the_server_writes_restores_what_its_manifest_says(
    serving: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, data_dir = serving
    key = load_or_create_server_key(data_dir)
    claims = {"idnatps": IDNATPS, "profession": "10", "person_id": INS}
    doctor = make_dev_token(key, issuer=own_issuer(base_url), audience=base_url, role="HCP", sub=IDNATPS, **claims)
    record = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
        "name": [{"family": "Lefèvre", "given": ["Élodie"]}],
    }
    pid = _request("POST", f"{base_url}/Patient", doctor, record)["id"]
    stop, reads, failures = threading.Event(), [0], []

    def write() -> None:  # every read of the record leaves an AuditEvent: the server writes meanwhile
        while not stop.is_set():
            try:
                _request("GET", f"{base_url}/Patient/{pid}", doctor)
                reads[0] += 1
            except Exception as exc:  # reported below
                failures.append(exc)
                return

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while reads[0] < 10 and not failures:
            time.sleep(0.05)
        before = _audit_events(data_dir)
        backup = _cli("backup", str(tmp_path / "backup"), data_dir=data_dir)
        after = _audit_events(data_dir)
        done = reads[0]
        while reads[0] < done + 10 and not failures:
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    assert failures == [] and backup.returncode == 0, backup.stderr
    dest, keys = tmp_path / "backup", tmp_path / "backup.keys"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert before <= manifest["resources"]["AuditEvent"] <= after < _audit_events(data_dir)
    beside = _cli("restore", str(dest), "--force", data_dir=data_dir)  # the server still runs on it
    assert beside.returncode == 2 and "a server is running" in beside.stderr, beside.stderr
    assert manifest["resources"]["Patient"] == 1 and manifest["versions"] >= manifest["resources"]["AuditEvent"]
    for name, described in manifest["files"].items():
        raw = (dest / name).read_bytes()
        assert described == {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    files = ["dmp.sqlite3", "dmp.sqlite3.key", "dmp.sqlite3.trail", "dmp.sqlite3.trail.key"]
    assert sorted(manifest["files"]) == files  # no key that opens them
    saved_keys = json.loads((keys / "manifest.json").read_text())["files"]
    assert {"master-keys.json", "server-signing-key.pem"} <= set(saved_keys)
    secrets_in_clear = (INS.encode(), "Lefèvre".encode())  # the whole name: 3 bytes may occur in ciphertext
    assert [p.name for p in dest.iterdir() if any(s in p.read_bytes() for s in secrets_in_clear)] == []

    restored = tmp_path / "restored"
    result = _cli("restore", str(dest), data_dir=restored)
    assert result.returncode == 0, result.stderr
    assert _audit_events(restored) == manifest["resources"]["AuditEvent"]
    service = create_service(Config(data_dir=restored))
    assert service.store.read("Patient", str(pid), OPEN_SCOPE).json()["name"][0]["family"] == "Lefèvre"
    service.store.close()

    refused = _cli("restore", str(dest), data_dir=restored)
    assert refused.returncode == 2 and "not empty (--force" in refused.stderr
    service = create_service(Config(data_dir=restored))  # an event logged after the backup, in the journal
    service.store.log([{"resourceType": "AuditEvent", "id": "after-the-backup"}])
    service.store.close()
    assert _cli("restore", str(dest), "--force", data_dir=restored).returncode == 0
    assert _audit_events(restored) == manifest["resources"]["AuditEvent"]  # the restore undid it
    with open(dest / "dmp.sqlite3", "r+b") as handle:  # one byte altered
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 1]))
    altered = _cli("restore", str(dest), "--force", data_dir=tmp_path / "elsewhere")
    assert altered.returncode == 1 and "not the file the manifest describes" in altered.stderr
    assert not (tmp_path / "elsewhere" / "dmp.sqlite3").exists()


def test_a_backup_refuses_a_destination_that_is_not_empty(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    create_service(Config(data_dir=data_dir)).store.close()
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "something").write_text("kept")
    result = _cli("backup", str(tmp_path / "backup"), data_dir=data_dir)
    assert result.returncode == 1 and "is not empty" in result.stderr
    same = _cli("backup", str(tmp_path / "b2"), "--keys", str(tmp_path / "b2"), data_dir=data_dir)
    assert same.returncode == 1 and "another directory" in same.stderr
