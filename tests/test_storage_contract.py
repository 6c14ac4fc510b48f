"""The contract every store backend honours, run against each backend available here.

Written against :class:`storage.interface.Store` only, so that a new backend is accepted by
adding it to ``BACKENDS``: SQLite, and MongoDB — on ``mongomock`` with the thin double of
``tests/mongo_double.py`` for sessions and transactions (what mongomock lacks is listed there),
or on the real server ``DMP_TEST_MONGODB_URI`` names. Every test asserts the same on each.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import storage.sqlite.store as sqlite_store
from fhir_server.fhir.service import SERVED_TYPES
from fhir_server.runtime.config import PROJECT_ROOT
from fhirmodel.indexing import IndexValue, Only, extract_index
from fhirmodel.searchparams import SearchParamRegistry
from storage.crypto import DecryptionError, EnvelopeCipher, MasterKeyError, MasterKeys
from storage.interface import AlreadyExists, Gone, NotFound, Store, StoreError, VersionConflict
from storage.mongo.store import MongoStore
from storage.query import (
    ANY_SYSTEM,
    EVERYTHING,
    NOTHING,
    OPEN_SCOPE,
    Chain,
    DateRange,
    Expr,
    Has,
    Include,
    Query,
    Reference,
    ReferenceIdentifier,
    SortKey,
    String,
    Token,
    TokenIn,
    all_of,
    any_of,
)
from storage.sqlite.connection import SqliteSettings
from storage.sqlite.schema import (
    COLUMN_NAMES,
    COVERED_KINDS,
    DROPPED_INDEXES,
    RECORD,
    SCHEMA_VERSION,
    SHARED,
    TRAIL,
    TRAIL_IN_MAIN,
    TRAIL_KEYS_FROM,
    IndexFamily,
)
from storage.sqlite.store import INBOX_BATCH, TABLE_OF_VALUE, Indexer, SqliteStore
from tests.dbfiles import open_database
from tests.mongo_double import REAL_URI, mongo_client

REGISTRY = SearchParamRegistry.load(PROJECT_ROOT / "ig" / "SearchParameter", SERVED_TYPES)
BASE = "http://127.0.0.1:8080/fhir"


def _param_type(rtype: str, code: str) -> str | None:
    param = REGISTRY.get(rtype, code)
    return param.type if param else None


def _index(resource: dict[str, Any], only: Only | None = None) -> dict[str, list[IndexValue]]:
    return extract_index(REGISTRY, resource, BASE, only)


def _sqlite(tmp: Path, indexer: Indexer = _index) -> Store:
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp))  # the keys live next to the data, as in data_dir
    return SqliteStore(tmp / "store.sqlite3", indexer, _param_type, SERVED_TYPES, cipher)


#: One client per test directory: a store reopened on it sees what the first one wrote.
_CLIENTS: dict[Path, Any] = {}


def _database(tmp: Path) -> str:
    """A database of its own per test (on a real server, several test runs may share it)."""
    return f"dmp_test_{abs(hash(str(tmp))):x}"


def _mongo(tmp: Path, indexer: Indexer = _index, *, transactions: bool = True) -> MongoStore:
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp))
    client = _CLIENTS.setdefault(tmp, mongo_client(replica_set=transactions))
    return MongoStore(client, _database(tmp), indexer, _param_type, SERVED_TYPES, cipher, transactions=transactions)


def _mongo_standalone(tmp: Path, indexer: Indexer = _index) -> MongoStore:
    """Without transactions (``DMP_MONGO_ALLOW_STANDALONE=1``): the store undoes a failed unit's
    writes itself, so the contract's atomicity tests hold for a single client all the same."""
    return _mongo(tmp, indexer, transactions=False)


BACKENDS: dict[str, Callable[..., Store]] = {
    "sqlite": _sqlite,
    "mongodb": _mongo,
    "mongodb-standalone": _mongo_standalone,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    yield BACKENDS[request.param]
    client = _CLIENTS.pop(tmp_path, None)
    if client is not None and REAL_URI:
        client.drop_database(_database(tmp_path))
        client.close()


@pytest.fixture
def store(backend: Callable[..., Store], tmp_path: Path) -> Iterator[Store]:
    opened = backend(tmp_path)
    yield opened
    opened.close()


class Scope:
    """An access scope given per type, as the policy will hand it down."""

    def __init__(self, filters: dict[str, Expr], default: Expr = EVERYTHING):
        self.filters = filters
        self.default = default

    def filter(self, resource_type: str) -> Expr:
        return self.filters.get(resource_type, self.default)


def patient(pid: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def doc(did: str, pid: str, status: str = "current") -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "status": status,
        "subject": {"reference": f"Patient/{pid}"},
        "content": [{"attachment": {"contentType": "text/plain"}}],
    }


INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"


def trail_event(eid: str, pid: str, action: str, recorded: str, about: str | None = None) -> dict[str, Any]:
    """An AuditEvent of ``pid``'s record, naming the patient by reference and INS as the server's do."""
    ins = {"system": INS_SYSTEM, "value": f"ins-{pid}"}
    entities = [{"what": {"type": "Patient", "reference": f"Patient/{pid}", "identifier": ins}}]
    if about:
        entities.append({"what": {"reference": about}})
    return {
        "resourceType": "AuditEvent",
        "id": eid,
        "type": {"code": "rest"},
        "action": action,
        "recorded": recorded,
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "dmp"}},
        "entity": entities,
    }


def _trail_of_two_patients(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    store.create(doc("d1", "p1"))
    store.create(trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z", about="DocumentReference/d1"))
    store.create(trail_event("e2", "p1", "C", "2024-01-02T10:00:00Z"))
    store.create(trail_event("e3", "p2", "R", "2024-01-03T10:00:00Z"))


def test_the_trail_answers_every_form_of_search(store: Store) -> None:
    """The trail's index has value indexes for the patient and dates only (SQLite): every other
    form is still answered, from the candidates those give or over the whole trail."""
    _trail_of_two_patients(store)

    def ids(rtype: str, where: Expr, scope: Any = OPEN_SCOPE, **query: Any) -> list[str]:
        return [s.id for s in store.search(Query(rtype, where, **query), scope).matches]

    p1, read = Reference("patient", "Patient", "p1"), Token("action", ANY_SYSTEM, "R")
    assert sorted(ids("AuditEvent", p1)) == ["e1", "e2"]
    assert ids("AuditEvent", ReferenceIdentifier("patient", INS_SYSTEM, "ins-p2")) == ["e3"]
    assert ids("AuditEvent", all_of(p1, read)) == ["e1"]
    assert ids("AuditEvent", all_of(Token("_id", ANY_SYSTEM, "e2"), p1)) == ["e2"]
    assert sorted(ids("AuditEvent", read)) == ["e1", "e3"]  # no patient: every event is looked at
    assert ids("AuditEvent", p1, sort=(SortKey("date", descending=True),)) == ["e2", "e1"]
    assert ids("AuditEvent", Chain("patient", ("Patient",), String("family", "durand", "start"))) == ["e3"]
    assert ids("Patient", Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "C"))) == ["p1"]
    assert ids("AuditEvent", read, Scope({"AuditEvent": Reference("patient", "Patient", "p2")})) == ["e3"]
    assert ids("Patient", Has("AuditEvent", "patient", Token("action", ANY_SYSTEM, "C"))) == ["p1"]
    bound = Scope({"AuditEvent": ReferenceIdentifier("patient", INS_SYSTEM, "ins-p1")})  # as the policy binds it
    assert ids("Patient", Has("AuditEvent", "entity", read, scoped=True), bound) == ["p1"]
    assert ids("Patient", Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "C"), scoped=True), bound) == ["p1"]
    assert ids("Patient", Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "U"), scoped=True), bound) == []
    for param, scope, events in (
        ("entity", OPEN_SCOPE, ["e1"]),
        ("entity", bound, ["e1"]),
        ("entity", Scope({"AuditEvent": Reference("patient", "Patient", "p2")}), []),
        (None, bound, ["e1"]),
    ):
        revinclude = Include("AuditEvent", param, reverse=True)
        found = store.search(
            Query("DocumentReference", Reference("subject", "Patient", "p1"), includes=(revinclude,)), scope
        )
        assert [s.id for s in found.included] == events, (param, scope)
    hidden = Scope({"AuditEvent": NOTHING})  # a caller who may not read the trail
    assert ids("Patient", Has("AuditEvent", "patient", read, scoped=True), hidden) == []
    for scope, events in ((bound, ["e1", "e2"]), (hidden, [])):
        revinclude = Include("AuditEvent", "patient", reverse=True)
        found = store.search(Query("Patient", Token("_id", ANY_SYSTEM, "p1"), includes=(revinclude,)), scope)
        assert sorted(s.id for s in found.included) == events
    found = store.search(
        Query("AuditEvent", Token("action", ANY_SYSTEM, "C"), includes=(Include("AuditEvent", "patient"),)), OPEN_SCOPE
    )
    assert [s.id for s in found.included] == ["p1"]


