"""MongoDB for the tests: ``mongomock``, plus a thin double for what it lacks; or a real server.

No ``mongod`` can be installed on the CI machines, so the MongoDB store runs on ``mongomock``,
an in-memory implementation of the pymongo API that evaluates real MongoDB query documents,
aggregation stages and indexes' uniqueness. What mongomock does **not** provide, and this module
stands in for, and nothing else:

- ``hello``: the double answers as a replica set member (``setName``), or as a standalone.
- sessions and multi-document transactions: ``start_session()`` gives a :class:`FakeSession`
  whose transaction snapshots every collection (but the counters, which the store deliberately
  increments outside transactions) when it starts and puts the snapshot back on abort. Every
  read and write made while a transaction is open must carry that session — the double fails the
  test otherwise — so the store's session plumbing is checked, not assumed. It gives atomicity
  only: other clients are not isolated from uncommitted writes (there are none in these tests),
  and there are no write conflicts, retries or ``majority`` acknowledgements to observe.
- ``compact``: mongomock has no commands; the store reports it as not done.

With ``DMP_TEST_MONGODB_URI`` set (a replica set; a sharded cluster for the shard-key tests),
:func:`mongo_client` returns a real client instead and the same tests run against it.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mongomock
from pymongo import MongoClient

#: A real server to test against (``mongodb://host:27017/?replicaSet=rs0``), when set.
REAL_URI = os.environ.get("DMP_TEST_MONGODB_URI")
COUNTERS = "counters"


class FakeSession:
    """A session whose transaction is a snapshot of the database, restored on abort."""

    def __init__(self, client: DoubleClient):
        self._client = client
        self._snapshot: dict[str, dict[str, list[dict[str, Any]]]] | None = None
        self.options: dict[str, Any] = {}

    def start_transaction(self, **options: Any) -> None:
        assert self._snapshot is None, "a transaction is already open on this session"
        self.options = options
        self._snapshot = {name: _dump(db) for name, db in self._client.databases().items()}
        self._client.active = self

    def commit_transaction(self) -> None:
        self._end()

    def abort_transaction(self) -> None:
        snapshot = self._end()
        for name, collections in snapshot.items():
            db = self._client.databases()[name]
            for collection in db.list_collection_names():
                if collection != COUNTERS:
                    db[collection].delete_many({})
            for collection, docs in collections.items():
                if docs:
                    db[collection].insert_many(docs)

    def _end(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        assert self._snapshot is not None, "no transaction is open on this session"
        snapshot, self._snapshot, self._client.active = self._snapshot, None, None
        return snapshot

    def end_session(self) -> None:
        """As pymongo does, ending a session aborts the transaction it still has open (one whose
        commit failed)."""
        if self._snapshot is not None:
            self.abort_transaction()


def _dump(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: list(db[name].find()) for name in db.list_collection_names() if name != COUNTERS}


class DoubleCollection:
    """A mongomock collection that takes (and checks) the ``session`` argument."""

    def __init__(self, client: DoubleClient, collection: Any):
        self._client = client
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._collection, name)
        if not callable(method):
            return method

        def call(*args: Any, session: Any = None, **kwargs: Any) -> Any:
            active = self._client.active
            if active is not None and self._collection.name != COUNTERS:
                assert session is active, f"{self._collection.name}.{name} outside the open transaction's session"
            return method(*args, **kwargs)

        return call


class DoubleDatabase:
    def __init__(self, client: DoubleClient, db: Any):
        self._client = client
        self._db = db

    def __getitem__(self, name: str) -> DoubleCollection:
        return DoubleCollection(self._client, self._db[name])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def command(self, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if name == "hello":
            return {"isWritablePrimary": True, **({"setName": "rs0"} if self._client.replica_set else {})}
        raise NotImplementedError(f"mongomock has no {name!r} command")


class DoubleClient:
    """A mongomock client with the double's ``hello`` and sessions; ``close`` keeps the data, so
    that a store reopened on the same client sees what the first one wrote."""

    def __init__(self, url: str | None = None, *, replica_set: bool = True, **options: Any):
        self._client = mongomock.MongoClient()
        self.replica_set = replica_set
        self.active: FakeSession | None = None
        self.admin = DoubleDatabase(self, self._client.admin)

    def __getitem__(self, name: str) -> DoubleDatabase:
        return DoubleDatabase(self, self._client[name])

    def databases(self) -> dict[str, Any]:
        return {name: self._client[name] for name in self._client.list_database_names()}

    def start_session(self) -> FakeSession:
        if not self.replica_set:
            raise AssertionError("a standalone mongod has no transactions: the store must not ask for one")
        return FakeSession(self)

    def close(self) -> None:
        pass


def mongo_url(database: str) -> str:
    """A ``DMP_STORE`` URL naming ``database``: on the real server when there is one (its own
    database per test), else one the double answers (see :func:`use_double`)."""
    if not REAL_URI:
        return f"mongodb://mongomock.invalid/{database}"
    parts = urlsplit(REAL_URI)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def use_double(monkeypatch: Any) -> None:
    """Without a real server, ``DMP_STORE=mongodb://…`` opens the double (a replica set)."""
    if not REAL_URI:
        monkeypatch.setattr("storage.mongo.connect.MongoClient", DoubleClient)


def drop(url: str) -> None:
    """Drop a test's database on the real server (the double's vanishes with it)."""
    if REAL_URI:
        with MongoClient(url) as client:
            client.drop_database(urlsplit(url).path.strip("/"))


def mongo_client(*, replica_set: bool = True) -> Any:
    """A client for one test: the real server when ``DMP_TEST_MONGODB_URI`` is set, else the double
    (a replica set member, or a standalone server that has no sessions)."""
    if REAL_URI:
        return MongoClient(REAL_URI, w="majority", readConcernLevel="majority", retryWrites=True)
    return DoubleClient(replica_set=replica_set)
