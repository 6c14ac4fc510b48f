"""The SQLite database on disk: encrypted as a whole, owner-only, durable, and with connections
that do not outlive their threads."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from fhir_server.app import create_service
from fhir_server.cli import main
from fhir_server.fhir.service import SERVED_TYPES, FhirService
from fhir_server.runtime.config import Config
from storage.crypto import EnvelopeCipher, MasterKeyError, MasterKeys
from storage.query import OPEN_SCOPE, Query, Reference
from storage.sqlite import dbkey
from storage.sqlite.connection import PLAINTEXT_HEADER, DatabaseKey, SqliteSettings, key_opens
from storage.sqlite.schema import trail_file
from storage.sqlite.store import SqliteStore
from tests.dbfiles import decrypted_bytes, page_hmac, write_key_file
from tests.support import open_gatekeeper
from tests.test_storage_contract import _index, _param_type, patient, trail_event

INS = "184067512345641"
FAMILY = "Zabrowskiewicz"
GIVEN = "Philomene"
EMAIL = "philomene.zabrowskiewicz@example.org"


def _store(directory: Path, settings: SqliteSettings | None = None) -> SqliteStore:
    cipher = EnvelopeCipher(MasterKeys.load_or_create(directory))
    database = directory / "store.sqlite3"
    return SqliteStore(database, _index, _param_type, SERVED_TYPES, cipher, settings or SqliteSettings())


def _files(database: Path) -> list[Path]:
    return [database, database.with_name(database.name + "-wal")]


def test_no_ins_name_or_email_of_a_stored_patient_in_the_database_or_its_wal(
    client: FlaskClient, service: FhirService, config: Config
) -> None:
    """Stored through the REST API, so the search index has them; greps both files before the WAL
    is checkpointed and after. Decrypted with the keys, the same bytes do hold them: the grep can fail."""
    created = client.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
            "name": [{"family": FAMILY, "given": [GIVEN]}],
            "telecom": [{"system": "email", "value": EMAIL}],
        },
    )
    assert created.status_code == 201
    assert client.get(f"/fhir/Patient?identifier={INS}").get_json()["total"] == 1  # indexed
    database = config.sqlite_path
    secrets = [value.encode() for value in (INS, FAMILY, GIVEN, EMAIL)] + [FAMILY.lower().encode()]
    assert database.with_name(database.name + "-wal").stat().st_size > 0
    assert [(f.name, s) for f in _files(database) for s in secrets if s in f.read_bytes()] == []
    assert {s for s in secrets if s in decrypted_bytes(database, config.data_dir)} == set(secrets)
    assert "truncated" in service.store.compact()
    assert database.with_name(database.name + "-wal").stat().st_size == 0
    assert [s for s in secrets if s in database.read_bytes()] == []
    assert not database.read_bytes().startswith(PLAINTEXT_HEADER)


def test_database_wal_and_keys_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "store.sqlite3"
    database.touch(mode=0o644)  # an earlier version's file, readable by others
    os.chmod(database, 0o644)
    store = _store(tmp_path, SqliteSettings(encrypted=False))
    store.create(patient("p1", "Martin"))
    paths = [*_files(database), database.with_name(database.name + "-shm"), tmp_path / "keys" / "master-keys.json"]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {p.name: "0o600" for p in paths}
    store.close()
    fresh = tmp_path / "fresh"
    store = _store(fresh)
    store.create(patient("p1", "Martin"))
    paths = [*_files(fresh / "store.sqlite3"), dbkey.key_path(fresh / "store.sqlite3")]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {p.name: "0o600" for p in paths}
    store.close()


def test_commits_are_synced_by_default_and_the_page_cache_is_bounded(tmp_path: Path) -> None:
    store = _store(tmp_path)
    conn = store._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -64 * 1024  # KiB: 64 MB
    store.close()
    relaxed = _store(tmp_path, SqliteSettings(cache_mb=2, synchronous="NORMAL"))
    conn = relaxed._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -2 * 1024
    relaxed.close()


def test_a_paging_session_commits_unsynced_and_the_connection_goes_back_to_full(tmp_path: Path) -> None:
    """A paging session may be lost with the power (its client runs the search again): it is
    committed without syncing the WAL, and every later commit of the connection is synced again."""
    store = _store(tmp_path)
    conn = store._conn()
    levels: list[int] = []
    conn.set_trace_callback(
        lambda sql: levels.append(conn.execute("PRAGMA synchronous").fetchone()[0]) if sql == "COMMIT" else None
    )
    key = store.save_session(b"state", 60)
    store.create(patient("p1", "Martin"))
    conn.set_trace_callback(None)
    assert levels == [1, 2]  # the session's commit NORMAL, the resource's FULL
    assert store.load_session(key) == b"state"
    with store.transaction():  # inside a transaction, the transaction's commit decides
        store.save_session(b"inner", 60)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.close()


def test_sqlite_settings_from_the_environment() -> None:
    config = Config.from_env({"DMP_SQLITE_SYNCHRONOUS": "normal", "DMP_SQLITE_CACHE_MB": "16"})
    assert (config.sqlite_synchronous, config.sqlite_cache_mb) == ("NORMAL", 16)
    assert Config.from_env({}).sqlite_synchronous == "FULL"
    with pytest.raises(ValueError, match="DMP_SQLITE_SYNCHRONOUS"):
        SqliteSettings(synchronous=Config.from_env({"DMP_SQLITE_SYNCHRONOUS": "off"}).sqlite_synchronous)
    with pytest.raises(ValueError, match="DMP_SQLITE_CACHE_MB"):
        Config.from_env({"DMP_SQLITE_CACHE_MB": "0"})


def _descriptors_of(database: Path) -> int:
    """This process's open descriptors on the database and its side files."""
    names = {str(p) for p in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm")))}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") in names
        except OSError:
            continue
    return count


