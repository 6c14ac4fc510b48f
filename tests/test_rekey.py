"""``dmp-server rekey-database``: the database rewritten under a new key, refused beside a running
server, and safe against a crash at any step (the store settles on whichever key opens it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhir_server.app import create_service
from fhir_server.cli import main
from fhir_server.cli.serving_lock import hold_serving_lock
from fhir_server.runtime.config import Config
from storage.crypto import EnvelopeCipher, MasterKeys
from storage.interface import Store
from storage.query import OPEN_SCOPE, Query, Reference
from storage.sqlite import dbkey
from storage.sqlite.connection import key_opens
from storage.sqlite.encrypt import copy_in_place
from storage.sqlite.schema import trail_file
from tests.dbfiles import decrypted_bytes, page_hmac, write_key_file
from tests.support import open_gatekeeper
from tests.test_storage_contract import patient, trail_event


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A data directory a server has used, holding one patient."""
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path / "data"))
    config = Config.from_env()
    store = create_service(config, gatekeeper=open_gatekeeper).store
    store.create(patient("p1", "Zabrowskiewicz"))
    store.create(trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z"))
    assert _events(store) == ["e1"]  # moved to the trail's file
    store.close()
    return config


def _events(store: Store) -> list[str]:
    return [s.id for s in store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE).matches]


def _cipher(config: Config) -> EnvelopeCipher:
    return EnvelopeCipher(MasterKeys.load_or_create(config.data_dir))


def _family(config: Config) -> str:
    store = create_service(config, gatekeeper=open_gatekeeper).store
    try:
        return str(store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"])
    finally:
        store.close()


def test_the_database_is_rewritten_under_a_new_key(config: Config) -> None:
    """Both files, each under a new key of its own."""
    database, cipher = config.sqlite_path, _cipher(config)
    trail = Path(trail_file(str(database)))
    old, old_trail = dbkey.load(database, cipher), dbkey.load(trail, cipher)
    assert main(["rekey-database"]) == 0
    new, new_trail = dbkey.load(database, cipher), dbkey.load(trail, cipher)
    assert new != old and key_opens(database, new) and not key_opens(database, old)
    assert new_trail not in (old_trail, new) and key_opens(trail, new_trail) and not key_opens(trail, old_trail)
    assert b"Zabrowskiewicz" in decrypted_bytes(database, config.data_dir)  # the content came along
    assert not dbkey.pending_path(database).exists()
    assert not database.with_name(database.name + ".encrypting").exists()
    assert _family(config) == "Zabrowskiewicz"
    store = create_service(config, gatekeeper=open_gatekeeper).store
    assert _events(store) == ["e1"]
    store.close()


def test_a_database_of_an_earlier_version_is_rewritten_under_hmac_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier version's files (key files of the key's 32 bytes alone: HMAC-SHA512) come out of
    a re-key under the HMAC new files have (tests/test_database_files.py says why)."""
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path / "data"))
    config = Config.from_env()
    database, cipher = config.sqlite_path, _cipher(config)
    files = (database, Path(trail_file(str(database))))
    database.parent.mkdir(parents=True, exist_ok=True)
    for file in files:
        write_key_file(file, cipher, os.urandom(32))
    store = create_service(config, gatekeeper=open_gatekeeper).store
    store.create(patient("p1", "Zabrowskiewicz"))
    store.create(trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z"))
    assert _events(store) == ["e1"]
    store.close()
    assert [page_hmac(file, cipher) for file in files] == ["HMAC_SHA512"] * 2
    assert main(["rekey-database"]) == 0
    assert [page_hmac(file, cipher) for file in files] == ["HMAC_SHA256"] * 2
    assert _family(config) == "Zabrowskiewicz"


def test_refused_while_a_server_holds_the_data_directory(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    old = dbkey.load(config.sqlite_path, _cipher(config))
    held = hold_serving_lock(config.data_dir)  # this test process plays the server: a real flock
    try:
        assert main(["rekey-database"]) == 2
        assert "a server is running" in capsys.readouterr().err
        assert dbkey.load(config.sqlite_path, _cipher(config)) == old
    finally:
        os.close(held)


def test_a_crash_before_the_copy_keeps_the_old_key(config: Config) -> None:
    database, cipher = config.sqlite_path, _cipher(config)
    old = dbkey.load(database, cipher)
    dbkey.stage(database, cipher)  # the re-key died here: new key written, no page under it
    assert _family(config) == "Zabrowskiewicz"
    assert dbkey.load(database, cipher) == old and not dbkey.pending_path(database).exists()


def test_a_crash_after_the_copy_keeps_the_new_key(config: Config) -> None:
    database, cipher = config.sqlite_path, _cipher(config)
    old = dbkey.load(database, cipher)
    new = dbkey.stage(database, cipher)
    copy_in_place(database, old, new)  # the re-key died here: the database is under the pending key
    assert _family(config) == "Zabrowskiewicz"
    assert dbkey.load(database, cipher) == new and not dbkey.pending_path(database).exists()