def test_create_read_update_delete_versions(store: Store) -> None:
    created = store.create(patient("p1", "Martin"))
    assert (created.version, created.method) == (1, "POST")
    assert created.json()["meta"]["versionId"] == "1"
    with pytest.raises(AlreadyExists):
        store.create(patient("p1", "Other"))
    updated = store.update(patient("p1", "Durand"), expected_version=1)
    assert updated.version == 2 and updated.pk == created.pk and updated.seq > created.seq
    with pytest.raises(VersionConflict):
        store.update(patient("p1", "X"), expected_version=1)
    assert store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == "Durand"
    assert store.vread("Patient", "p1", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    deleted = store.delete("Patient", "p1")
    assert deleted.deleted and deleted.version == 3
    with pytest.raises(Gone):
        store.read("Patient", "p1", OPEN_SCOPE)
    with pytest.raises(NotFound):
        store.read("Patient", "nope", OPEN_SCOPE)
    assert store.exists("Patient", "p1") == 3 and store.exists("Patient", "nope") is None
    history = store.history(OPEN_SCOPE, "Patient", "p1")
    assert [s.version for s in history.entries] == [3, 2, 1] and history.total == 3
    assert [s.content and s.json()["name"][0]["family"] for s in history.entries] == [None, "Durand", "Martin"]
    store.update(patient("p1", "Back"))  # brought back after its delete
    history = store.history(OPEN_SCOPE, "Patient", "p1")
    assert [s.content and s.json()["name"][0]["family"] for s in history.entries] == ["Back", None, "Durand", "Martin"]
    assert store.vread("Patient", "p1", 2, OPEN_SCOPE).json()["name"][0]["family"] == "Durand"


def test_a_current_version_is_stored_once_and_a_replaced_one_keeps_its_content(tmp_path: Path) -> None:
    """The resource row holds the current content, its version row none; an update moves it
    there. Rows of an earlier server (content in both) read and update as before."""
    store = _sqlite(tmp_path)
    store.create(patient("once", "Martin"))
    store.create(patient("old", "Durand"))
    store.update(patient("once", "Martin-2"))
    path = tmp_path / "store.sqlite3"
    with closing(open_database(path)) as conn, conn:
        held = (
            "SELECT v.version FROM version v JOIN resource r ON r.pk = v.res WHERE r.id = ? AND v.content IS NOT NULL"
        )
        assert conn.execute(held, ("once",)).fetchall() == [(1,)]
        conn.execute(  # as an earlier server wrote it: the current content in its version row too
            "UPDATE version SET content = (SELECT content FROM resource WHERE pk = version.res)"
            " WHERE res = (SELECT pk FROM resource WHERE id = 'old')"
        )
    store.update(patient("old", "Durand-2"))
    store.delete("Patient", "old")
    families = [
        s.content and s.json()["name"][0]["family"] for s in store.history(OPEN_SCOPE, "Patient", "old").entries
    ]
    assert families == [None, "Durand-2", "Durand"]
    assert store.vread("Patient", "once", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    store.close()
    with closing(open_database(path)) as conn:
        assert conn.execute(held, ("old",)).fetchall() == [(1,), (2,)]


def test_transaction_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.create(patient("a", "A"))
        store.create(patient("b", "B"))
        raise RuntimeError("boom")
    assert store.exists("Patient", "a") is None and store.exists("Patient", "b") is None
    with store.transaction():
        store.create(patient("a", "A"))
        # reads inside a transaction see its writes
        assert store.read("Patient", "a", OPEN_SCOPE).id == "a"
    assert store.exists("Patient", "a") == 1


def test_a_failing_inner_transaction_is_undone_alone(store: Store) -> None:
    with store.transaction():
        store.create(patient("kept", "A"))
        with pytest.raises(RuntimeError), store.transaction():
            store.create(patient("undone", "B"))
            raise RuntimeError("inner failure")
        store.create(patient("also-kept", "C"))
    assert store.exists("Patient", "kept") == 1 and store.exists("Patient", "also-kept") == 1
    assert store.exists("Patient", "undone") is None


def test_an_observer_sees_every_write_of_its_types_inside_the_transaction(store: Store) -> None:
    """What a layer above keeps of some resources (the access states of authz) is told of every
    write of them, whatever its path, and what it writes in turn lands or rolls back with it."""
    seen: list[tuple[str, str | None, str | None]] = []

    def family(content: dict[str, Any] | None) -> str | None:
        return None if content is None else str(content["name"][0]["family"])

    def observer(rtype: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        seen.append((rtype, family(before), family(after)))
        store.put_record("observed", f"{len(seen)}", b"")

    store.observe(frozenset({"Patient"}), observer)
    store.create(patient("p1", "Martin"))
    store.update(patient("p1", "Durand"))
    store.create(doc("d1", "p1"))  # not watched
    store.delete("Patient", "p1")
    store.update(patient("p1", "Back"))  # an update over a deletion replaces nothing
    store.expunge("Patient", "p1")
    assert seen == [
        ("Patient", None, "Martin"),
        ("Patient", "Martin", "Durand"),
        ("Patient", "Durand", None),
        ("Patient", None, "Back"),
        ("Patient", "Back", None),
    ]
    assert store.record_keys("observed") == ["1", "2", "3", "4", "5"]
    with pytest.raises(RuntimeError), store.transaction():
        store.create(patient("p2", "Lost"))
        raise RuntimeError("boom")
    assert len(seen) == 6 and store.get_record("observed", "6") is None  # rolled back with the write


def test_search_counts_and_pages_inside_the_filter(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    for n in range(7):
        store.create(doc(f"d{n}", "p1", "current" if n % 2 == 0 else "superseded"))
    query = Query("DocumentReference", Reference("subject", "Patient", "p1"), sort=(SortKey("_id"),), count=2)
    assert store.search(query, OPEN_SCOPE).total == 7
    scope = Scope({"DocumentReference": Token("status", ANY_SYSTEM, "current")})
    first = store.search(query, scope)
    assert first.total == 4 and [s.id for s in first.matches] == ["d0", "d2"]
    second = store.search(Query(query.resource_type, query.where, query.sort, offset=2, count=2), scope)
    assert [s.id for s in second.matches] == ["d4", "d6"]
    # the total of a page that is not full, exactly full to the end, past the end, of nothing,
    # of a count-only query
    pages = ((3, 2, ["d6"]), (0, 10, ["d0", "d2", "d4", "d6"]), (0, 4, ["d0", "d2", "d4", "d6"]), (2, 2, ["d4", "d6"]))
    for offset, count, ids in (*pages, (4, 2, []), (9, 2, []), (0, 0, [])):
        page = store.search(Query(query.resource_type, query.where, query.sort, offset=offset, count=count), scope)
        assert ([s.id for s in page.matches], page.total) == (ids, 4), (offset, count)
    nothing = Query("DocumentReference", Reference("subject", "Patient", "nobody"), count=2)
    assert store.search(nothing, scope).total == 0
    assert store.search(query, Scope({"DocumentReference": NOTHING})).total == 0


def test_a_query_asked_again_under_another_scope_answers_for_that_scope(store: Store) -> None:
    """The same query and the same filter of the searched type, under scopes that differ only
    in what they let the caller see of a chained type: each answer is its own scope's (the
    SQLite store keeps compiled filters, and must not hand one scope's text to another)."""
    ident = "urn:oid:1.2.250.1.71.4.2.1"
    store.create({"resourceType": "Practitioner", "id": "pr1", "identifier": [{"system": ident, "value": "81"}]})
    store.create(patient("p1", "Martin"))
    store.create({**doc("d1", "p1"), "author": [{"reference": "Practitioner/pr1"}]})
    by_author = Chain("author", ("Practitioner",), Token("identifier", ident, "81"), scoped=True)
    query = Query("DocumentReference", by_author)
    sees_them, sees_none = Scope({}), Scope({"Practitioner": NOTHING})
    for scope, found in ((sees_them, ["d1"]), (sees_none, []), (sees_them, ["d1"]), (sees_none, [])):
        assert [s.id for s in store.search(query, scope).matches] == found
        as_filter = Scope({"DocumentReference": by_author, "Practitioner": scope.filter("Practitioner")})
        if found:
            assert store.read("DocumentReference", "d1", as_filter).id == "d1"
        else:
            with pytest.raises(NotFound):
                store.read("DocumentReference", "d1", as_filter)


def test_a_type_filter_matches_whole_pairs_only(store: Store) -> None:
    """A set of (system, code) pairs as a filter (the profession's readable types): a stored
    coding matches only as one whole pair of the set, whatever characters its values hold."""
    allowed = TokenIn("type", frozenset({("urn:a", "c1"), ("urn:a", "c3"), ("urn:b", "c2")}))
    codings = {
        "ok": ("urn:b", "c2"),
        "crossed": ("urn:a", "c2"),  # the system of one pair, the code of another
        "straddling": ("urn:a\x1fc1\x1eurn:b", "c2"),  # spells two pairs with separators
        "split": ("urn:a\x1fc1", ""),
        "spanning": ("urn:a", "c1\x1ec3"),  # spells two codes of a system with a separator
        "prefixed": ("urn:a", "c"),  # the start of a code of the set
    }
    store.create(patient("p1", "Martin"))
    for did, (system, code) in codings.items():
        store.create({**doc(did, "p1"), "type": {"coding": [{"system": system, "code": code}]}})
    scope = Scope({"DocumentReference": allowed})
    assert [s.id for s in store.search(Query("DocumentReference", EVERYTHING), scope).matches] == ["ok"]
    assert [s.id for s in store.search(Query("DocumentReference", allowed), OPEN_SCOPE).matches] == ["ok"]
    assert store.read("DocumentReference", "ok", scope).id == "ok"
    for did in ("crossed", "straddling", "split", "spanning", "prefixed"):
        with pytest.raises(NotFound):
            store.read("DocumentReference", did, scope)


def test_read_history_and_includes_honour_the_filter(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    store.create(doc("shown", "p1"))
    store.create(doc("hidden", "p1", "superseded"))
    scope = Scope({"DocumentReference": Token("status", ANY_SYSTEM, "current")})
    assert store.read("DocumentReference", "shown", scope).id == "shown"
    with pytest.raises(NotFound):
        store.read("DocumentReference", "hidden", scope)
    with pytest.raises(NotFound):
        store.vread("DocumentReference", "hidden", 1, scope)
    assert {s.id for s in store.history(scope, "DocumentReference").entries} == {"shown"}
    assert {s.id for s in store.history(scope).entries} == {"p1", "shown"}
    rev = Include("DocumentReference", "subject", reverse=True)
    result = store.search(Query("Patient", String("family", "martin", "start"), includes=(rev,)), scope)
    assert [s.id for s in result.included] == ["shown"]
    # A deleted hidden resource stays hidden: its existence is not revealed by a 410.
    store.delete("DocumentReference", "hidden")
    with pytest.raises(NotFound):
        store.read("DocumentReference", "hidden", scope)


def test_watermark_keeps_later_pages_stable(store: Store) -> None:
    for n in range(3):
        store.create(patient(f"p{n}", "Same"))
    query = Query("Patient", String("family", "same", "start"), count=2)
    first = store.search(query, OPEN_SCOPE)
    store.create(patient("late", "Same"))
    later = store.search(Query("Patient", query.where, offset=2, count=2, watermark=first.watermark), OPEN_SCOPE)
    assert later.total == 3 and [s.id for s in later.matches] == ["p2"]


def test_the_history_of_everything_holds_the_trail_newest_first_and_pages_stably(store: Store) -> None:
    """The history of every type holds the trail's events with the rest (SQLite keeps them in a
    file of their own), newest first, each version once across pages, and what is written after
    the first page is not in the next ones."""
    store.create(patient("p1", "Martin"))
    written = ["p1"]
    for n in range(3):
        time.sleep(0.002)  # distinct instants: the order across the files is by time
        store.create(doc(f"d{n}", "p1"))
        time.sleep(0.002)
        store.log([trail_event(f"e{n}", "p1", "R", "2024-01-01T10:00:00Z")])
        written += [f"d{n}", f"e{n}"]
    first = store.history(OPEN_SCOPE, count=3)
    assert first.total == 7
    store.create(doc("late", "p1"))
    store.log([trail_event("late-event", "p1", "R", "2024-01-01T10:00:00Z")])
    pages = [first] + [
        store.history(OPEN_SCOPE, count=3, offset=offset, watermark=first.watermark) for offset in (3, 6)
    ]
    assert [s.id for page in pages for s in page.entries] == written[::-1]
    assert all(page.total == 7 for page in pages)


def test_a_watermark_of_one_number_bounds_the_main_file_and_reads_the_trail_s_now(tmp_path: Path) -> None:
    """A paging link made before the trail had a file carries one number: it still pages, that
    number bounding the main file's versions, the trail's read as they are (SQLite)."""
    store = _sqlite(tmp_path)
    store.create(patient("p1", "Martin"))
    store.log([trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z")])
    store.create(patient("p2", "Later"))  # above the old link's number: not in its pages
    everything = store.history(OPEN_SCOPE, watermark=1)
    assert sorted(s.id for s in everything.entries) == ["e1", "p1"] and everything.total == 2
    events = store.history(OPEN_SCOPE, "AuditEvent", watermark=1)
    assert [s.id for s in events.entries] == ["e1"]
    assert [s.id for s in store.search(Query("AuditEvent", watermark=1), OPEN_SCOPE).matches] == ["e1"]


def test_a_search_for_housekeeping_also_finds_deleted_resources(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    store.create(doc("live", "p1"))
    store.create(doc("gone", "p1"))
    store.delete("DocumentReference", "gone")
    about = Reference("subject", "Patient", "p1")
    assert {s.id for s in store.search(Query("DocumentReference", about), OPEN_SCOPE).matches} == {"live"}
    found = store.search(Query("DocumentReference", about, deleted=True), OPEN_SCOPE)
    assert found.total == 2
    assert {(s.id, s.deleted) for s in found.matches} == {("live", False), ("gone", True)}


def test_expunge_forgets_every_version_and_index_value(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Martin"))
    store.create(doc("d1", "p1"))
    store.update(doc("d1", "p1", "superseded"))
    store.delete("DocumentReference", "d1")
    with store.transaction():
        assert store.expunge("DocumentReference", "d1") == 3
        assert store.expunge("Patient", "p1") == 1
    assert store.expunge("Patient", "p1") == 0  # nothing left: a second purge is harmless
    assert store.exists("Patient", "p1") is None and store.exists("DocumentReference", "d1") is None
    for version in (1, 2, 3):
        with pytest.raises(NotFound):
            store.vread("DocumentReference", "d1", version, OPEN_SCOPE)
    with pytest.raises(NotFound):
        store.read("Patient", "p1", OPEN_SCOPE)
    everything = store.history(OPEN_SCOPE)
    assert [s.id for s in everything.entries] == ["p2"] and everything.total == 1
    family = Query("Patient", String("family", "martin", "start"), deleted=True)
    assert [s.id for s in store.search(family, OPEN_SCOPE).matches] == ["p2"]
    subject = Query("DocumentReference", Reference("subject", "Patient", "p1"), deleted=True)
    assert store.search(subject, OPEN_SCOPE).total == 0
    # The id is free again, and starts a new life at version 1.
    assert store.create(patient("p1", "Durand")).version == 1


def test_a_resource_created_after_an_expunge_has_only_its_own_index_values(store: Store) -> None:
    """A create writes its index rows without deleting any first: the newest resource expunged,
    the next one may get its row number (SQLite), and must still find none of its values."""
    store.create(patient("p1", "Martin"))
    store.expunge("Patient", "p1")
    store.create(patient("p2", "Durand"))
    assert store.search(Query("Patient", String("family", "martin", "start")), OPEN_SCOPE).total == 0
    assert [s.id for s in store.search(Query("Patient", String("family", "durand", "start")), OPEN_SCOPE).matches] == [
        "p2"
    ]


def test_an_expunge_rolled_back_keeps_everything(store: Store) -> None:
    store.create(patient("p1", "Martin"))
    store.update(patient("p1", "Durand"))
    with pytest.raises(RuntimeError), store.transaction():
        store.expunge("Patient", "p1")
        raise RuntimeError("boom")
    assert store.history(OPEN_SCOPE, "Patient", "p1").total == 2
    durand = store.search(Query("Patient", String("family", "durand", "start")), OPEN_SCOPE)
    assert [s.id for s in durand.matches] == ["p1"]


def test_sessions(store: Store) -> None:
    key = store.save_session(b"state", 60)
    assert store.load_session(key) == b"state"
    assert store.load_session("unknown") is None
    expired = store.save_session(b"old", -1)
    assert store.load_session(expired) is None


def test_outbox_is_durable_and_transactional(backend: Callable[..., Store], tmp_path: Path) -> None:
    store = backend(tmp_path)
    with pytest.raises(RuntimeError), store.transaction():
        store.enqueue("alert", b"lost")
        raise RuntimeError("rolled back")
    first = store.enqueue("alert", b"one")
    store.enqueue("other", b"elsewhere")
    store.close()
    reopened = backend(tmp_path)
    assert reopened.pending("alert") == [(first, b"one", 0)]
    reopened.acknowledge(first)
    assert reopened.pending("alert") == []
    assert [m.payload for m in reopened.pending("other")] == [b"elsewhere"]
    reopened.close()


def test_outbox_defers_a_message_until_it_is_due(backend: Callable[..., Store], tmp_path: Path) -> None:
    """A failed delivery is kept with its attempt count and comes back only once due."""
    store = backend(tmp_path)
    first = store.enqueue("alert", b"one")
    second = store.enqueue("alert", b"two")
    store.defer(first, until=1_000, attempts=1)
    assert [m.id for m in store.pending("alert", now=999)] == [second]
    assert store.pending("alert", now=1_000) == [(first, b"one", 1), (second, b"two", 0)]
    assert [m.id for m in store.pending("alert")] == [first, second]  # without a time: everything waiting
    with pytest.raises(RuntimeError), store.transaction():
        store.defer(second, until=5_000, attempts=3)
        raise RuntimeError("rolled back")
    store.defer(first, until=2_000, attempts=2)
    store.close()
    reopened = backend(tmp_path)
    assert reopened.pending("alert", now=1_500) == [(second, b"two", 0)]
    assert reopened.pending("alert", now=2_000)[0] == (first, b"one", 2)
    reopened.acknowledge(first)
    reopened.defer(first, until=0, attempts=9)  # an acknowledged message stays delivered
    assert [m.id for m in reopened.pending("alert", now=10_000)] == [second]
    assert reopened.pending("alert", limit=1, now=10_000) == [(second, b"two", 0)]
    reopened.close()


def test_an_acknowledged_message_leaves_the_database(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    kept, served = store.enqueue("alert", b"waiting"), store.enqueue("alert", b"served")
    store.acknowledge(served)
    store.close()
    with closing(open_database(tmp_path / "store.sqlite3")) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM outbox")] == [kept]


def test_an_outbox_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database written before attempts and due times existed opens with its messages waiting,
    due now, with no failed attempt."""
    path = tmp_path / "store.sqlite3"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " topic TEXT NOT NULL, created TEXT NOT NULL, payload BLOB NOT NULL, delivered TEXT)"
        )
        conn.execute("INSERT INTO outbox (topic, created, payload) VALUES ('alert', '2024-01-01', x'6f6c64')")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    store = SqliteStore(path, _index, _param_type, SERVED_TYPES)
    assert store.pending("alert", now=0) == [(1, b"old", 0)]
    store.defer(1, until=60, attempts=1)
    assert store.pending("alert", now=59) == []
    store.close()
    again = SqliteStore(path, _index, _param_type, SERVED_TYPES)  # opening twice changes nothing
    assert again.pending("alert", now=60) == [(1, b"old", 1)]
    again.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_private_records(backend: Callable[..., Store], tmp_path: Path) -> None:
    store = backend(tmp_path)
    store.put_record("account", "a", b"first", expires=None)
    store.put_record("account", "a", b"second")
    store.put_record("code", "a", b"other kind", expires=100)
    assert store.get_record("account", "a") == (b"second", None)
    assert store.get_record("code", "a") == (b"other kind", 100)
    assert store.get_record("account", "b") is None
    # add_record refuses a live key (a replayed jti) and takes the place of an expired one
    assert store.add_record("jti", "x", b"", expires=100, now=50) is True
    assert store.add_record("jti", "x", b"", expires=200, now=99) is False
    assert store.add_record("jti", "x", b"again", expires=300, now=100) is True
    assert store.get_record("jti", "x") == (b"again", 300)
    with pytest.raises(RuntimeError), store.transaction():
        store.put_record("account", "rolled-back", b"lost")
        raise RuntimeError("rolled back")
    assert store.get_record("account", "rolled-back") is None
    store.close()
    reopened = backend(tmp_path)
    assert reopened.record_keys("account") == ["a"]
    assert reopened.purge_records(now=150) == 1  # the code expired at 100; jti x lives until 300
    assert reopened.get_record("code", "a") is None
    assert reopened.delete_record("account", "a") is True
    assert reopened.delete_record("account", "a") is False
    assert reopened.record_keys("account") == []
    reopened.close()


def test_a_record_s_mark_changes_with_each_write_and_only_then(backend: Callable[..., Store], tmp_path: Path) -> None:
    """What lets a worker keep a patient's access state without opening its stamp at each request."""
    store = backend(tmp_path)
    assert store.record_mark("stamp", "a") is None
    store.put_record("stamp", "a", b"state")
    store.put_record("stamp", "b", b"state")
    first = store.record_mark("stamp", "a")
    assert first is not None and store.record_mark("stamp", "a") == first  # read twice, one mark
    assert store.record_mark("stamp", "b") != first  # the same value under another key
    store.put_record("stamp", "a", b"state")  # written again with the same value: sealed anew
    again = store.record_mark("stamp", "a")
    assert again is not None and again != first
    with pytest.raises(RuntimeError), store.transaction():
        store.put_record("stamp", "a", b"rolled back")
        raise RuntimeError("rolled back")
    assert store.record_mark("stamp", "a") == again
    store.delete_record("stamp", "a")
    assert store.record_mark("stamp", "a") is None
    store.close()


def test_reindex_applies_new_search_parameters(backend: Callable[..., Store], tmp_path: Path) -> None:
    blind = backend(tmp_path, lambda resource: {})  # a store whose parameters index nothing
    blind.create(patient("a", "Martin"))
    blind.create(patient("b", "Durand"))
    blind.delete("Patient", "b")
    blind.close()
    store = backend(tmp_path)
    martin = Query("Patient", String("family", "martin", "start"))
    assert store.search(martin, OPEN_SCOPE).total == 0
    assert store.reindex("Patient") == 1  # the deleted one is not reindexed
    assert [s.id for s in store.search(martin, OPEN_SCOPE).matches] == ["a"]
    store.close()


# -- encryption at rest (SQLite files) ---------------------------------------------------------

BINARY_BYTES = b"%PDF-1.7 compte rendu operatoire: exerese tumeur benigne, patient Dupont Jean"
ATTACHMENT_BYTES = b"Lettre de liaison: sortie a J+3, traitement par lithium a poursuivre"
DESCRIPTION = "Bilan psychiatrique confidentiel apres hospitalisation sous contrainte"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secrets(*raw: bytes) -> dict[str, bytes]:
    """What must never be readable in the files: the bytes, a fragment of them, and their base64."""
    found = {}
    for data in raw:
        found[data.decode()] = data
        found[f"fragment of {data[:12]!r}"] = data[20:40]
        found[f"base64 of {data[:12]!r}"] = _b64(data).encode("ascii")
    return found


def _write_a_life(store: Store) -> None:
    """Writes, updates, a deletion, a session, an outbox message, and reads of history."""
    binary = {"resourceType": "Binary", "id": "b1", "contentType": "application/pdf", "data": _b64(BINARY_BYTES)}
    store.create(binary)
    store.update({**binary, "data": _b64(BINARY_BYTES + b" (v2)")})
    described = {
        **doc("d1", "p1"),
        "description": DESCRIPTION,
        "content": [{"attachment": {"contentType": "text/plain", "data": _b64(ATTACHMENT_BYTES)}}],
    }
    store.create(patient("p1", "Dupont"))
    store.create(described)
    store.update({**described, "status": "superseded"})
    store.delete("DocumentReference", "d1")
    store.save_session(DESCRIPTION.encode(), 60)
    store.enqueue("alert", ATTACHMENT_BYTES)
    assert store.history(OPEN_SCOPE, "DocumentReference", "d1").total == 3
    assert store.vread("Binary", "b1", 1, OPEN_SCOPE).json()["data"] == _b64(BINARY_BYTES)


def _leaks(path: Path, secrets: dict[str, bytes]) -> list[str]:
    raw = path.read_bytes() if path.exists() else b""
    return [f"{path.name}: {name}" for name, value in secrets.items() if value in raw]


def _checkpoint(path: Path) -> None:
    with closing(open_database(path)) as conn:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def test_no_plaintext_content_on_disk(tmp_path: Path) -> None:
    """Binary bytes and attachment data are in no file: neither the WAL before a checkpoint nor
    the database after it. (The search index is checked below: it holds what is indexed.)"""
    store = _sqlite(tmp_path)
    _write_a_life(store)
    store.put_record("account", "someone", ATTACHMENT_BYTES + b" as a record")
    db, wal = tmp_path / "store.sqlite3", tmp_path / "store.sqlite3-wal"
    secrets = _secrets(BINARY_BYTES, ATTACHMENT_BYTES)
    assert wal.stat().st_size > 0 and _leaks(wal, secrets) == [] and _leaks(db, secrets) == []
    _checkpoint(db)
    assert _leaks(db, secrets) == [] and _leaks(wal, secrets) == []
    assert store.read("Binary", "b1", OPEN_SCOPE).json()["data"] == _b64(BINARY_BYTES + b" (v2)")
    store.close()


def test_no_plaintext_description_in_stored_content(tmp_path: Path) -> None:
    """With an index that does not hold it, nothing else on disk shows the description."""
    store = _sqlite(tmp_path, lambda resource: {})
    _write_a_life(store)
    db = tmp_path / "store.sqlite3"
    secrets = _secrets(DESCRIPTION.encode(), BINARY_BYTES, ATTACHMENT_BYTES)
    assert _leaks(db.with_name(db.name + "-wal"), secrets) == []
    _checkpoint(db)
    assert _leaks(db, secrets) == []
    assert store.vread("DocumentReference", "d1", 1, OPEN_SCOPE).json()["description"] == DESCRIPTION
    store.close()


def test_no_plaintext_description_anywhere(tmp_path: Path) -> None:
    """The description is a search parameter: its index row is encrypted with the whole database,
    in the WAL as in the file. (Without the keys the same store leaks it: the test can fail.)"""
    store = _sqlite(tmp_path)
    _write_a_life(store)
    db = tmp_path / "store.sqlite3"
    secret = _secrets(DESCRIPTION.encode())
    assert _leaks(db.with_name(db.name + "-wal"), secret) == []
    store.close()
    _checkpoint(db)
    assert _leaks(db, secret) == []
    keys, unencrypted = EnvelopeCipher(MasterKeys.load_or_create(tmp_path)), SqliteSettings(encrypted=False)
    plain = SqliteStore(tmp_path / "plain.sqlite3", _index, _param_type, SERVED_TYPES, keys, unencrypted)
    _write_a_life(plain)
    plain.close()
    assert _leaks(tmp_path / "plain.sqlite3", secret) != []


def test_expunge_and_compact_leave_no_index_value_on_disk(tmp_path: Path) -> None:
    """In a database without whole-file encryption the index holds the description in plaintext;
    once the documents are expunged and the store compacted, neither the database nor its WAL
    holds it — not even the value an earlier update dropped from the index, which SQLite left in
    free space. (Encrypted, the same keeps expunged values from whoever holds the keys.)"""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(tmp_path))
    unencrypted = SqliteSettings(encrypted=False)
    store = SqliteStore(tmp_path / "store.sqlite3", _index, _param_type, SERVED_TYPES, cipher, unencrypted)
    # Debian's SQLite overwrites deleted cells by default; most other builds do not: be one of those.
    store._conn().execute("PRAGMA secure_delete = OFF")
    _write_a_life(store)
    kept = {**doc("d2", "p1"), "description": "Compte rendu de consultation ordinaire"}
    store.create(kept)
    revised = {**doc("d3", "p1"), "description": "Avis psychiatrique, premiere version"}
    store.create(revised)
    _checkpoint(tmp_path / "store.sqlite3")
    store.update({k: v for k, v in revised.items() if k != "description"})  # its index row goes
    db = tmp_path / "store.sqlite3"
    first = b"Avis psychiatrique, premiere version"
    secret = {"description": DESCRIPTION.encode(), "replaced description": first}
    _checkpoint(db)
    assert _leaks(db, secret) == [f"{db.name}: {name}" for name in secret]  # the test sees the leaks it is about
    with store.transaction():
        store.expunge("DocumentReference", "d1")
        store.expunge("DocumentReference", "d3")
    report = store.compact()
    assert "truncated" in report
    assert _leaks(db, secret) == [] and _leaks(db.with_name(db.name + "-wal"), secret) == []
    assert b"Compte rendu de consultation ordinaire" in db.read_bytes()  # the other one's index stays
    assert store.read("DocumentReference", "d2", OPEN_SCOPE).json()["description"] == kept["description"]
    with closing(open_database(db)) as conn:
        for table in ("idx_token", "idx_string", "idx_date", "idx_reference", "idx_uri", "version"):
            orphans = f"SELECT COUNT(*) FROM {table} WHERE res NOT IN (SELECT pk FROM resource)"
            assert conn.execute(orphans).fetchone()[0] == 0, table
    store.close()


def _count_blobs(path: Path) -> int:
    with closing(open_database(path)) as conn:
        tables = (
            ("resource", "content"),
            ("version", "content"),
            ("search_session", "data"),
            ("outbox", "payload"),
            ("record", "value"),
        )
        return sum(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE {c} IS NOT NULL").fetchone()[0] for t, c in tables)


def test_rewrap_after_rotation_keeps_everything_readable(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    _write_a_life(store)
    session = store.save_session(b"paging state", 60)
    store.put_record("account", "180017512345660", b"password hash")
    keys = MasterKeys.load_or_create(tmp_path)  # another process's view: the rotate command
    old = keys.active.kid
    new = keys.rotate()
    store.create(patient("late", "Written after the rotation"))  # the running store sees the new key
    assert store.key_ids_in_use() == {old, new}
    with pytest.raises(MasterKeyError):
        keys.retire(old, in_use=store.key_ids_in_use())
    # the database key, and every blob but the one of "late" (its resource row's: a current
    # version's content is stored once), sealed after the rotation
    # (and the trail's file's key)
    assert store.rewrap_all(batch=2) == 2 + _count_blobs(tmp_path / "store.sqlite3") - 1
    assert store.key_ids_in_use() == {new} and store.rewrap_all() == 0
    keys.retire(old, in_use=store.key_ids_in_use())
    store.close()

    reopened = _sqlite(tmp_path)  # only the new key now
    assert reopened.read("Binary", "b1", OPEN_SCOPE).json()["data"] == _b64(BINARY_BYTES + b" (v2)")
    history = reopened.history(OPEN_SCOPE, "DocumentReference", "d1")
    assert [s.json()["description"] for s in history.entries if not s.deleted] == [DESCRIPTION] * 2
    assert [s.id for s in reopened.search(Query("Patient", String("family", "dup", "start")), OPEN_SCOPE).matches] == [
        "p1"
    ]
    assert reopened.load_session(session) == b"paging state"
    assert reopened.get_record("account", "180017512345660") == (b"password hash", None)
    assert [m.payload for m in reopened.pending("alert")] == [ATTACHMENT_BYTES]
    reopened.close()


def test_a_blob_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    store.update(patient("p1", "Martin-2"))
    key = store.save_session(b"mine", 60)
    other = store.save_session(b"theirs", 60)
    with closing(open_database(tmp_path / "store.sqlite3")) as conn, conn:
        conn.execute("UPDATE resource SET content = (SELECT content FROM resource WHERE id = 'p1') WHERE id = 'p2'")
        conn.execute(
            "UPDATE version SET content = (SELECT content FROM version WHERE version = 1 AND res = v.res)"
            " FROM (SELECT res FROM version JOIN resource ON pk = res WHERE id = 'p1') v"
            " WHERE version.res = v.res AND version.version = 2"
        )
        conn.execute(
            "UPDATE search_session SET data = (SELECT data FROM search_session WHERE key = ?) WHERE key = ?",
            (key, other),
        )
    with pytest.raises(DecryptionError, match="Patient/p2/1"):
        store.read("Patient", "p2", OPEN_SCOPE)
    with pytest.raises(DecryptionError, match="Patient/p1/2"):
        store.vread("Patient", "p1", 2, OPEN_SCOPE)
    with pytest.raises(DecryptionError):
        store.history(OPEN_SCOPE, "Patient", "p1")
    with pytest.raises(DecryptionError):
        store.search(Query("Patient", String("family", "durand", "start")), OPEN_SCOPE)
    with pytest.raises(DecryptionError):
        store.load_session(other)
    assert store.vread("Patient", "p1", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    store.close()


def test_a_store_refuses_keys_that_are_not_its_own(tmp_path: Path) -> None:
    _sqlite(tmp_path).create(patient("p1", "Martin"))
    path = tmp_path / "store.sqlite3"
    strangers = EnvelopeCipher(MasterKeys.load_or_create(tmp_path / "elsewhere"))
    with pytest.raises(MasterKeyError, match="does not open with the master keys"):
        SqliteStore(path, _index, _param_type, SERVED_TYPES, strangers)
    with pytest.raises(MasterKeyError, match="is encrypted"):
        SqliteStore(path, _index, _param_type, SERVED_TYPES)


def test_each_kind_of_index_value_is_its_table_s_value_columns_in_order() -> None:
    """A value's row is ``(param, *value)``: its fields must be its table's columns, in order."""
    assert sorted(TABLE_OF_VALUE.values()) == sorted(COLUMN_NAMES)
    for value_type, kind in TABLE_OF_VALUE.items():
        fields = [field.replace("identifier_", "id_") for field in value_type._fields]
        assert fields == COLUMN_NAMES[kind].split(", "), value_type


def test_a_page_that_ends_the_results_is_not_counted_again(tmp_path: Path) -> None:
    """SQLite asks for one row past the page: when none comes, the total is the page's end, and
    the matches are not counted again through the filter; when one comes, they are."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    for n in range(4):
        store.create(doc(f"d{n}", "p1"))
    conn, statements = store._conn(), []
    conn.set_trace_callback(statements.append)
    for count, total, counted in ((4, 4, False), (3, 4, True), (5, 4, False)):
        statements.clear()
        query = Query("DocumentReference", Reference("subject", "Patient", "p1"), count=count)
        found = store.search(query, OPEN_SCOPE)
        assert (len(found.matches), found.total) == (min(count, total), total)
        assert any(s.startswith("SELECT COUNT(*)") for s in statements) == counted, (count, statements)
    conn.set_trace_callback(None)
    store.close()


def test_a_history_page_and_its_total_read_one_state(tmp_path: Path) -> None:
    """A resource expunged by another request between a history's total and its page is still
    listed, as it is counted: both read one snapshot (SQLite)."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    for n in range(3):
        store.create(patient(f"p{n}", "Martin"))

    def expunge() -> None:
        with store.transaction():
            store.expunge("Patient", "p2")

    def meanwhile(statement: str) -> None:
        if "ORDER BY v.seq DESC" in statement:
            writer = threading.Thread(target=expunge)
            writer.start()  # another request's connection, committed before the page is read
            writer.join()

    conn = store._conn()
    conn.set_trace_callback(meanwhile)
    page = store.history(OPEN_SCOPE, "Patient")
    conn.set_trace_callback(None)
    with pytest.raises(NotFound):
        store.read("Patient", "p2", OPEN_SCOPE)
    assert page.total == 3 and [s.id for s in page.entries] == ["p2", "p1", "p0"]
    store.close()


def test_a_sorted_search_reads_each_match_s_sort_key_from_its_own_index_rows(tmp_path: Path) -> None:
    """``_sort`` probes a match's values through the ``(res, param)`` index (SQLite). Left to itself,
    the planner read the sort key from the covering value index, walking every row of the parameter
    in the database for each match: ``_sort=-date`` grew with the database, not with the page."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    for n, day in enumerate((3, 1, 2)):
        store.create({**patient(f"p{n}", "Doe"), "birthDate": f"2024-01-0{day}"})
    store.create({**patient("other", "Roe"), "birthDate": "2024-01-04"})
    statements: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(statements.append)
    query = Query("Patient", String("family", "Doe", "exact"), sort=(SortKey("birthdate", descending=True),))
    found = store.search(query, OPEN_SCOPE)
    conn.set_trace_callback(None)
    assert [s.id for s in found.matches] == ["p0", "p2", "p1"]
    page = next(s for s in statements if "ORDER BY" in s and "idx_date" in s)
    plan = [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {page}")]
    assert any("idx_date_res (res=? AND param=?)" in step for step in plan), plan
    assert not any("idx_date_search" in step for step in plan), plan
    store.close()


def _index_rows(conn: sqlite3.Connection, tables: tuple[str, ...], pk: int) -> int:
    return sum(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE res = ?", (pk,)).fetchone()[0] for t in tables)


def _pk(conn: sqlite3.Connection, rtype: str, rid: str) -> int:
    """The key of ``rtype/rid`` in the file that holds it (the trail's events: once moved there)."""
    sql = (
        "SELECT pk FROM trail.resource WHERE type = ?1 AND id = ?2"
        " UNION ALL SELECT pk FROM resource WHERE type = ?1 AND id = ?2"
    )
    return int(conn.execute(sql, (rtype, rid)).fetchone()[0])


def _inboxed(store: SqliteStore) -> int:
    """The trail's events a write kept in the main file, not moved to the trail's yet."""
    return int(store._conn().execute("SELECT COUNT(*) FROM main.resource WHERE type = 'AuditEvent'").fetchone()[0])


def _unscanned_plan(store: SqliteStore, query: Query, scope: Any, statement: str) -> list[str]:
    """The plan of the statement of ``query`` that holds ``statement``, once it has run: it reads
    no whole table (a list of values may be scanned)."""
    conn, statements = store._conn(), []
    conn.set_trace_callback(statements.append)
    store.search(query, scope)
    conn.set_trace_callback(None)
    sql = next(s for s in statements if statement in s)
    steps = [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    tables = [step for step in steps if step.startswith("SCAN") and "VIRTUAL TABLE" not in step]
    assert not tables, "\n".join(steps)
    return steps


def test_the_trail_s_index_is_kept_apart_and_a_search_of_it_starts_from_the_patient(tmp_path: Path) -> None:
    """SQLite keeps the AuditEvents' index rows in tables of their own, whose only value indexes
    are the patient's and the dates': a search naming the patient starts from them, even when it
    also names an action (which, in the shared tables, would drive the query); one naming an
    ``_id`` starts from the resource's own key. The events are in a file of their own, keyed apart
    from the main one's resources; one created (as a write's, in its transaction) waits in the main
    file, without index rows, until a statement reads the trail."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _trail_of_two_patients(store)
    conn = store._conn()
    event, document = _pk(conn, "AuditEvent", "e1"), _pk(conn, "DocumentReference", "d1")
    assert event < TRAIL_KEYS_FROM and _inboxed(store) == 3
    assert _index_rows(conn, (*TRAIL.tables, *SHARED.tables, *RECORD.tables), event) == 0
    assert store.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "R")), OPEN_SCOPE).matches
    event = _pk(conn, "AuditEvent", "e1")
    assert event > TRAIL_KEYS_FROM and _inboxed(store) == 0
    assert _index_rows(conn, TRAIL.tables, event) > 10 and _index_rows(conn, SHARED.tables, event) == 0
    assert _index_rows(conn, RECORD.tables, document) > 3 and _index_rows(conn, TRAIL.tables, document) == 0
    assert _index_rows(conn, SHARED.tables, document) == 0

    def plan(query: Query, scope: Any, statement: str) -> list[str]:
        return _unscanned_plan(store, query, scope, statement)

    read = Token("action", ANY_SYSTEM, "R")
    by_id = all_of(read, Reference("patient", "Patient", "p1"))
    assert any("trail_binding_target" in step for step in plan(Query("AuditEvent", by_id), OPEN_SCOPE, "ORDER BY"))
    by_ins = all_of(read, ReferenceIdentifier("patient", INS_SYSTEM, "ins-p1"))
    assert any("trail_binding_ident" in step for step in plan(Query("AuditEvent", by_ins), OPEN_SCOPE, "ORDER BY"))
    named = all_of(Token("_id", ANY_SYSTEM, "e1"), Reference("patient", "Patient", "p1"))  # the resource's own key
    steps = plan(Query("AuditEvent", named), OPEN_SCOPE, "ORDER BY")
    assert any("sqlite_autoindex_resource_1 (type=? AND id=?)" in step for step in steps), steps
    bound = Scope({"AuditEvent": ReferenceIdentifier("patient", INS_SYSTEM, "ins-p1")})  # as the policy binds it
    has = Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "R"), scoped=True)
    assert any("trail_binding_ident" in step for step in plan(Query("Patient", has), bound, "ORDER BY"))
    revinclude = Include("AuditEvent", "entity", reverse=True)
    documents = Query("DocumentReference", Reference("subject", "Patient", "p1"), includes=(revinclude,))
    assert any("trail_binding_ident" in step for step in plan(documents, bound, "SELECT DISTINCT"))
    store.close()


def _documents_of_two_patients(store: Store) -> None:
    """Two patients' documents, one by INS, and the submission set of one."""
    store.create(patient("p1", "Martin"))
    store.create(patient("p2", "Durand"))
    for did, pid, status, day in (
        ("d1", "p1", "current", 3),
        ("d2", "p1", "superseded", 1),
        ("d3", "p2", "current", 2),
    ):
        store.create(
            {
                **doc(did, pid, status),
                "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.3.{did}"},
                "date": f"2024-01-0{day}T00:00:00Z",
                "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/b-{did}"}}],
            }
        )
    store.create(
        {
            "resourceType": "DocumentReference",
            "id": "d4",
            "status": "current",
            "subject": {"identifier": {"system": INS_SYSTEM, "value": "ins-p2"}},
            "content": [{"attachment": {"contentType": "text/plain"}}],
        }
    )
    store.create(
        {
            "resourceType": "List",
            "id": "s1",
            "status": "current",
            "mode": "working",
            "subject": {"reference": "Patient/p1"},
            "entry": [{"item": {"reference": "DocumentReference/d1"}}],
        }
    )


def test_the_documents_answer_every_form_of_search(store: Store) -> None:
    """The documents' and submission sets' index has value indexes for the subject, the uniqueId
    and the attachment only (SQLite): every other form is still answered, from the candidates
    those give or over every document."""
    _documents_of_two_patients(store)

    def ids(rtype: str, where: Expr, scope: Any = OPEN_SCOPE, **query: Any) -> list[str]:
        return sorted(s.id for s in store.search(Query(rtype, where, **query), scope).matches)

    p1, current = Reference("subject", "Patient", "p1"), Token("status", ANY_SYSTEM, "current")
    assert ids("DocumentReference", p1) == ["d1", "d2"]
    assert ids("DocumentReference", Reference("patient", "Patient", "p1")) == ["d1", "d2"]
    assert ids("DocumentReference", ReferenceIdentifier("subject", INS_SYSTEM, "ins-p2")) == ["d4"]
    assert ids("DocumentReference", all_of(p1, current)) == ["d1"]
    assert ids("DocumentReference", current) == ["d1", "d3", "d4"]  # no patient: every document is looked at
    assert ids("DocumentReference", Token("identifier", "urn:ietf:rfc:3986", "urn:oid:1.2.3.d3")) == ["d3"]
    assert ids("DocumentReference", Token("identifier", ANY_SYSTEM, "urn:oid:1.2.3.d2")) == ["d2"]
    assert ids("DocumentReference", Reference("attachment", "Binary", "b-d1")) == ["d1"]
    assert ids("DocumentReference", any_of(Token("_id", ANY_SYSTEM, "d1"), Token("_id", ANY_SYSTEM, "d3"))) == [
        "d1",
        "d3",
    ]
    assert ids("DocumentReference", Chain("subject", ("Patient",), String("family", "durand", "start"))) == ["d3"]
    late = DateRange("date", "ge", 1704153600000000, 1704240000000000)  # from 2024-01-02
    assert ids("DocumentReference", late) == ["d1", "d3"]
    assert ids("DocumentReference", all_of(p1, late)) == ["d1"]
    sorted_page = store.search(Query("DocumentReference", p1, sort=(SortKey("date", descending=True),)), OPEN_SCOPE)
    assert [s.id for s in sorted_page.matches] == ["d1", "d2"]
    assert ids("DocumentReference", current, Scope({"DocumentReference": Reference("subject", "Patient", "p2")})) == [
        "d3"
    ]
    assert ids("List", Reference("item", "DocumentReference", "d1")) == ["s1"]
    assert ids("Patient", Has("DocumentReference", "subject", Token("status", ANY_SYSTEM, "superseded"))) == ["p1"]
    bound = Scope({"DocumentReference": Reference("subject", "Patient", "p1")})  # as the policy binds it
    assert ids("Patient", Has("DocumentReference", "subject", current, scoped=True), bound) == ["p1"]
    for param, scope, included in (
        ("subject", OPEN_SCOPE, ["d1", "d2"]),
        ("attachment", OPEN_SCOPE, []),
        (None, bound, ["d1", "d2"]),
    ):
        revinclude = Include("DocumentReference", param, reverse=True)
        found = store.search(Query("Patient", Token("_id", ANY_SYSTEM, "p1"), includes=(revinclude,)), scope)
        assert sorted(s.id for s in found.included) == included, (param, scope)
    store.delete("DocumentReference", "d3")
    assert ids("DocumentReference", Token("_id", ANY_SYSTEM, "d3")) == []
    assert ids("DocumentReference", any_of(Token("_id", None, "d1"), Token("_id", ANY_SYSTEM, "d3"))) == ["d1"]
    assert ids("DocumentReference", Token("_id", "urn:other", "d1")) == []  # an id has no system


def test_the_documents_index_is_kept_apart_and_a_search_of_it_starts_from_a_key(tmp_path: Path) -> None:
    """SQLite keeps the documents' and submission sets' index rows in tables of their own, whose
    only value indexes are the subject's, the uniqueId's and the attachment's: a search naming the
    patient starts from it, even when it also names a status or a type; one naming an ``_id``, from
    the resource's own key; the server's searches
    across patients (a uniqueId already registered, the document holding a Binary) start from
    theirs; none reads a whole table."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _documents_of_two_patients(store)
    conn = store._conn()
    for rtype, rid in (("DocumentReference", "d1"), ("List", "s1")):
        pk = _pk(conn, rtype, rid)
        assert _index_rows(conn, RECORD.tables, pk) > 3 and _index_rows(conn, SHARED.tables, pk) == 0
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {name for name in indexes if name.startswith("rec_") and not name.endswith("_res")} == {
        "rec_binding_target",
        "rec_binding_ident",
        "rec_key_identifier",
        "rec_key_attachment",
    }

    def plan(query: Query, scope: Any = OPEN_SCOPE, statement: str = "ORDER BY") -> list[str]:
        return _unscanned_plan(store, query, scope, statement)

    current = Token("status", ANY_SYSTEM, "current")
    by_patient = all_of(current, Token("type", ANY_SYSTEM, "X"), Reference("subject", "Patient", "p1"))
    assert any("rec_binding_target" in step for step in plan(Query("DocumentReference", by_patient)))
    by_id = all_of(Token("_id", ANY_SYSTEM, "d1"), Reference("subject", "Patient", "p1"))
    steps = plan(Query("DocumentReference", by_id))
    assert any("sqlite_autoindex_resource_1 (type=? AND id=?)" in step for step in steps), steps
    by_ids = any_of(*(Token("_id", ANY_SYSTEM, rid) for rid in ("d1", "d2", "d3")))  # not every document's row
    steps = plan(Query("DocumentReference", by_ids))
    assert any("sqlite_autoindex_resource_1 (type=? AND id=?)" in step for step in steps), steps
    by_ins = all_of(current, ReferenceIdentifier("subject", INS_SYSTEM, "ins-p2"))
    assert any("rec_binding_ident" in step for step in plan(Query("DocumentReference", by_ins)))
    unique_id = Token("identifier", "urn:ietf:rfc:3986", "urn:oid:1.2.3.d3")
    assert any("rec_key_identifier" in step for step in plan(Query("DocumentReference", unique_id)))
    holder = Reference("attachment", "Binary", "b-d1")
    assert any("rec_key_attachment" in step for step in plan(Query("DocumentReference", holder)))
    bound = Scope({"DocumentReference": Reference("subject", "Patient", "p1")})
    assert any("rec_binding_target" in step for step in plan(Query("DocumentReference", current), bound))
    revinclude = Include("DocumentReference", "subject", reverse=True)
    patients = Query("Patient", Token("_id", ANY_SYSTEM, "p1"), includes=(revinclude,))
    assert any("rec_binding_target" in step for step in plan(patients, OPEN_SCOPE, "SELECT DISTINCT"))
    store.close()


def _steps(conn: sqlite3.Connection, store: Store, query: Query, scope: Any) -> list[str]:
    """The plan of the page statement of ``query``, once it has run."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store.search(query, scope)
    conn.set_trace_callback(None)
    sql = next(s for s in statements if "ORDER BY" in s)
    return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_a_search_by_patient_reads_its_candidates_by_key_and_probes_them_in_the_index_alone(tmp_path: Path) -> None:
    """At a million documents each page a search reads is seldom cached: a candidate is found by
    its primary key (not also through the type's index), and the conditions on it (the policy's
    patient by INS, a status, a date, a type) are answered by covering ``(res, param)`` indexes."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    for n in range(3):
        store.create({**doc(f"d{n}", "p1"), "date": f"2024-01-0{n + 1}T10:00:00Z", "type": {"coding": [{"code": "X"}]}})
    bound = Scope(
        {
            "DocumentReference": any_of(
                ReferenceIdentifier("subject", INS_SYSTEM, "ins-p1"), Reference("subject", "Patient", "p1")
            )
        }
    )
    where = all_of(
        Reference("patient", "Patient", "p1"),
        Token("status", ANY_SYSTEM, "current"),
        Token("type", ANY_SYSTEM, "X"),
        DateRange("date", "ge", 1_704_153_600_000_000, 1_704_240_000_000_000),
    )
    query = Query("DocumentReference", where)
    assert sorted(s.id for s in store.search(query, bound).matches) == ["d1", "d2"]
    steps = _steps(store._conn(), store, query, bound)
    assert "SEARCH r USING INTEGER PRIMARY KEY (rowid=?)" in steps, "\n".join(steps)
    probes = [step for step in steps if re.search(rf"{RECORD.prefix}_\w+_res", step)]
    assert len(probes) >= 4 and all("COVERING INDEX" in step for step in probes), "\n".join(steps)
    store.close()


def test_a_chain_that_names_its_targets_finds_them_once_per_statement(tmp_path: Path) -> None:
    """``patient.identifier=<INS>`` (IHE ITI-67, and the policy's own "this patient"): the
    Patients with that INS are found once, by the identifier's index, not once per candidate by
    type and id with their rows probed — about a dozen page reads per document. Same answers:
    a document of the patient by reference matches, one of another patient, or naming the patient
    by identifier only (a chain resolves references), does not."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    for pid in ("p1", "p2"):
        store.create({**patient(pid, "Martin"), "identifier": [{"system": INS_SYSTEM, "value": f"ins-{pid}"}]})
    store.create(doc("d1", "p1"))
    store.create(doc("d2", "p2"))
    store.create({**doc("d3", "p1"), "subject": {"identifier": {"system": INS_SYSTEM, "value": "ins-p1"}}})
    store.create({**doc("d4", "p1"), "status": "superseded"})
    chain = Chain("patient", ("Patient",), Token("identifier", INS_SYSTEM, "ins-p1"))
    where = all_of(chain, Token("status", ANY_SYSTEM, "current"))
    bound = Scope(
        {
            "DocumentReference": any_of(
                ReferenceIdentifier("subject", INS_SYSTEM, "ins-p1"), Reference("subject", "Patient", "p1")
            )
        }
    )
    for scope in (OPEN_SCOPE, bound):
        assert [s.id for s in store.search(Query("DocumentReference", where), scope).matches] == ["d1"]
    steps = _steps(store._conn(), store, Query("DocumentReference", where), bound)
    assert "LIST SUBQUERY" in "\n".join(steps) and "CORRELATED LIST SUBQUERY" not in "\n".join(steps), steps
    assert not any("sqlite_autoindex_resource_1" in step for step in steps), "\n".join(steps)
    store.close()


def test_the_shared_probe_indexes_of_schema_5_are_made_again_covering(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    store.create(doc("d1", "p1", status="current"))
    conn = store._conn()
    for kind in COVERED_KINDS:  # as schema 5 made them
        conn.execute(f"DROP INDEX {SHARED.table(kind)}_res")
        conn.execute(f"CREATE INDEX {SHARED.table(kind)}_res ON {SHARED.table(kind)} (res, param)")
    conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    store.close()
    for _ in range(2):  # a second open finds nothing to do
        reopened = _sqlite(tmp_path)
        assert isinstance(reopened, SqliteStore)
        conn = reopened._conn()
        for kind in COVERED_KINDS:
            columns = [row[2] for row in conn.execute(f"PRAGMA index_info({SHARED.table(kind)}_res)")]
            assert len(columns) > 2 and columns[:2] == ["res", "param"], (kind, columns)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        found = reopened.search(Query("DocumentReference", Token("status", ANY_SYSTEM, "current")), OPEN_SCOPE)
        assert [s.id for s in found.matches] == ["d1"]
        reopened.close()


class _Recording:
    """A connection that records the statements it is given as given (the trace callback shows
    them with their arguments already in place)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.statements = conn, []

    def execute(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_an_exact_string_drives_a_search_before_a_code_every_type_shares(tmp_path: Path) -> None:
    """The Subscriptions of a DMP are found by their exact criteria: from the string index, not
    from ``status=active``, which the token index shares with every active Consent (at a million
    documents, 0.1 s per document created)."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    criteria = "DocumentReference?patient=Patient/p1"
    subscription = {"resourceType": "Subscription", "id": "s1", "status": "active", "criteria": criteria}
    store.create(subscription)
    store.create({**subscription, "id": "s2", "criteria": criteria.upper()})  # exact: another string
    for n in range(3):
        store.create({"resourceType": "Consent", "id": f"c{n}", "status": "active"})
    where = all_of(String("criteria", criteria, "exact"), Token("status", ANY_SYSTEM, "active"))
    statements: list[str] = []
    conn = store._conn()
    conn.set_trace_callback(statements.append)
    found = store.search(Query("Subscription", where), OPEN_SCOPE)
    conn.set_trace_callback(None)
    assert [s.id for s in found.matches] == ["s1"]
    page = next(sql for sql in statements if "ORDER BY" in sql)
    steps = [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {page}")]
    assert any("idx_string_search (param=? AND norm=?)" in step for step in steps), "\n".join(steps)
    store.close()


def test_a_page_s_limit_is_written_into_its_statement_not_bound(tmp_path: Path) -> None:
    """SQLite's planner reads a bound LIMIT or OFFSET and then prepares the statement again at
    every new binding: a search's page query, kilobytes of SQL, was compiled anew for every search
    (:func:`storage.sqlite.store._page`). The page sizes are written into the SQL."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(doc("d1", "p1"))
    slot = store._connections.slot()
    recording = _Recording(slot.conn)
    slot.conn = recording  # type: ignore[assignment]
    query = Query("DocumentReference", Reference("subject", "Patient", "p1"), count=7, offset=3)
    found = store.search(query, OPEN_SCOPE)
    store.history(OPEN_SCOPE, "DocumentReference", count=5, offset=2)
    slot.conn = recording.conn
    assert found.total == 1 and found.matches == []
    pages = [sql.rpartition(" LIMIT ")[2] for sql in recording.statements if " LIMIT " in sql]
    assert pages == ["8 OFFSET 3", "5 OFFSET 2"]  # a search with a total asks for one row past its page
    store.close()


def test_every_statement_reading_the_trail_moves_the_waiting_events_first(tmp_path: Path) -> None:
    """An AuditEvent a write created waits in the main file (SQLite): a read of it, a search, a
    ``_has``, a ``_revinclude``, an ``_include`` from it, a sort, the history, each finds the
    event committed just before it — the cached filters included — as if it had been written in
    the trail's file, with its index rows."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _trail_of_two_patients(store)
    bound = Scope({"AuditEvent": ReferenceIdentifier("patient", INS_SYSTEM, "ins-p1")})  # as the policy binds it
    events = iter(range(10, 60))

    def fresh_event(action: str = "R") -> str:
        n = next(events)
        eid = f"e{n}"  # each recorded after the one before: the newest is the last
        store.create(trail_event(eid, "p1", action, f"2024-02-01T10:{n:02d}:00Z", about="DocumentReference/d1"))
        assert _inboxed(store) >= 1
        return eid

    def ids(query: Query, scope: Any = bound) -> set[str]:
        found = store.search(query, scope)
        assert _inboxed(store) == 0
        return {s.id for s in (*found.matches, *found.included)}

    p1 = Reference("patient", "Patient", "p1")
    for _ in range(2):  # the second time, from the filters compiled and kept the first
        eid = fresh_event()
        assert store.read("AuditEvent", eid, bound).id == eid and _inboxed(store) == 0
        assert eid in ids(Query("AuditEvent", p1))
        eid = fresh_event("D")
        assert ids(Query("Patient", Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "D"), scoped=True))) == {
            "p1"
        }
        eid = fresh_event()
        documents = Query(
            "DocumentReference",
            Reference("subject", "Patient", "p1"),
            includes=(Include("AuditEvent", "entity", reverse=True),),
        )
        assert eid in ids(documents)
        eid = fresh_event()
        forward = Query("AuditEvent", Token("_id", ANY_SYSTEM, eid), includes=(Include("AuditEvent", "entity"),))
        assert ids(forward, OPEN_SCOPE) == {eid, "d1", "p1"}
        eid = fresh_event()
        newest = Query("AuditEvent", p1, sort=(SortKey("date", descending=True),), count=1)
        assert [s.id for s in store.search(newest, OPEN_SCOPE).matches] == [eid]
        eid = fresh_event()
        history = store.history(bound, "AuditEvent")
        assert eid in {s.id for s in history.entries} and _inboxed(store) == 0
    store.close()


def test_the_events_writes_left_in_the_main_file_are_moved_by_the_next_store_opened(tmp_path: Path) -> None:
    """Events created in the main file stay there while nothing reads the trail (a store without
    the upkeep thread: a command's, a test's); a store opened on the same files moves them, with
    their index rows, before it serves."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    for n in range(3):
        store.create(trail_event(f"e{n}", "p1", "R", "2024-01-01T10:00:00Z"))
    store.create(trail_event("waiting", "p1", "C", "2024-01-02T10:00:00Z"))
    conn = store._conn()
    assert _inboxed(store) == 4 and conn.execute("SELECT COUNT(*) FROM trail.resource").fetchone() == (0,)
    store.close()
    reopened = _sqlite(tmp_path)
    assert isinstance(reopened, SqliteStore)
    conn = reopened._conn()
    assert _inboxed(reopened) == 0 and conn.execute("SELECT COUNT(*) FROM trail.resource").fetchone() == (4,)
    written = [_index_rows(conn, TRAIL.tables, _pk(conn, "AuditEvent", f"e{n}")) for n in range(3)]
    assert min(written) > 1 and len(set(written)) == 1  # each event's rows that start a search, once
    found = reopened.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "C")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["waiting"]
    completed = [_index_rows(conn, TRAIL.tables, _pk(conn, "AuditEvent", f"e{n}")) for n in range(3)]
    assert min(completed) > 5 + min(written) and len(set(completed)) == 1  # the others, when read, once
    reopened.close()


def test_the_upkeep_thread_moves_the_writes_events_once_a_batch_waits(tmp_path: Path) -> None:
    """A serving store's upkeep thread moves the events its writes left in the main file once
    :data:`INBOX_BATCH` of them wait, and not before; under writes, never more than that wait."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.start_upkeep()
    store.create(patient("p1", "Martin"))
    for n in range(INBOX_BATCH - 1):
        store.create(trail_event(f"e{n}", "p1", "R", "2024-01-01T10:00:00Z"))
    time.sleep(0.3)  # three of the thread's rounds: time to do what it must not
    assert _inboxed(store) == INBOX_BATCH - 1
    store.create(trail_event("last", "p1", "R", "2024-01-01T10:00:00Z"))
    deadline = time.monotonic() + 30
    while _inboxed(store) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _inboxed(store) == 0
    assert store._conn().execute("SELECT COUNT(*) FROM trail.resource").fetchone() == (INBOX_BATCH,)
    for n in range(2 * INBOX_BATCH):  # as writes make them: each in the transaction of its write
        with store.transaction():
            store.create(doc(f"d{n}", "p1"))
            store.create(trail_event(f"w{n}", "p1", "C", "2024-01-01T10:00:00Z", about=f"DocumentReference/d{n}"))
    deadline = time.monotonic() + 30
    while _inboxed(store) >= INBOX_BATCH and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _inboxed(store) < INBOX_BATCH  # a wake may come before its write commits: not more wait
    store.close()


def test_a_move_takes_the_events_waiting_when_it_starts_and_leaves_those_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events written while a move runs wait for the next batch. A move that took them too
    chased the writes: under a steady flow of them it went on moving one or two at a time, with
    two commits each."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    for n in range(3):
        store.create(trail_event(f"e{n}", "p1", "R", "2024-01-01T10:00:00Z"))
    copy, written = store._copy_inboxed, []

    def copy_while_a_write_comes(rows: list[tuple[Any, ...]]) -> None:
        copy(rows)
        if not written:  # a write's event, after those the move found
            written.append(store.create(trail_event("late", "p1", "C", "2024-01-02T10:00:00Z")))

    monkeypatch.setattr(store, "_copy_inboxed", copy_while_a_write_comes)
    store._move_inbox()
    conn = store._conn()
    assert written and conn.execute("SELECT id FROM main.resource WHERE type = 'AuditEvent'").fetchall() == [("late",)]
    assert sorted(row[0] for row in conn.execute("SELECT id FROM trail.resource")) == ["e0", "e1", "e2"]
    store.close()


def test_a_move_interrupted_between_its_two_commits_leaves_each_event_once(tmp_path: Path) -> None:
    """A write's event is committed with the write, in the main file, then copied to the trail's
    and deleted from the main one in two commits (one per file). A crash between them leaves the
    event in both: the next move deletes the main file's copy and does not copy it again. A
    transaction that fails leaves neither the write nor its event."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    with store.transaction():
        store.create(doc("d1", "p1"))
        store.create(trail_event("e1", "p1", "C", "2024-01-01T10:00:00Z", about="DocumentReference/d1"))
    with pytest.raises(RuntimeError), store.transaction():
        store.create(doc("d2", "p1"))
        store.create(trail_event("e2", "p1", "C", "2024-01-01T10:00:00Z", about="DocumentReference/d2"))
        raise RuntimeError("the write fails after its event was created")
    conn = store._conn()
    waiting = conn.execute(
        "SELECT pk, type, id, version, last_updated, deleted, content FROM resource WHERE type = 'AuditEvent'"
    ).fetchall()
    assert [row[2] for row in waiting] == ["e1"]
    with store.transaction():  # the copy committed, the delete not: a crash between the two
        store._copy_inboxed(waiting)
    assert _inboxed(store) == 1 and conn.execute("SELECT COUNT(*) FROM trail.resource").fetchone() == (1,)
    store.close()
    reopened = _sqlite(tmp_path)
    assert isinstance(reopened, SqliteStore)
    assert _inboxed(reopened) == 0
    found = reopened.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["e1"] and found.total == 1
    reopened.close()


def test_moving_the_journal_commits_nothing_to_the_main_file(tmp_path: Path) -> None:
    """What the trail's file is for: moving the journal's events in commits to the trail's file
    only, so every other connection keeps its page cache of the documents (SQLite empties a
    connection's cache of a file whenever another connection commits to it, ``data_version``)."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _documents_of_two_patients(store)
    other = open_database(tmp_path / "store.sqlite3")
    before = [other.execute(f"PRAGMA {schema}.data_version").fetchone()[0] for schema in ("main", "trail")]
    store.log([trail_event(f"e{n}", "p1", "R", "2024-01-01T10:00:00Z") for n in range(5)])
    store._drain()
    after = [other.execute(f"PRAGMA {schema}.data_version").fetchone()[0] for schema in ("main", "trail")]
    assert after[0] == before[0] and after[1] != before[1]
    assert other.execute("SELECT COUNT(*) FROM trail.resource").fetchone() == (5,)
    other.close()
    store.close()


def test_a_waiting_event_rewritten_or_expunged_leaves_no_row_behind(tmp_path: Path) -> None:
    """An update or an expunge of an event that waits in the main file moves it first, then
    rewrites or removes it in the trail's file, its index rows with it."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    store.create(patient("p1", "Martin"))
    store.create(trail_event("e1", "p1", "R", "2024-01-01T10:00:00Z"))
    store.create(trail_event("e2", "p1", "R", "2024-01-01T10:00:00Z"))
    store.create(trail_event("e3", "p1", "R", "2024-01-01T10:00:00Z"))
    store.update(trail_event("e1", "p1", "U", "2024-01-01T10:00:00Z"))
    store.expunge("AuditEvent", "e2")
    assert _inboxed(store) == 0
    store.create(trail_event("e4", "p1", "R", "2024-01-01T10:00:00Z"))
    with store.transaction():  # a purge's: the waiting event is moved, its copy left to the next move
        store.expunge("AuditEvent", "e4")
        store.expunge("AuditEvent", "e3")
    store.close()
    store = _sqlite(tmp_path)  # moves what waits: the expunged events do not come back
    assert isinstance(store, SqliteStore)
    conn = store._conn()
    e1 = _pk(conn, "AuditEvent", "e1")
    actions = conn.execute("SELECT code FROM trail.trail_token WHERE res = ? AND param = 'action'", (e1,)).fetchall()
    assert actions == [("U",)]
    assert [s.id for s in store.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "U")), OPEN_SCOPE).matches] == [
        "e1"
    ]
    assert store.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "R")), OPEN_SCOPE).matches == []
    store.close()


def _as_written_by(conn: sqlite3.Connection, schema: int, family: IndexFamily) -> None:
    """The database as a server of ``schema`` wrote it: ``family``'s index rows in the shared tables."""
    for shared, own in zip(SHARED.tables, family.tables, strict=True):
        conn.execute(f"INSERT INTO {shared} SELECT * FROM {own}")
        conn.execute(f"DELETE FROM {own}")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema),))


@pytest.mark.parametrize("per_statement", [3, 200_000])
def test_documents_indexed_in_the_shared_tables_move_to_their_own_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_statement: int
) -> None:
    """A database of schema 6 kept the documents' and submission sets' index rows with everyone's:
    the first open moves them, in one transaction, a few rows per statement, and a later one finds
    nothing left to move; every search still finds what it found."""
    monkeypatch.setattr(sqlite_store, "REFILED_ROWS", per_statement)
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _documents_of_two_patients(store)
    conn = store._conn()
    moved = {rid: _pk(conn, rtype, rid) for rtype, rid in (("DocumentReference", "d1"), ("List", "s1"))}
    rows = {rid: _index_rows(conn, RECORD.tables, pk) for rid, pk in moved.items()}
    patient_rows = _index_rows(conn, SHARED.tables, _pk(conn, "Patient", "p1"))
    assert min(rows.values()) > 3 and patient_rows > 0
    _as_written_by(conn, 6, RECORD)
    store.close()
    for _ in range(2):
        reopened = _sqlite(tmp_path)
        assert isinstance(reopened, SqliteStore)
        conn = reopened._conn()
        for rid, pk in moved.items():
            assert _index_rows(conn, RECORD.tables, pk) == rows[rid] and _index_rows(conn, SHARED.tables, pk) == 0
        assert _index_rows(conn, SHARED.tables, _pk(conn, "Patient", "p1")) == patient_rows
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        unique_id = Token("identifier", "urn:ietf:rfc:3986", "urn:oid:1.2.3.d3")
        assert [s.id for s in reopened.search(Query("DocumentReference", unique_id), OPEN_SCOPE).matches] == ["d3"]
        found = reopened.search(Query("List", Reference("subject", "Patient", "p1")), OPEN_SCOPE)
        assert [s.id for s in found.matches] == ["s1"]
        reopened.close()


def test_a_database_of_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    """A server never opens a database a newer one wrote: its rows may be in tables this one does
    not know, and recording this one's schema over it would lose them."""
    store = _sqlite(tmp_path)
    store.create(patient("p1", "Martin"))
    assert isinstance(store, SqliteStore)
    store._conn().execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    store.close()
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, written by a newer server"):
        _sqlite(tmp_path)
    with closing(open_database(tmp_path / "store.sqlite3")) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION + 1),
        )


def _reopened_with_every_row(tmp: Path) -> tuple[SqliteStore, sqlite3.Connection]:
    """The store on ``tmp`` opened again (upgrading it), with the trail's rows that start no
    search written too (they are written when read), and its connection."""
    reopened = _sqlite(tmp)
    assert isinstance(reopened, SqliteStore)
    reopened.complete_index()
    return reopened, reopened._conn()


def _as_before_the_trail_file(store: SqliteStore, tmp: Path, schema: int) -> int:
    """The database as a server of ``schema`` (before 8) left it: the trail's events in the main
    file, their index rows in its shared tables (before 3) or in ``trail_*`` tables of its own
    (3 to 7), and no trail's file. Returns how many index rows the event ``e1`` has."""
    conn = store._conn()
    family = SHARED if schema < 3 else TRAIL_IN_MAIN
    if schema >= 3:
        for table in TRAIL_IN_MAIN.tables:
            conn.execute(f"CREATE TABLE main.{table} AS SELECT * FROM trail.{table} WHERE 0")
    events = conn.execute("SELECT pk, id, content FROM resource WHERE type = 'AuditEvent'").fetchall()
    for pk, eid, blob in events:
        event = json.loads(store._open(f"AuditEvent/{eid}/1", blob))
        store._insert_rows(family, [(pk, store._index_rows(event))])
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema),))
    rows = _index_rows(conn, family.tables, _pk(conn, "AuditEvent", "e1"))
    store.close()
    for path in tmp.glob("store.sqlite3.trail*"):
        path.unlink()
    return rows


def test_a_trail_indexed_in_the_shared_tables_moves_to_its_own_file_once(tmp_path: Path) -> None:
    """A database of schema 2 kept the trail's index rows with everyone's: the first open takes
    them out of the shared tables and moves the events to the trail's file, their rows made anew
    there, and a later one finds nothing left to move. The value indexes of every trail reference
    (schema 3) are dropped: only the patient's have some."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _trail_of_two_patients(store)
    conn = store._conn()
    conn.execute("CREATE INDEX trail_reference_target ON idx_reference (target_id, target_type, param, res)")
    conn.execute("CREATE INDEX trail_reference_ident ON idx_reference (param, id_value) WHERE id_value IS NOT NULL")
    shared = _index_rows(conn, SHARED.tables, _pk(conn, "Patient", "p1"))
    rows = _as_before_the_trail_file(store, tmp_path, 2)
    assert rows > 10
    for _ in range(2):
        reopened, conn = _reopened_with_every_row(tmp_path)
        event = _pk(conn, "AuditEvent", "e1")
        assert event > TRAIL_KEYS_FROM and _index_rows(conn, TRAIL.tables, event) == rows
        orphans = "SELECT COUNT(*) FROM {} WHERE res NOT IN (SELECT pk FROM resource)"
        assert sum(conn.execute(orphans.format(table)).fetchone()[0] for table in SHARED.tables) == 0
        assert _index_rows(conn, SHARED.tables, _pk(conn, "Patient", "p1")) == shared
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
        assert not indexes & set(DROPPED_INDEXES)  # schema 3's gone
        found = reopened.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
        assert sorted(s.id for s in found.matches) == ["e1", "e2"]
        reopened.close()


def test_a_trail_in_the_main_file_moves_to_its_own_file_once(tmp_path: Path) -> None:
    """A database of schema 7 kept the trail in the main file, its index rows in ``trail_*``
    tables there: the first open drops those tables and moves the events to the trail's file,
    their rows made anew there; a later open finds nothing left to move, and the documents are
    where they were."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _trail_of_two_patients(store)
    rows = _as_before_the_trail_file(store, tmp_path, 7)
    for _ in range(2):
        reopened, conn = _reopened_with_every_row(tmp_path)
        event = _pk(conn, "AuditEvent", "e1")
        assert event > TRAIL_KEYS_FROM and _index_rows(conn, TRAIL.tables, event) == rows and _inboxed(reopened) == 0
        left = conn.execute("SELECT name FROM main.sqlite_schema WHERE name LIKE 'trail%' OR name LIKE 'index_p%'")
        assert left.fetchall() == []
        for meta in ("main.meta", "trail.meta"):
            version = conn.execute(f"SELECT value FROM {meta} WHERE key = 'schema_version'").fetchone()
            assert version == (str(SCHEMA_VERSION),)
        found = reopened.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
        assert sorted(s.id for s in found.matches) == ["e1", "e2"]
        found = reopened.search(Query("DocumentReference", Reference("subject", "Patient", "p1")), OPEN_SCOPE)
        assert [s.id for s in found.matches] == ["d1"]
        reopened.close()


def test_a_trail_of_schema_8_keeps_its_rows_and_lists_its_next_events_pending(tmp_path: Path) -> None:
    """A schema 8 trail has every event's rows and no list of pending ones: opened, it gets the
    list, its events are searched as they were, and the next ones moved in are listed."""
    store = _sqlite(tmp_path)
    assert isinstance(store, SqliteStore)
    _trail_of_two_patients(store)
    store.complete_index()
    conn = store._conn()
    conn.execute(f"DROP TABLE {TRAIL.pending}")
    for meta in ("main.meta", "trail.meta"):
        conn.execute(f"UPDATE {meta} SET value = '8' WHERE key = 'schema_version'")
    store.close()
    for _ in range(2):
        reopened = _sqlite(tmp_path)
        assert isinstance(reopened, SqliteStore)
        conn = reopened._conn()
        for meta in ("main.meta", "trail.meta"):
            version = conn.execute(f"SELECT value FROM {meta} WHERE key = 'schema_version'").fetchone()
            assert version == (str(SCHEMA_VERSION),)
        found = reopened.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "C")), OPEN_SCOPE)
        assert [s.id for s in found.matches] == ["e2"]
        reopened.close()
    reopened = _sqlite(tmp_path)
    assert isinstance(reopened, SqliteStore)
    reopened.log([trail_event("e4", "p1", "R", "2024-01-04T10:00:00Z")])
    assert reopened.read("AuditEvent", "e4", OPEN_SCOPE).id == "e4"
    listed = reopened._conn().execute(f"SELECT COUNT(*) FROM {TRAIL.pending}").fetchone()
    assert listed == (1,)
    reopened.close()


def test_a_trail_s_file_under_another_key_is_refused_naming_it(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)
    _trail_of_two_patients(store)
    store.close()
    shutil.copyfile(tmp_path / "store.sqlite3.key", tmp_path / "store.sqlite3.trail.key")  # the main file's
    with pytest.raises(MasterKeyError, match=r"store\.sqlite3\.trail does not open with its database key"):
        _sqlite(tmp_path)


def test_a_main_file_without_its_trail_s_file_is_refused(tmp_path: Path) -> None:
    """Served without its trail's file, a database would show an empty trail and begin a new one
    under a new key: it is refused, naming the missing file."""
    store = _sqlite(tmp_path)
    _trail_of_two_patients(store)
    store.close()
    for path in tmp_path.glob("store.sqlite3.trail*"):
        path.unlink()
    with pytest.raises(StoreError, match=r"the trail of .* is missing"):
        _sqlite(tmp_path)
    assert not list(tmp_path.glob("store.sqlite3.trail*"))  # nor an empty one made, under a new key
