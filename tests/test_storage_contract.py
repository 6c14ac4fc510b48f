"""The contract every store backend honours, run against each backend available here.

Written against :class:`storage.interface.Store` only, so that a new backend (MongoDB) is
accepted by adding it to ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.config import PROJECT_ROOT
from fhir_server.service import SERVED_TYPES
from fhirmodel.indexing import IndexValue, extract_index
from fhirmodel.searchparams import SearchParamRegistry
from storage.interface import AlreadyExists, Gone, NotFound, Store, VersionConflict
from storage.query import (
    ANY_SYSTEM,
    EVERYTHING,
    NOTHING,
    OPEN_SCOPE,
    Expr,
    Include,
    Query,
    Reference,
    SortKey,
    String,
    Token,
)
from storage.sqlite.store import Indexer, SqliteStore

REGISTRY = SearchParamRegistry.load(PROJECT_ROOT / "ig" / "SearchParameter", SERVED_TYPES)
BASE = "http://127.0.0.1:8080/fhir"


def _param_type(rtype: str, code: str) -> str | None:
    param = REGISTRY.get(rtype, code)
    return param.type if param else None


def _index(resource: dict[str, Any]) -> dict[str, list[IndexValue]]:
    return extract_index(REGISTRY, resource, BASE)


def _sqlite(tmp: Path, indexer: Indexer = _index) -> Store:
    return SqliteStore(tmp / "store.sqlite3", indexer, _param_type, SERVED_TYPES)


BACKENDS: dict[str, Callable[..., Store]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Callable[..., Store]:
    return BACKENDS[request.param]


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
    assert store.search(query, Scope({"DocumentReference": NOTHING})).total == 0


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
    assert reopened.pending("alert") == [(first, b"one")]
    reopened.acknowledge(first)
    assert reopened.pending("alert") == []
    assert [p for _, p in reopened.pending("other")] == [b"elsewhere"]
    reopened.close()


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
