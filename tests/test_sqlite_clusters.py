"""A patient's documents and submission sets stored together in SQLite (``IndexFamily.clustered``):
their keys come from the patient's block, whatever the order they were created in, and a search's
watermark still keeps later pages to what the first one saw."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import storage.sqlite.store as sqlite_store
from storage.query import ANY_SYSTEM, Query, Reference, SortKey, Token
from storage.sqlite.schema import CLUSTER_SIZE, CLUSTERED_KEYS_FROM, CLUSTERS, SCHEMA_VERSION, TRAIL_KEYS_FROM
from storage.sqlite.store import SqliteStore
from tests.test_storage_contract import INS_SYSTEM, OPEN_SCOPE, _sqlite, doc, patient


def _store(tmp_path: Path) -> SqliteStore:
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    return store


def _key(store: SqliteStore, rtype: str, rid: str) -> int:
    return store.read(rtype, rid, OPEN_SCOPE).pk


def _submission_set(lid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "List",
        "id": lid,
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{pid}"},
    }


def test_a_patient_s_documents_and_submission_sets_take_adjacent_keys_in_whatever_order_they_come(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    for n in range(3):  # the two records' writes interleaved, as on a server
        store.create(doc(f"a{n}", "p1"))
        store.create(doc(f"b{n}", "p2"))
    store.create(_submission_set("set-a", "p1"))
    by_ins = {**doc("c0", "p3"), "subject": {"identifier": {"system": INS_SYSTEM, "value": "ins-p3"}}}
    store.create(by_ins)
    store.create(patient("p4", "Later"))

    first = _key(store, "DocumentReference", "a0")
    assert first >= CLUSTERED_KEYS_FROM and (first - CLUSTERED_KEYS_FROM) % CLUSTER_SIZE == 0
    assert [_key(store, "DocumentReference", f"a{n}") for n in range(3)] + [_key(store, "List", "set-a")] == [
        first + n for n in range(4)
    ]
    second = _key(store, "DocumentReference", "b0")
    assert [_key(store, "DocumentReference", f"b{n}") for n in range(3)] == [second + n for n in range(3)]
    assert second == first + CLUSTER_SIZE  # the next block
    assert _key(store, "DocumentReference", "c0") == second + CLUSTER_SIZE  # a patient named by INS has one too
    # The other resources count on below, from the highest key there, not above the blocks.
    assert [_key(store, "Patient", pid) for pid in ("p1", "p2", "p4")] == [1, 2, 3]
    store.close()


def test_a_patient_whose_block_is_full_gets_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "CLUSTER_SIZE", 2)
    store = _store(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    for did, pid in (("a0", "p1"), ("a1", "p1"), ("b0", "p2"), ("a2", "p1"), ("a3", "p1"), ("a4", "p1")):
        store.create(doc(did, pid))
    keys = {
        did: _key(store, "DocumentReference", did) - CLUSTERED_KEYS_FROM for did in ("a0", "a1", "b0", "a2", "a3", "a4")
    }
    assert keys == {"a0": 0, "a1": 1, "b0": 2, "a2": 4, "a3": 5, "a4": 6}
    found = store.search(Query("DocumentReference", Reference("subject", "Patient", "p1")), OPEN_SCOPE)
    assert sorted(s.id for s in found.matches) == ["a0", "a1", "a2", "a3", "a4"]
    store.close()


def test_a_later_page_leaves_out_a_document_created_since_the_first_though_its_key_is_lower(tmp_path: Path) -> None:
    """The watermark bounds a clustered family by the first version of each: a document of the
    first patient created after the first page takes a key below the second patient's."""
    store = _store(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    for did in ("d0", "d2", "d4", "d6"):
        store.create(doc(did, "p1"))
    store.create(doc("other", "p2"))  # its block is above p1's
    query = Query("DocumentReference", Token("status", ANY_SYSTEM, "current"), count=2, sort=(SortKey("_id"),))
    first = store.search(query, OPEN_SCOPE)
    assert [s.id for s in first.matches] == ["d0", "d2"] and first.total == 5
    store.create(doc("d1", "p1"))
    assert _key(store, "DocumentReference", "d1") < _key(store, "DocumentReference", "other")
    later = store.search(
        Query("DocumentReference", query.where, count=2, offset=2, sort=query.sort, watermark=first.watermark),
        OPEN_SCOPE,
    )
    assert [s.id for s in later.matches] == ["d4", "d6"] and later.total == 5
    # A link made before the clustered keys (two parts) bounds by the ones it has: the first versions are read now.
    assert isinstance(first.watermark, list)
    older = store.search(
        Query("DocumentReference", query.where, count=2, offset=2, sort=query.sort, watermark=first.watermark[:2]),
        OPEN_SCOPE,
    )
    assert [s.id for s in older.matches] == ["d2", "d4"] and older.total == 6
    store.close()


def test_a_page_and_its_total_read_one_state_and_a_first_page_asks_no_watermark_of_its_candidates(
    tmp_path: Path,
) -> None:
    """A document another request takes out of the results between a page and its count is
    still counted: both read one snapshot. The first page's statements look up no document's
    first version (its snapshot holds nothing newer than its watermark); a later page's do."""
    store = _store(tmp_path)
    store.create(patient("p1", "Martin"))
    for did in ("d0", "d1", "d2"):
        store.create(doc(did, "p1"))
    conn, statements = store._conn(), list[str]()

    def meanwhile(statement: str) -> None:
        statements.append(statement)
        if statement.startswith("SELECT COUNT(*)"):  # the search's one count: its page is read
            writer = threading.Thread(target=store.update, args=(doc("d2", "p1", "superseded"),))
            writer.start()  # another request's connection, committed before the count goes on
            writer.join()

    query = Query("DocumentReference", Token("status", ANY_SYSTEM, "current"), count=2, sort=(SortKey("_id"),))
    conn.set_trace_callback(meanwhile)
    first = store.search(query, OPEN_SCOPE)
    conn.set_trace_callback(None)
    assert store.read("DocumentReference", "d2", OPEN_SCOPE).json()["status"] == "superseded"
    assert [s.id for s in first.matches] == ["d0", "d1"] and first.total == 3
    assert any(s.startswith("SELECT COUNT(*)") for s in statements)
    assert not any("MIN(seq)" in s for s in statements), statements
    statements.clear()
    conn.set_trace_callback(statements.append)
    later = store.search(Query("DocumentReference", query.where, watermark=first.watermark), OPEN_SCOPE)
    conn.set_trace_callback(None)
    assert [s.id for s in later.matches] == ["d0", "d1"] and later.total == 2
    assert any("MIN(seq)" in s for s in statements), statements
    store.close()


def test_a_database_of_schema_9_keeps_its_documents_keys_and_clusters_the_next_ones(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(doc("old", "p1"))
    conn = store._conn()
    # What a schema 9 server left: no table of blocks, its documents keyed in the order of creation.
    conn.execute("PRAGMA foreign_keys = OFF")  # the rows are given that key together
    conn.execute("UPDATE resource SET pk = 2 WHERE id = 'old'")
    conn.execute("UPDATE version SET res = 2 WHERE res <> 1")
    conn.execute("UPDATE rec_reference SET res = 2")
    conn.execute("UPDATE rec_token SET res = 2")
    conn.execute(f"DROP TABLE {CLUSTERS}")
    for meta in ("main.meta", "trail.meta"):
        conn.execute(f"UPDATE {meta} SET value = '9' WHERE key = 'schema_version'")
    store.close()
    reopened = _store(tmp_path)
    conn = reopened._conn()
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    reopened.create(doc("new", "p1"))
    reopened.create(patient("p2", "Durand"))
    assert _key(reopened, "DocumentReference", "old") == 2
    assert _key(reopened, "DocumentReference", "new") == CLUSTERED_KEYS_FROM
    assert _key(reopened, "Patient", "p2") == 3 < TRAIL_KEYS_FROM
    found = reopened.search(Query("DocumentReference", Reference("subject", "Patient", "p1")), OPEN_SCOPE)
    assert sorted(s.id for s in found.matches) == ["new", "old"]
    reopened.close()
