"""What only the MongoDB store has: its placement by patient, its refusal of a standalone server,
its encryption as the documents hold it, and ``dmp-server migrate`` from SQLite.

Runs on mongomock with the double of ``tests/mongo_double.py`` (which says what it stands in
for), or on the server ``DMP_TEST_MONGODB_URI`` names. The contract every backend honours is in
``tests/test_storage_contract.py``, run on both backends.
"""

from __future__ import annotations

import base64
from contextlib import closing
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo.errors import OperationFailure

from fhir_server.app import create_service
from fhir_server.cli import main
from fhir_server.runtime.config import Config
from storage.crypto import DecryptionError, EnvelopeCipher, MasterKeyError, MasterKeys
from storage.interface import VersionConflict
from storage.mongo.compiler import shard_hint
from storage.mongo.connect import MongoUnavailable, StandaloneRefused, open_mongo_store
from storage.mongo.layout import DIRECTORY_KEY, SEVERAL_PATIENTS
from storage.mongo.migrate import Migration
from storage.mongo.store import MongoStore
from storage.query import ANY_SYSTEM, OPEN_SCOPE, Query, Reference, Token
from storage.sqlite import dbkey
from storage.sqlite.schema import CLUSTERED_KEYS_FROM, trail_file
from storage.sqlite.store import SqliteStore
from tests.dbfiles import open_database
from tests.mongo_double import REAL_URI, DoubleClient, FakeSession, drop, mongo_url
from tests.test_storage_contract import SERVED_TYPES, _index, _mongo, _param_type, doc, patient

SECRET = b"Compte rendu: traitement par lithium, hospitalisation sous contrainte"


def _all_documents(store: MongoStore) -> bytes:
    """Every document of every collection, as BSON: what the database files would hold."""
    db = store.database
    return b"".join(bson.encode(d) for name in db.list_collection_names() for d in db[name].find())


def test_a_patient_s_record_carries_its_patient_key_and_moves_with_it(tmp_path: Path) -> None:
    store = _mongo(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    store.create(doc("d1", "p1"))
    store.update(doc("d1", "p1", "superseded"))
    store.create({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]})
    store.create({"resourceType": "Binary", "id": "b1", "contentType": "text/plain", "data": "aGk="})
    db = store.database
    keys = {d["_id"]: d["pkey"] for d in db["resources"].find()}
    assert keys == {
        "Patient/p1": "p1",
        "Patient/p2": "p2",
        "DocumentReference/d1": "p1",
        "Practitioner/dr": DIRECTORY_KEY,
        "Binary/b1": "Binary/b1",
    }
    assert {v["pkey"] for v in db["versions"].find({"id": "d1"})} == {"p1"}
    store.update(doc("d1", "p2"))  # filed under the wrong patient, then corrected
    assert db["resources"].find_one({"_id": "DocumentReference/d1"})["pkey"] == "p2"
    assert {v["pkey"] for v in db["versions"].find({"id": "d1"})} == {"p2"}
    assert store.history(OPEN_SCOPE, "DocumentReference", "d1").total == 3
    store.close()


def test_the_store_refuses_a_standalone_server_unless_the_operator_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standalone = DoubleClient(replica_set=False)
    opened: dict[str, Any] = {"indexer": _index, "param_type": _param_type, "resource_types": SERVED_TYPES}
    with pytest.raises(StandaloneRefused, match="DMP_MONGO_ALLOW_STANDALONE=1"):
        open_mongo_store("mongodb://one/dmp", client_factory=lambda *a, **k: standalone, environ={}, **opened)
    allowed = {"DMP_MONGO_ALLOW_STANDALONE": "1"}
    store = open_mongo_store("mongodb://one/dmp", client_factory=lambda *a, **k: standalone, environ=allowed, **opened)
    # No transaction to abort: the store undoes its own writes (the double refuses any session).
    with pytest.raises(RuntimeError), store.transaction():
        store.create(patient("a", "A"))
        store.update(patient("a", "B"))
        raise RuntimeError("boom")
    assert store.exists("Patient", "a") is None and store.history(OPEN_SCOPE).total == 0
    store.create(patient("kept", "K"))
    assert store.exists("Patient", "kept") == 1
    replica = DoubleClient()
    assert open_mongo_store("mongodb://rs/dmp", client_factory=lambda *a, **k: replica, environ={}, **opened)