def test_connections_close_with_their_threads(tmp_path: Path) -> None:
    """A thread per request, as the development server makes: 300 of them, ten at a time, each
    reading and writing. A leak would leave 300 connections and 600 descriptors; the store holds
    at most one per live thread (the last batch's may still be closing as their threads wind up)."""
    store = _store(tmp_path)
    store.create(patient("p0", "Martin"))
    database = tmp_path / "store.sqlite3"
    before = (store.open_connections(), _descriptors_of(database))
    errors: list[BaseException] = []

    def request(n: int) -> None:
        try:
            store.read("Patient", "p0", OPEN_SCOPE)
            store.create(patient(f"p{n + 1}", "Durand"))
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    for batch in range(30):
        threads = [threading.Thread(target=request, args=(batch * 10 + i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and store.exists("Patient", "p300") == 1
    assert before[0] == 1 and before[1] in (2, 3)  # the main thread's: the file, its WAL (and shm)
    assert store.open_connections() <= 1 + 10 and _descriptors_of(database) <= before[1] + 2 * 10
    store.close()
    assert store.open_connections() == 0 and _descriptors_of(database) == 0


def test_a_plaintext_database_of_an_earlier_version_is_encrypted_on_first_start(tmp_path: Path) -> None:
    old = _store(tmp_path, SqliteSettings(encrypted=False))
    old.create({**patient("p1", FAMILY), "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}]})
    old.close()
    database = tmp_path / "store.sqlite3"
    assert database.read_bytes().startswith(PLAINTEXT_HEADER) and INS.encode() in database.read_bytes()
    store = _store(tmp_path)
    assert store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == FAMILY
    store.create(patient("p2", "Durand"))
    store.close()
    assert not database.read_bytes().startswith(PLAINTEXT_HEADER)
    assert [f for f in _files(database) if f.exists() and INS.encode() in f.read_bytes()] == []
    assert not database.with_name(database.name + ".encrypting").exists()
    again = _store(tmp_path)  # the second start finds it encrypted and changes nothing
    assert [again.exists("Patient", p) for p in ("p1", "p2")] == [1, 1]
    again.close()


def test_an_encrypted_database_without_its_key_file_does_not_open(tmp_path: Path) -> None:
    _store(tmp_path).create(patient("p1", "Martin"))
    dbkey.key_path(tmp_path / "store.sqlite3").unlink()
    with pytest.raises(MasterKeyError, match=r"key file .* is missing"):
        _store(tmp_path)


def test_a_master_key_file_outside_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``DMP_MASTER_KEY_FILE``: the keys live there only; a rotation re-wraps the database key
    under a new master key, retires the old one, and the data open with the new file alone."""
    outside = tmp_path / "vault" / "master-keys.json"
    outside.parent.mkdir()
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DMP_MASTER_KEY_FILE", str(outside))
    config = Config.from_env()
    service = create_service(config, gatekeeper=open_gatekeeper)
    service.store.create(patient("p1", "Martin"))
    service.store.close()
    assert outside.exists() and not (config.data_dir / "keys" / "master-keys.json").exists()
    cipher = EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, outside))
    first = dbkey.kid(config.sqlite_path, cipher)
    assert main(["rotate-master-key"]) == 0
    assert MasterKeys.load_or_create(config.data_dir, outside).kids != (first,)
    assert first not in MasterKeys.load_or_create(config.data_dir, outside).kids  # retired
    reopened = create_service(config, gatekeeper=open_gatekeeper).store
    assert reopened.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    reopened.close()


def _filled_and_copied(directory: Path) -> Path:
    """The store of ``directory`` given a patient and an event (moved to the trail's file), then
    copied as a backup copies it (``VACUUM INTO``); the copy's path."""
    store = _store(directory)
    store.create(patient("p1", FAMILY))
    store.create(trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z"))
    found = store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["e1"]
    copy = directory / "copy" / "store.sqlite3"
    copy.parent.mkdir()
    store.snapshot(copy)
    store.close()
    return copy


def _copies_open_as_their_sources(database: Path, copy: Path, cipher: EnvelopeCipher) -> None:
    for source, copied in ((database, copy), (Path(trail_file(str(database))), Path(trail_file(str(copy))))):
        key = dbkey.load(source, cipher)
        assert key_opens(copied, key), f"{copied} does not open as {source} does ({key.hmac})"


def test_a_new_database_and_its_trail_are_authenticated_by_hmac_sha256(tmp_path: Path) -> None:
    """HMAC-SHA256 is done in hardware here (a page read from the OS's cache: 7.4–7.9 µs of CPU
    against 11.0–11.2 for SQLCipher's default, HMAC-SHA512: ``bench/sqlite_cost.py``). Their
    copies too: ``VACUUM INTO`` takes SQLCipher's process-wide defaults, not the copied file's
    settings."""
    copy = _filled_and_copied(tmp_path)
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    database = tmp_path / "store.sqlite3"
    assert [page_hmac(f, cipher) for f in (database, Path(trail_file(str(database))))] == ["HMAC_SHA256"] * 2
    _copies_open_as_their_sources(database, copy, cipher)


def test_a_database_of_an_earlier_version_stays_under_hmac_sha512_beside_a_new_trail(tmp_path: Path) -> None:
    """An earlier version's key file holds the key's 32 bytes alone: its database's pages are
    authenticated by HMAC-SHA512, and stay so (``rekey-database`` rewrites them). The trail's
    file it lacked is made under HMAC-SHA256, attached to connections whose main file is not."""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    database = tmp_path / "store.sqlite3"
    write_key_file(database, cipher, os.urandom(32))
    copy = _filled_and_copied(tmp_path)
    reopened = _store(tmp_path)
    assert reopened.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == FAMILY
    reopened.close()
    assert page_hmac(database, cipher) == "HMAC_SHA512"
    assert page_hmac(Path(trail_file(str(database))), cipher) == "HMAC_SHA256"
    _copies_open_as_their_sources(database, copy, cipher)


def test_a_key_file_naming_another_hmac_is_refused(tmp_path: Path) -> None:
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    write_key_file(tmp_path / "store.sqlite3", cipher, os.urandom(32) + b"HMAC_MD5")
    with pytest.raises(MasterKeyError, match=r"store\.sqlite3\.key does not hold a database key: .*'HMAC_MD5'"):
        _store(tmp_path)


def test_a_database_key_shows_no_key_bytes() -> None:
    """A key printed in a log or a traceback gives nothing away."""
    key = DatabaseKey(b"K" * 32)
    assert "KKKK" not in repr(key) and key.raw.hex() not in repr(key) and "HMAC_SHA256" in repr(key)
