"""Copy a SQLite store into a MongoDB one, resumably, and prove the copy.

Everything that lasts is copied — resources with every version, the search index, the trail
(AuditEvents are resources), the private records, the outbox — as stored: sealed blobs move byte
for byte (both backends bind them to the same associated data, :mod:`storage.sealing`), so the
master keys are never used and never leave the data directory. Paging sessions are not copied:
they expire within minutes.

Resumable: resources go in creation order, each batch as idempotent upserts (in one transaction
where the cluster has them); a rerun starts again from the last resource present in MongoDB.
Verified: the number of resources, versions, records and queued messages, and a SHA-256 digest of
each, computed the same way on both sides, must be equal.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pymongo import ASCENDING

from fhirmodel.indexing import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from storage.crypto import is_sealed
from storage.mongo.layout import (
    COUNTERS,
    OUTBOX,
    RECORDS,
    RESOURCES,
    VERSIONS,
    index_document,
    patient_key,
    record_key,
    resource_document,
    version_document,
)
from storage.mongo.store import MongoStore
from storage.sqlite.connection import Attached, DatabaseKey, connect_read_only
from storage.sqlite.schema import (
    COLUMN_NAMES,
    PENDING_SINCE,
    TRAIL,
    TRAIL_FILE_SINCE,
    TRAIL_SCHEMA,
    TRAIL_TYPES_SQL,
    VERSION_CONTENT,
    IndexFamily,
    family_of,
    trail_file,
)

#: How a row of each kind of SQLite index table (its :data:`COLUMN_NAMES`) becomes a typed value.
_VALUES: dict[str, Callable[..., IndexValue]] = {
    "token": TokenValue,
    "string": StringValue,
    "date": DateValue,
    "number": NumberValue,
    "quantity": QuantityValue,
    "reference": ReferenceValue,
    "uri": UriValue,
}

#: Reports progress: (what, done, of how many).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Tally:
    """What one side holds: counts and digests per kind."""

    counts: dict[str, int]
    digests: dict[str, str]


def _kid(blob: bytes | None) -> dict[str, Any]:
    """The ``kid`` field beside a sealed blob (read from its header, never opened)."""
    if blob is None or not is_sealed(blob):
        return {}
    kid_length = blob[5]
    return {"kid": blob[6 : 6 + kid_length].decode("ascii")}


class Migration:
    def __init__(
        self,
        sqlite_path: Path,
        target: MongoStore,
        *,
        key: DatabaseKey | None = None,
        trail_key: DatabaseKey | None = None,
        batch: int = 500,
    ):
        self._path = sqlite_path
        self._key = key  # the SQLite database's own key (it is encrypted as a whole), None for an older plain file
        self._trail_key = trail_key  # and its trail's file's
        self._target = target
        self._db = target.database
        self._batch = batch

    def _source(self) -> sqlite3.Connection:
        """The source, read only, its trail's file attached (since schema 8): ``every_resource``
        and ``every_version`` are both files' rows, whose keys never meet
        (:data:`~storage.sqlite.schema.TRAIL_KEYS_FROM`). A trail's event still waiting in the
        main file has no index rows yet: the source must have been opened by a store first (the
        command does), which moves them."""
        trail = Path(trail_file(str(self._path)))
        attached = Attached(TRAIL_SCHEMA, f"file:{trail}?mode=ro", self._trail_key, 1.0) if trail.exists() else None
        conn = connect_read_only(self._path, self._key, attached)
        for table in ("resource", "version"):
            files = f"SELECT * FROM main.{table}" + (f" UNION ALL SELECT * FROM trail.{table}" if attached else "")
            conn.execute(f"CREATE TEMP VIEW every_{table} AS {files}")
        if attached and conn.execute(f"SELECT 1 FROM main.resource WHERE type IN ({TRAIL_TYPES_SQL})").fetchone():
            conn.close()
            raise ValueError(f"{self._path} holds events not moved to its trail's file: open it with a store first")
        if attached and _lazy_rows_left(conn):
            conn.close()
            raise ValueError(f"{self._path} holds trail events whose index is not written: open it with a store first")
        return conn

    def run(self, progress: Progress) -> None:
        with closing(self._source()) as conn:
            self._resources(conn, progress)
            self._records(conn, progress)
            self._outbox(conn, progress)
            self._counters(conn)

    def _resume_point(self) -> int:
        last = self._db[RESOURCES].find_one({}, {"pk": 1}, sort=[("pk", -1)])
        return int(last["pk"]) if last else 0

    def _resources(self, conn: sqlite3.Connection, progress: Progress) -> None:
        total = int(conn.execute("SELECT COUNT(*) FROM every_resource").fetchone()[0])
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        schema = 0 if row is None else int(row[0])
        pending = PENDING_SINCE <= schema < TRAIL_FILE_SINCE
        start = self._resume_point()
        after = start - 1  # the last one present is copied again: its batch may not have finished
        while True:
            rows = conn.execute(
                "SELECT pk, type, id, version, last_updated, deleted, content FROM every_resource"
                " WHERE pk > ? ORDER BY pk LIMIT ?",
                (after, self._batch),
            ).fetchall()
            if not rows:
                break
            resources, versions = [], []
            for pk, rtype, rid, version, updated, deleted, content in rows:
                index = self._index(conn, pk, family_of(rtype, schema), pending)
                key = patient_key(rtype, rid, index)
                blob = None if content is None else bytes(content)
                sealed = {"content": blob, **_kid(blob)}
                head = resource_document(pk, rtype, rid, version, updated, bool(deleted), key, sealed)
                resources.append({**head, **index_document(index)})
                for seq, number, stamp, method, body in conn.execute(
                    f"SELECT v.seq, v.version, v.last_updated, v.method, {VERSION_CONTENT}"
                    " FROM every_version v JOIN every_resource r ON r.pk = v.res WHERE v.res = ? ORDER BY v.seq",
                    (pk,),
                ):
                    kept = None if body is None else bytes(body)
                    sealed = {"content": kept, **_kid(kept)}
                    versions.append(version_document(seq, pk, rtype, rid, number, stamp, method, key, sealed))
            with self._target.transaction():
                session = self._target.session
                self._upsert(RESOURCES, resources, session)
                self._upsert(VERSIONS, versions, session)
            after = rows[-1][0]
            done = int(conn.execute("SELECT COUNT(*) FROM every_resource WHERE pk <= ?", (after,)).fetchone()[0])
            progress("resources", done, total)
        progress("resources", total, total)

    def _upsert(self, collection: str, docs: list[dict[str, Any]], session: Any) -> None:
        """Idempotent upserts, one per document (``bulk_write`` would save round trips on a real
        server; mongomock cannot run pymongo 4's bulk operations)."""
        for doc in docs:
            self._db[collection].replace_one(_filter(doc), doc, upsert=True, session=session)

    @staticmethod
    def _index(conn: sqlite3.Connection, pk: int, family: IndexFamily, pending: bool) -> dict[str, list[IndexValue]]:
        """A resource's index values: its rows in its family's tables, or those still waiting to
        be written there (:attr:`IndexFamily.deferred`), which have the same shape."""
        rows: dict[str, Iterable[Any]] = {}
        waiting = conn.execute("SELECT rows FROM index_pending WHERE res = ?", (pk,)).fetchone() if pending else None
        if waiting is not None:
            rows = orjson.loads(waiting[0])
        else:
            for kind in _VALUES:
                columns, table = COLUMN_NAMES[kind], family.table(kind)
                rows[kind] = conn.execute(f"SELECT param, {columns} FROM {table} WHERE res = ?", (pk,))
        index: dict[str, list[IndexValue]] = {}
        for kind, kind_rows in rows.items():
            for param, *values in kind_rows:
                index.setdefault(param, []).append(_VALUES[kind](*values))
        return index

    def _records(self, conn: sqlite3.Connection, progress: Progress) -> None:
        rows = conn.execute("SELECT kind, key, expires, value FROM record ORDER BY kind, key").fetchall()
        docs = []
        for kind, key, expires, value in rows:
            blob = bytes(value)
            doc = {"_id": record_key(kind, key), "kind": kind, "key": key, "expires": expires, "value": blob}
            docs.append({**doc, **_kid(blob)})
        for start in range(0, len(docs), self._batch):
            self._upsert(RECORDS, docs[start : start + self._batch], None)
        progress("records", len(docs), len(docs))

    def _outbox(self, conn: sqlite3.Connection, progress: Progress) -> None:
        rows = conn.execute(
            "SELECT id, topic, created, payload, attempts, due FROM outbox WHERE delivered IS NULL ORDER BY id"
        ).fetchall()
        docs = []
        for message_id, topic, created, payload, attempts, due in rows:
            blob = bytes(payload)
            doc = {"_id": message_id, "topic": topic, "created": created, "attempts": attempts, "due": due}
            docs.append({**doc, "payload": blob, **_kid(blob)})
        self._upsert(OUTBOX, docs, None)
        progress("outbox", len(docs), len(docs))

    def _counters(self, conn: sqlite3.Connection) -> None:
        """The sequences go on from the source's: numbers are never reused."""
        highest = {
            "pk": "SELECT COALESCE(MAX(pk), 0) FROM every_resource",
            "seq": "SELECT COALESCE(MAX(seq), 0) FROM every_version",
            "outbox": "SELECT COALESCE(MAX(id), 0) FROM outbox",
        }
        for counter, sql in highest.items():
            value = int(conn.execute(sql).fetchone()[0])
            self._db[COUNTERS].update_one({"_id": counter}, {"$max": {"n": value}}, upsert=True)

    # -- verification -----------------------------------------------------------------------

    def source_tally(self) -> Tally:
        with closing(self._source()) as conn:
            streams = {
                "resources": conn.execute(
                    "SELECT type, id, version, deleted, content FROM every_resource ORDER BY type, id"
                ),
                "versions": conn.execute(
                    f"SELECT r.type, r.id, v.version, v.method, {VERSION_CONTENT} FROM every_version v"
                    " JOIN every_resource r ON r.pk = v.res ORDER BY v.seq"
                ),
                "records": conn.execute("SELECT kind, key, expires, value FROM record ORDER BY kind, key"),
                "outbox": conn.execute(
                    "SELECT id, topic, attempts, due, payload FROM outbox WHERE delivered IS NULL ORDER BY id"
                ),
            }
            return _tally({name: (tuple(row) for row in rows) for name, rows in streams.items()})

    def target_tally(self) -> Tally:
        db = self._db
        fields = {
            "resources": (RESOURCES, ("type", "id", "version", "deleted", "content"), [("type", 1), ("id", 1)]),
            "versions": (VERSIONS, ("type", "id", "version", "method", "content"), [("_id", 1)]),
            "records": (RECORDS, ("kind", "key", "expires", "value"), [("kind", 1), ("key", 1)]),
            "outbox": (OUTBOX, ("_id", "topic", "attempts", "due", "payload"), [("_id", ASCENDING)]),
        }
        streams = {
            name: _rows(db[collection].find({}).sort(order), names)
            for name, (collection, names, order) in fields.items()
        }
        return _tally(streams)


def _rows(docs: Iterable[dict[str, Any]], names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    for doc in docs:
        yield tuple(doc.get(name) for name in names)


def _filter(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": doc["_id"], "pkey": doc["pkey"]} if "pkey" in doc else {"_id": doc["_id"]}


def _tally(streams: Mapping[str, Iterator[tuple[Any, ...]]]) -> Tally:
    counts, digests = {}, {}
    for name, rows in streams.items():
        digest, count = hashlib.sha256(), 0
        for row in rows:
            digest.update(_canonical(row))
            count += 1
        counts[name], digests[name] = count, digest.hexdigest()
    return Tally(counts, digests)


def _canonical(row: tuple[Any, ...]) -> bytes:
    """One row as bytes, the same from SQLite and from MongoDB (booleans as 0/1, blobs as is)."""
    out = bytearray()
    for value in row:
        if isinstance(value, bool):
            value = int(value)
        raw = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else repr(value).encode()
        out += len(raw).to_bytes(8, "big") + raw
    return bytes(out)


def _lazy_rows_left(conn: sqlite3.Connection) -> bool:
    """Whether the source's trail lists events whose rows that start no search are not written yet
    (:attr:`~storage.sqlite.schema.IndexFamily.lazy`; a trail of schema 9 on)."""
    listed = conn.execute(
        "SELECT 1 FROM trail.sqlite_master WHERE type = 'table' AND name = ?", (f"{TRAIL.prefix}_pending",)
    )
    if listed.fetchone() is None:
        return False
    return conn.execute(f"SELECT 1 FROM {TRAIL.pending} LIMIT 1").fetchone() is not None