def test_writes_run_in_majority_transactions_with_snapshot_reads(tmp_path: Path) -> None:
    """The double fails any read or write made outside the open transaction's session; here the
    options the transaction was started with are checked too."""
    client = DoubleClient()
    store = MongoStore(client, "dmp", _index, _param_type, SERVED_TYPES)
    started: list[dict[str, Any]] = []
    original = DoubleClient.start_session

    def spy(self: DoubleClient) -> Any:
        session = original(self)
        begin = session.start_transaction

        def start(**options: Any) -> None:
            started.append(options)
            begin(**options)

        session.start_transaction = start  # type: ignore[method-assign]
        return session

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DoubleClient, "start_session", spy)
        store.create(patient("p1", "Martin"))
    (options,) = started
    assert options["write_concern"].document == {"w": "majority"}
    assert options["read_concern"].level == "snapshot"


def test_no_plaintext_content_in_any_document(tmp_path: Path) -> None:
    store = _mongo(tmp_path)
    data = base64.b64encode(SECRET).decode()
    store.create({"resourceType": "Binary", "id": "b1", "contentType": "text/plain", "data": data})
    store.create({**doc("d1", "p1"), "content": [{"attachment": {"contentType": "text/plain", "data": data}}]})
    store.enqueue("alert", SECRET)
    store.put_record("account", "someone", SECRET)
    store.save_session(SECRET, 60)
    raw = _all_documents(store)
    assert raw.count(b"DocumentReference") > 0  # the test reads what is stored
    assert SECRET not in raw and data.encode() not in raw and SECRET[10:40] not in raw
    assert base64.b64decode(store.read("Binary", "b1", OPEN_SCOPE).json()["data"]) == SECRET
    store.close()


def test_a_blob_moved_to_another_document_does_not_open(tmp_path: Path) -> None:
    store = _mongo(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    resources = store.database["resources"]
    stolen = resources.find_one({"_id": "Patient/p1"})["content"]
    resources.update_one({"_id": "Patient/p2"}, {"$set": {"content": stolen}})
    with pytest.raises(DecryptionError, match="Patient/p2/1"):
        store.read("Patient", "p2", OPEN_SCOPE)
    assert store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    store.close()


def test_a_store_refuses_keys_that_are_not_its_own(tmp_path: Path) -> None:
    _mongo(tmp_path).create(patient("p1", "Martin"))
    from tests.test_storage_contract import _CLIENTS, _database

    client = _CLIENTS[tmp_path]
    strangers = EnvelopeCipher(MasterKeys.load_or_create(tmp_path / "elsewhere"))
    with pytest.raises(MasterKeyError, match="does not hold"):
        MongoStore(client, _database(tmp_path), _index, _param_type, SERVED_TYPES, strangers)
    with pytest.raises(MasterKeyError, match="encrypted content"):
        MongoStore(client, _database(tmp_path), _index, _param_type, SERVED_TYPES)


def test_rewrap_after_rotation_uses_the_kid_beside_each_blob(tmp_path: Path) -> None:
    store = _mongo(tmp_path)
    store.create(patient("p1", "Martin"))
    store.update(patient("p1", "Durand"))
    store.put_record("account", "x", b"hash")
    store.enqueue("alert", b"payload")
    keys = MasterKeys.load_or_create(tmp_path)
    old, new = keys.active.kid, keys.rotate()
    store.create(patient("late", "After"))
    assert store.key_ids_in_use() == {old, new}
    assert store.rewrap_all(batch=2) == 1 + 2 + 1 + 1  # p1 and its 2 versions, the record, the message
    assert store.key_ids_in_use() == {new} and store.rewrap_all() == 0
    keys.retire(old, in_use=store.key_ids_in_use())
    reopened = _mongo(tmp_path)
    assert reopened.vread("Patient", "p1", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    assert reopened.get_record("account", "x") == (b"hash", None)
    assert [m.payload for m in reopened.pending("alert")] == [b"payload"]


# -- dmp-server migrate ----------------------------------------------------------------------


@pytest.fixture
def mongo_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """One MongoDB for the whole test (every client the server opens is the same double)."""
    url = mongo_url(f"dmp_migrate_{abs(hash(str(tmp_path))):x}")
    if not REAL_URI:
        shared = DoubleClient()
        monkeypatch.setattr("storage.mongo.connect.MongoClient", lambda *args, **kwargs: shared)
    yield url
    drop(url)


def _trail_event(eid: str, *patients: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": eid,
        "type": {"code": "rest"},
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "dmp"}},
        "entity": [{"what": {"reference": f"Patient/{p}"}} for p in patients],
    }


def _life(config: Config) -> None:
    """A store with a bit of everything: versions, a deletion, the trail (whose index SQLite keeps
    in tables of its own, and whose last event it keeps in its journal), records, a queued message."""
    service = create_service(config)
    store = service.store
    store.create(patient("p1", "Martin"))
    store.update(patient("p1", "Durand"))
    for n in range(7):
        store.create(doc(f"d{n}", "p1"))
    store.delete("DocumentReference", "d3")
    store.create(_trail_event("e1", "p1"))
    store.log([_trail_event("e2", "p1")])  # left in the SQLite store's journal: the copy moves it in first
    store.put_record("account", "1800175123456", b"scrypt hash", expires=None)
    store.enqueue("alert", b"to send")
    store.close()


def test_migrate_copies_everything_sealed_resumes_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mongo_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DMP_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DMP_STORE", raising=False)
    config = Config.from_env()
    _life(config)
    source = f"sqlite:///{config.sqlite_path}"
    assert main(["migrate", "--from", source, "--to", mongo_target, "--batch", "3"]) == 0
    out = capsys.readouterr()
    assert "resources [##############################] 10/10" in out.err
    assert "versions: 12 in SQLite" in out.out and "DIFFERS" not in out.out

    migrated = create_service(Config(data_dir=data_dir, store_url=mongo_target))
    store = migrated.store
    assert isinstance(store, MongoStore)
    about = Query("DocumentReference", Reference("subject", "Patient", "p1"))
    assert store.search(about, OPEN_SCOPE).total == 6
    trail = store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
    # its index came from the trail's own file (in no order: the journal's event was moved first)
    assert sorted(s.id for s in trail.matches) == ["e1", "e2"]
    assert store.vread("Patient", "p1", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    assert store.get_record("account", "1800175123456") == (b"scrypt hash", None)
    assert [m.payload for m in store.pending("alert")] == [b"to send"]
    # the sequences go on from the source's highest: the documents' (their patient's block of keys,
    # above the trail's file's, themselves above the main file's other resources)
    assert store.create(patient("p9", "New")).pk == CLUSTERED_KEYS_FROM + 7

    # Interrupted half-way (the copy goes in key order, the documents' blocks last): what is missing
    # is copied again, and the verification passes.
    store.database["resources"].delete_many({"pk": {"$gte": 5}})
    store.database["versions"].delete_many({"res": {"$gte": 5}})
    store.expunge("Patient", "p9")
    assert main(["migrate", "--from", source, "--to", mongo_target, "--verify-only"]) == 1
    assert main(["migrate", "--from", source, "--to", mongo_target]) == 0

    # A blob altered after the copy is caught by the digests, not only by the counts.
    store.database["versions"].update_one({"_id": 1}, {"$set": {"content": b"tampered"}})
    assert main(["migrate", "--from", source, "--to", mongo_target, "--verify-only"]) == 1
    assert "versions: 12 in SQLite" in capsys.readouterr().out
    with closing(open_database(config.sqlite_path)) as conn:  # encrypted as a whole: opened with its key
        versions = "SELECT (SELECT COUNT(*) FROM main.version) + (SELECT COUNT(*) FROM trail.version)"
        assert conn.execute(versions).fetchone() == (12,)  # the source is untouched
    store.close()


def test_a_source_with_events_not_moved_to_its_trail_s_file_is_refused(tmp_path: Path) -> None:
    """A write's event waits in the main file, without index rows, until a store moves it to the
    trail's file: a copy made past the store would give it no index. The command opens the
    store first; a source written to since is refused, naming what to do."""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    source = SqliteStore(tmp_path / "store.sqlite3", _index, _param_type, SERVED_TYPES, cipher)
    source.create(patient("p1", "Martin"))
    source.create(_trail_event("e1", "p1"))  # kept in the main file: nothing read the trail since
    source.close()
    database = tmp_path / "store.sqlite3"
    keys = {"key": dbkey.load(database, cipher), "trail_key": dbkey.load(Path(trail_file(str(database))), cipher)}
    target = _mongo(tmp_path)
    assert isinstance(target, MongoStore)
    with pytest.raises(ValueError, match="open it with a store first"):
        Migration(database, target, **keys).run(lambda *_: None)
    target.close()


def test_a_source_whose_trail_rows_are_not_all_written_is_refused_until_a_store_writes_them(tmp_path: Path) -> None:
    """A trail's event moved in has only the rows that start a search; the others are written
    when a statement reads them. A copy of the index tables as they are would lack them: the
    command has the store write them all first (``complete_index``); a source without is refused."""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    database = tmp_path / "store.sqlite3"
    source = SqliteStore(database, _index, _param_type, SERVED_TYPES, cipher)
    source.create(patient("p1", "Martin"))
    source.log([{**_trail_event("e1", "p1"), "action": "E"}])  # the journal's
    assert source.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"  # moved in; nothing else read
    source.close()
    keys = {"key": dbkey.load(database, cipher), "trail_key": dbkey.load(Path(trail_file(str(database))), cipher)}
    target = _mongo(tmp_path)
    assert isinstance(target, MongoStore)
    with pytest.raises(ValueError, match="whose index is not written: open it with a store first"):
        Migration(database, target, **keys).run(lambda *_: None)
    source = SqliteStore(database, _index, _param_type, SERVED_TYPES, cipher)
    source.complete_index()
    source.close()
    Migration(database, target, **keys).run(lambda *_: None)
    found = target.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "E")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["e1"]
    target.close()


def test_a_search_naming_the_patient_is_routed_by_its_key_and_still_finds_everything(tmp_path: Path) -> None:
    store = _mongo(tmp_path)
    ins = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800175123456"}
    store.create(patient("p1", "Martin"))
    store.create({**doc("both-forms", "p1"), "subject": {"reference": "Patient/p1", "identifier": ins}})
    store.create({**doc("ins-only", "p1"), "subject": {"identifier": ins}})
    store.create(_trail_event("shared", "p1", "p2"))
    keys = {d["_id"]: d["pkey"] for d in store.database["resources"].find()}
    assert keys["DocumentReference/both-forms"] == "p1"  # the INS beside the literal reference does not count
    assert keys["DocumentReference/ins-only"] == f"{ins['system']}|{ins['value']}"
    assert keys["AuditEvent/shared"] == SEVERAL_PATIENTS
    by_subject = Reference("subject", "Patient", "p1")
    assert shard_hint(by_subject, "DocumentReference") == {"p1", SEVERAL_PATIENTS}
    assert shard_hint(Reference("patient", "Patient", "p2"), "AuditEvent") == {"p2", SEVERAL_PATIENTS}
    assert [s.id for s in store.search(Query("DocumentReference", by_subject), OPEN_SCOPE).matches] == ["both-forms"]
    found = store.search(Query("AuditEvent", Reference("patient", "Patient", "p2")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["shared"]
    store.close()


def test_a_write_conflict_is_a_version_conflict_and_an_unknown_commit_is_retried(tmp_path: Path) -> None:
    """What a replica set does under concurrent writers, played by the double: a transaction
    aborted by a write conflict, and a commit whose outcome the driver did not learn."""
    client = DoubleClient()
    store = MongoStore(client, "dmp", _index, _param_type, SERVED_TYPES)
    failures: list[str] = []
    original = FakeSession.commit_transaction

    def commit(self: FakeSession) -> None:
        if failures:
            error = OperationFailure("simulated", code=112)  # WriteConflict
            error._add_error_label(failures.pop(0))
            raise error
        original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FakeSession, "commit_transaction", commit)
        failures[:] = ["UnknownTransactionCommitResult", "UnknownTransactionCommitResult"]
        store.create(patient("p1", "Martin"))
        assert failures == [] and store.exists("Patient", "p1") == 1
        failures[:] = ["TransientTransactionError"]
        with pytest.raises(VersionConflict, match="concurrent write"):
            store.update(patient("p1", "Durand"))
    assert store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == "Martin"  # nothing written
    store.close()


def test_no_server_at_the_url_is_a_clear_refusal_that_never_shows_the_password() -> None:
    """A real pymongo client, to a port where nothing listens."""
    opened: dict[str, Any] = {"indexer": _index, "param_type": _param_type, "resource_types": SERVED_TYPES}
    url = "mongodb://dmp:s3cret@127.0.0.1:1/dmp?serverSelectionTimeoutMS=300"
    with pytest.raises(MongoUnavailable, match=r"no MongoDB answers at 127\.0\.0\.1:1/dmp") as refused:
        open_mongo_store(url, environ={}, **opened)
    assert "s3cret" not in str(refused.value)
