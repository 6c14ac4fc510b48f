"""The MongoDB store: the same :class:`~storage.interface.Store` on a replica set or a sharded
cluster (layout in :mod:`storage.mongo.layout`, queries in :mod:`storage.mongo.compiler`).

Content is sealed exactly as in SQLite (:mod:`storage.crypto`, the same associated data: a blob
copied from one backend to the other opens unchanged) before it reaches MongoDB. The index
arrays are not encrypted: they hold the values the queries compare (``docs/mongodb.md`` says
which, and how MongoDB's own client-side field-level encryption can cover the equality ones).

Sequence numbers (``pk`` per resource, ``seq`` per version, outbox ids) come from counters
incremented *outside* the caller's transaction: inside it, every two concurrent writers would
conflict on the counter document. A rolled-back transaction leaves a gap; a write committing after
a search began may carry a number below its watermark (``docs/mongodb.md``, "Where it differs").

Why one module of ~650 lines: it is the one class implementing every method of the ``Store``
interface over the same collections, sessions and sealing; the layout, the query compiler, the
transactions and the migration live in their own modules.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.database import Database

from fhirmodel.dates import instant_now
from fhirmodel.indexing import IndexValue
from storage.crypto import EnvelopeCipher, MasterKeyError
from storage.includes import follow_includes
from storage.interface import (
    AlreadyExists,
    Gone,
    HistoryPage,
    NotFound,
    Queued,
    SearchResult,
    Store,
    Stored,
    StoreError,
    VersionConflict,
    Watermark,
)
from storage.mongo.compiler import NEVER, MongoCompiler, ParamType, both, shard_hint
from storage.mongo.layout import (
    COUNTERS,
    INDEX_FIELDS,
    INDEXES,
    META,
    OUTBOX,
    PAGING,
    RECORDS,
    RESOURCES,
    SCHEMA_VERSION,
    SORT_KEYS,
    VERSIONS,
    index_document,
    patient_key,
    record_key,
    resource_document,
    resource_key,
    version_document,
)
from storage.mongo.unit import UnitOfWork
from storage.query import AccessScope, Everything, Include, Nothing, Query, SortKey, all_of
from storage.sealing import (
    DEFLATED_TYPES,
    check_keys,
    open_blob,
    outbox_aad,
    record_aad,
    resource_aad,
    sealed_mark,
    session_aad,
)
from storage.stamp import stamp

Indexer = Callable[[dict[str, Any]], dict[str, list[IndexValue]]]

#: Where a sealed blob is, per collection: (collection, field). Each document has one, and its
#: master key id beside it in ``kid`` (so that key accounting reads an index, not every blob).
_SEALED_FIELDS = (
    (RESOURCES, "content"),
    (VERSIONS, "content"),
    (PAGING, "data"),
    (OUTBOX, "payload"),
    (RECORDS, "value"),
)
#: What a search reads of a match: everything but the index arrays.
_CURRENT_FIELDS = {"pk": 1, "type": 1, "id": 1, "version": 1, "updated": 1, "content": 1}


class MongoStore(Store):
    def __init__(
        self,
        client: MongoClient[Any],
        database: str,
        indexer: Indexer,
        param_type: ParamType,
        resource_types: tuple[str, ...],
        cipher: EnvelopeCipher | None = None,
        *,
        transactions: bool = True,
    ):
        self.name = database
        self._where = f"MongoDB database {database!r}"
        self._client = client
        self._db: Database[Any] = client[database]
        self._indexer = indexer
        self._param_type = param_type
        self._resource_types = resource_types
        self._cipher = cipher
        self._unit = UnitOfWork(client, self._db, transactions=transactions)
        self._create_indexes()
        self._check_keys()

    def _create_indexes(self) -> None:
        for collection, indexes in INDEXES.items():
            for name, keys, options in indexes:
                self._db[collection].create_index(keys, name=name, **options)
        self._db[META].update_one({"_id": "schema_version"}, {"$max": {"value": SCHEMA_VERSION}}, upsert=True)

    def _check_keys(self) -> None:
        """Refuse to start when the data and the keys do not belong together (as SQLite does)."""
        newest = self._db[VERSIONS].find_one({"content": {"$ne": None}}, sort=[("_id", DESCENDING)])
        check_keys(None if newest is None else bytes(newest["content"]), self._cipher, self._where)

    # -- encryption --------------------------------------------------------------------------

    def _seal(self, aad: str, plaintext: bytes, deflate: bool) -> dict[str, Any]:
        """The fields of a sealed blob: the blob and its master key id."""
        if self._cipher is None:
            return {"blob": plaintext}
        blob = self._cipher.seal(plaintext, aad.encode(), deflate=deflate)
        return {"blob": blob, "kid": self._cipher.kid_of(blob)}

    def _open(self, aad: str, blob: bytes) -> bytes:
        return open_blob(self._cipher, aad, blob, self._where)

    def _sealed(self, field_name: str, aad: str, plaintext: bytes | None, *, deflate: bool = False) -> dict[str, Any]:
        if plaintext is None:
            return {field_name: None}
        sealed = self._seal(aad, plaintext, deflate)
        return {field_name: sealed["blob"], **({"kid": sealed["kid"]} if "kid" in sealed else {})}

    def _stored(self, doc: dict[str, Any], version_doc: dict[str, Any] | None = None) -> Stored:
        """A :class:`Stored` from a resource document (the current version) or a version's."""
        source = version_doc or doc
        content = source.get("content")
        version = int(source["version"])
        if content is not None:
            content = self._open(resource_aad(doc["type"], doc["id"], version), content)
        seq = int(version_doc["_id"]) if version_doc else None
        method = version_doc["method"] if version_doc else None
        return Stored(int(doc["pk"]), seq, doc["type"], doc["id"], version, source["updated"], method, content)

    # -- sessions and transactions -----------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        return self._unit.unit()

    def in_transaction(self) -> bool:
        return self._unit.active

    @property
    def _session(self) -> Any:
        return self._unit.session

    @property
    def session(self) -> Any:
        """The session of the current thread's transaction (None outside one): for the migration,
        which writes raw documents inside the store's transactions."""
        return self._unit.session

    @property
    def database(self) -> Database[Any]:
        return self._db

    def start_upkeep(self) -> None:
        """Nothing: the MongoDB server keeps its own journal and checkpoints."""

    def close(self) -> None:
        self._client.close()

    def _next(self, counter: str) -> int:
        """The next number of a counter; outside the caller's transaction (see the module doc)."""
        doc = self._db[COUNTERS].find_one_and_update(
            {"_id": counter}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None  # an upsert returning the document after it always finds one
        return int(doc["n"])

    def _last(self, counter: str) -> int:
        doc = self._db[COUNTERS].find_one({"_id": counter}, session=self._session)
        return int(doc["n"]) if doc else 0

    def _insert(self, collection: str, doc: dict[str, Any]) -> None:
        self._unit.remember(collection, doc["_id"], None)
        self._db[collection].insert_one(doc, session=self._session)

    def _replace(self, collection: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Replace a document; the filter names its old patient key, which a sharded cluster needs
        to move it to another shard when the key changes."""
        self._unit.remember(collection, before["_id"], before)
        self._db[collection].replace_one(_located(before), after, session=self._session)

    def _remove(self, collection: str, before: dict[str, Any]) -> None:
        self._unit.remember(collection, before["_id"], before)
        self._db[collection].delete_one(_located(before), session=self._session)

    def _find(self, collection: str, query: dict[str, Any], projection: dict[str, Any] | None = None) -> Any:
        return self._db[collection].find(query, projection, session=self._session)

    def _resource_doc(self, rtype: str, rid: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._db[RESOURCES].find_one(
            {"_id": resource_key(rtype, rid)}, session=self._session
        )
        return doc

    # -- writes ------------------------------------------------------------------------------

    def _before(self, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        """The content a write replaces, opened only for the observers of its type (None: deleted)."""
        if doc is None or doc["deleted"] or not self.watched(doc["type"]):
            return None
        return self._stored(doc).json()

    def _write(self, resource: dict[str, Any], before: dict[str, Any] | None, method: str) -> Stored:
        """Store a new live version over ``before`` (None: a new resource)."""
        rtype, rid = resource["resourceType"], resource["id"]
        version = int(before["version"]) + 1 if before else 1
        pk = int(before["pk"]) if before else self._next("pk")
        replaced = self._before(before)
        content, updated = stamp(resource, version)
        index = self._indexer(resource)
        key = patient_key(rtype, rid, index)
        sealed = self._sealed("content", resource_aad(rtype, rid, version), content, deflate=rtype in DEFLATED_TYPES)
        doc = {**resource_document(pk, rtype, rid, version, updated, False, key, sealed), **index_document(index)}
        if before is None:
            self._insert(RESOURCES, doc)
        else:
            self._replace(RESOURCES, before, doc)
            if before.get("pkey") != key:
                self._move_versions(pk, key)
        seq = self._write_version(pk, rtype, rid, version, updated, method, sealed, key)
        self._observed(rtype, replaced, resource)
        return Stored(pk, seq, rtype, rid, version, updated, method, content)

    def _write_version(
        self, pk: int, rtype: str, rid: str, version: int, updated: str, method: str, sealed: dict[str, Any], key: str
    ) -> int:
        seq = self._next("seq")
        self._insert(VERSIONS, version_document(seq, pk, rtype, rid, version, updated, method, key, sealed))
        return seq

    def _move_versions(self, pk: int, key: str) -> None:
        """A resource whose patient changed takes its versions along: a record stays on one shard.
        One document at a time, as a shard key change must be."""
        for before in list(self._find(VERSIONS, {"res": pk})):
            self._replace(VERSIONS, before, {**before, "pkey": key})

    def create(self, resource: dict[str, Any], *, method: str = "POST") -> Stored:
        with self.transaction():
            rtype, rid = resource["resourceType"], resource["id"]
            if self._resource_doc(rtype, rid) is not None:
                raise AlreadyExists(f"{rtype}/{rid} already exists")
            return self._write(resource, None, method)

    def update(self, resource: dict[str, Any], *, expected_version: int | None = None, method: str = "PUT") -> Stored:
        with self.transaction():
            rtype, rid = resource["resourceType"], resource["id"]
            before = self._resource_doc(rtype, rid)
            if before is None:
                raise NotFound(f"{rtype}/{rid} does not exist")
            if expected_version is not None and expected_version != before["version"]:
                raise VersionConflict(f"{rtype}/{rid} is at version {before['version']}, not {expected_version}")
            return self._write(resource, before, method)

    def delete(self, resource_type: str, resource_id: str, *, expected_version: int | None = None) -> Stored:
        with self.transaction():
            before = self._resource_doc(resource_type, resource_id)
            if before is None:
                raise NotFound(f"{resource_type}/{resource_id} does not exist")
            version = int(before["version"])
            if expected_version is not None and expected_version != version:
                raise VersionConflict(f"{resource_type}/{resource_id} is at version {version}")
            if before["deleted"]:
                raise Gone(resource_type, resource_id, version)
            replaced = self._before(before)
            updated = instant_now()
            # The index of the last live version stays: it lets the access filter decide whether
            # the caller may learn that this resource was deleted (410) or not (404).
            after = {**before, "version": version + 1, "updated": updated, "deleted": True, "content": None}
            after.pop("kid", None)
            self._replace(RESOURCES, before, after)
            pk, key = int(before["pk"]), str(before["pkey"])
            seq = self._write_version(
                pk, resource_type, resource_id, version + 1, updated, "DELETE", {"content": None}, key
            )
            self._observed(resource_type, replaced, None)
            return Stored(pk, seq, resource_type, resource_id, version + 1, updated, "DELETE", None)

    def expunge(self, resource_type: str, resource_id: str) -> int:
        """Delete the resource's document (its index values with it) and every version."""
        with self.transaction():
            before = self._resource_doc(resource_type, resource_id)
            if before is None:
                return 0
            replaced = self._before(before)
            versions = list(self._find(VERSIONS, {"res": before["pk"], "pkey": before["pkey"]}))
            for version in versions:
                self._remove(VERSIONS, version)
            self._remove(RESOURCES, before)
            self._observed(resource_type, replaced, None)
            return len(versions)

    def compact(self) -> str:
        """WiredTiger's ``compact`` on each collection gives freed space back to the file system.

        It does not overwrite what was freed, and MongoDB keeps other copies (the oplog until it
        wraps, secondaries until they compact, backups): ``docs/mongodb.md`` says what an operator
        purging data must also do.
        """
        done, refused = [], []
        for collection in (RESOURCES, VERSIONS, PAGING, OUTBOX, RECORDS):
            try:
                self._db.command("compact", collection)
                done.append(collection)
            except Exception as exc:
                refused.append(f"{collection} ({exc})")
        if refused:
            return f"compacted {', '.join(done) or 'nothing'}; not compacted: {'; '.join(refused)}"
        return f"compacted {', '.join(done)} on this member; run it on every replica set member too"

    # -- reads -------------------------------------------------------------------------------

    def _compiler(self, scope: AccessScope) -> MongoCompiler:
        return MongoCompiler(self._param_type, scope.filter, lambda q, p: self._find(RESOURCES, q, p))

    def _visible(self, doc: dict[str, Any], scope: AccessScope) -> bool:
        """Whether the scope lets the caller see this resource: asked of the database, the
        resource's own key and the scope's filter in one query."""
        rtype = doc["type"]
        expr = scope.filter(rtype)
        if isinstance(expr, Everything):
            return True
        if isinstance(expr, Nothing):
            return False
        base = {"_id": doc["_id"]}
        condition = self._compiler(scope).filter(expr, rtype, base)
        if condition is NEVER:
            return False
        return self._db[RESOURCES].count_documents(both(base, condition), limit=1, session=self._session) > 0

    def exists(self, resource_type: str, resource_id: str) -> int | None:
        doc = self._resource_doc(resource_type, resource_id)
        return int(doc["version"]) if doc else None

    def read(self, resource_type: str, resource_id: str, scope: AccessScope) -> Stored:
        doc = self._resource_doc(resource_type, resource_id)
        if doc is None or not self._visible(doc, scope):
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        stored = self._stored(doc)
        if stored.deleted:
            raise Gone(resource_type, resource_id, stored.version)
        return stored

    def vread(self, resource_type: str, resource_id: str, version: int, scope: AccessScope) -> Stored:
        doc = self._resource_doc(resource_type, resource_id)
        found = None
        if doc is not None:
            query = {"res": doc["pk"], "pkey": doc["pkey"], "version": version}
            found = self._db[VERSIONS].find_one(query, session=self._session)
        if doc is None or found is None or not self._visible(doc, scope):
            raise NotFound(f"{resource_type}/{resource_id}/_history/{version} is not known")
        return self._stored(doc, found)

    def _base(self, rtype: str, watermark: int | None, deleted: bool) -> dict[str, Any]:
        base: dict[str, Any] = {"type": rtype}
        if not deleted:
            base["deleted"] = False
        if watermark is not None:
            base["pk"] = {"$lte": watermark}
        return base

    def search(self, query: Query, scope: AccessScope) -> SearchResult:
        rtype = query.resource_type
        expr = all_of(query.where, scope.filter(rtype))
        if isinstance(query.watermark, list):
            raise StoreError("a search's watermark is one number here")
        watermark = query.watermark if query.watermark is not None else self._last("pk")
        if isinstance(expr, Nothing):
            return SearchResult([], [], 0 if query.total else None, watermark)
        base = self._base(rtype, watermark, query.deleted)
        hint = shard_hint(expr, rtype)
        if hint is not None:  # routed to the shards of these patients only
            base["pkey"] = {"$in": sorted(hint)}
        condition = self._compiler(scope).filter(expr, rtype, base)
        if condition is NEVER:
            return SearchResult([], [], 0 if query.total else None, watermark)
        where = both(base, condition)
        coll = self._db[RESOURCES]
        total = coll.count_documents(where, session=self._session) if query.total else None
        matches: list[Stored] = []
        if query.count > 0 and (total is None or total > query.offset):
            docs = self._page(where, rtype, query.sort, query.offset, query.count)
            matches = [self._stored(doc) for doc in docs]
        included = self._includes(matches, query.includes, scope) if query.includes else []
        return SearchResult(matches, included, total, watermark)

    def _page(self, where: dict[str, Any], rtype: str, sort: tuple[SortKey, ...], offset: int, count: int) -> Any:
        """One page in sort order: by the sort parameters' values (missing last), then creation."""
        coll = self._db[RESOURCES]
        keys: dict[str, Any] = {}
        stages: list[dict[str, Any]] = [{"$match": where}]
        for n, key in enumerate(sort):
            if self._param_type(rtype, key.param) is None:
                continue
            path = f"{SORT_KEYS}.{key.param}"
            missing = {"$cond": [{"$eq": [{"$ifNull": [f"${path}", None]}, None]}, 1, 0]}
            stages.append({"$addFields": {f"_m{n}": missing}})
            keys[f"_m{n}"] = ASCENDING  # missing last, either way
            keys[f"{path}.{'d' if key.descending else 'a'}"] = DESCENDING if key.descending else ASCENDING
        if not keys:
            return (
                coll.find(where, _CURRENT_FIELDS, session=self._session).sort("pk", ASCENDING).skip(offset).limit(count)
            )
        keys["pk"] = ASCENDING
        stages += [{"$sort": keys}, {"$skip": offset}, {"$limit": count}, {"$project": _CURRENT_FIELDS}]
        # The missing-last flags are computed: a large result is sorted on disk rather than refused.
        return coll.aggregate(stages, session=self._session, allowDiskUse=True)

    def _includes(self, matches: list[Stored], includes: tuple[Include, ...], scope: AccessScope) -> list[Stored]:
        return follow_includes(matches, includes, lambda sources, inc: self._include_one(sources, inc, scope))

    def _include_one(self, sources: list[Stored], inc: Include, scope: AccessScope) -> list[Stored]:
        compiler = self._compiler(scope)
        keys = [resource_key(s.resource_type, s.id) for s in sources]
        if not inc.reverse:
            targets: set[str] = set()
            for doc in self._find(RESOURCES, {"_id": {"$in": keys}}, {"ref": 1}):
                for value in doc.get("ref") or ():
                    named = inc.param is None or value["p"] == inc.param
                    if value.get("k") and named and inc.target_type in (None, value["tt"]):
                        targets.add(value["k"])
            base: dict[str, Any] = {"_id": {"$in": sorted(targets)}, "deleted": False}
            types = [inc.target_type] if inc.target_type else list(self._resource_types)
        else:
            pointing: dict[str, Any] = {"k": {"$in": keys}}
            if inc.param is not None:
                pointing["p"] = inc.param
            base = {"type": inc.source_type, "deleted": False, "ref": {"$elemMatch": pointing}}
            types = [inc.source_type]
        where = both(base, compiler.typed_filter(types, base))
        if where is NEVER:
            return []
        docs = self._find(RESOURCES, where, _CURRENT_FIELDS).sort("pk", ASCENDING)
        return [self._stored(doc) for doc in docs]

    def history(
        self,
        scope: AccessScope,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: str | None = None,
        offset: int = 0,
        count: int = 20,
        watermark: Watermark | None = None,
        at: tuple[str, str] | None = None,
    ) -> HistoryPage:
        """Versions of the resources the scope lets the caller see (judged on their current
        index, as SQLite does): the visible resources are found with the scope inside the query,
        then their versions are read by resource key."""
        if watermark is None:
            watermark = self._last("seq")
        if not isinstance(watermark, int):
            raise StoreError("a history's watermark is one number here")
        versions: dict[str, Any] = {"_id": {"$lte": watermark}}
        if resource_type is not None:
            versions["type"] = resource_type
        if resource_id is not None:
            versions["id"] = resource_id
        if since is not None:
            versions["updated"] = {"$gte": since}
        types = [resource_type] if resource_type else list(self._resource_types)
        if not all(isinstance(scope.filter(t), Everything) for t in types):
            base = {k: v for k, v in versions.items() if k in ("type", "id")}
            visible = both(base, self._compiler(scope).typed_filter(types, base))
            if visible is NEVER:
                return HistoryPage([], 0, watermark)
            versions["res"] = {"$in": sorted(d["pk"] for d in self._find(RESOURCES, visible, {"pk": 1}))}
        coll = self._db[VERSIONS]
        if at is not None:
            versions = self._current_during(versions, *at)
        total = coll.count_documents(versions, session=self._session)
        page = coll.find(versions, session=self._session).sort("_id", DESCENDING).skip(offset).limit(count)
        return HistoryPage([self._stored({**v, "pk": v["res"]}, v) for v in page], total, watermark)

    def _current_during(self, versions: dict[str, Any], start: str, end: str) -> dict[str, Any]:
        """``versions`` narrowed to those current at some moment of ``[start, end)`` (``_at``):
        written within it, or the last one of their resource written at or before ``start``."""
        before = {**versions, "updated": {**versions.get("updated", {}), "$lte": start}}
        pipeline = [{"$match": before}, {"$group": {"_id": "$res", "last": {"$max": "$_id"}}}]
        last = sorted(g["last"] for g in self._db[VERSIONS].aggregate(pipeline, session=self._session))
        written = {**versions.get("updated", {}), "$gt": start, "$lt": end}
        return {**versions, "$or": [{"_id": {"$in": last}}, {"updated": written}]}

    # -- paging sessions, outbox ---------------------------------------------------------------

    def save_session(self, data: bytes, ttl_seconds: int) -> str:
        key = secrets.token_urlsafe(24)
        now = int(time.time())
        expires = now + ttl_seconds
        doc = {
            "_id": key,
            "expires": expires,
            "expire_at": datetime.fromtimestamp(max(expires, 0), UTC) + timedelta(seconds=60),
            **self._sealed("data", session_aad(key), data),
        }
        with self.transaction():
            self._insert(PAGING, doc)
        return key

    def load_session(self, key: str) -> bytes | None:
        query = {"_id": key, "expires": {"$gte": int(time.time())}}
        doc = self._db[PAGING].find_one(query, session=self._session)
        return self._open(session_aad(key), doc["data"]) if doc else None

    def enqueue(self, topic: str, payload: bytes) -> int:
        message_id = self._next("outbox")
        doc = {"_id": message_id, "topic": topic, "created": instant_now(), "attempts": 0, "due": None}
        with self.transaction():
            self._insert(OUTBOX, {**doc, **self._sealed("payload", outbox_aad(message_id, topic), payload)})
        return message_id

    def pending(self, topic: str, limit: int = 100, *, now: int | None = None) -> list[Queued]:
        query: dict[str, Any] = {"topic": topic}
        if now is not None:
            query["$or"] = [{"due": None}, {"due": {"$lte": now}}]
        docs = self._find(OUTBOX, query).sort("_id", ASCENDING).limit(limit)
        return [
            Queued(int(d["_id"]), self._open(outbox_aad(int(d["_id"]), topic), d["payload"]), int(d["attempts"]))
            for d in docs
        ]

    def acknowledge(self, message_id: int) -> None:
        with self.transaction():
            before = self._db[OUTBOX].find_one({"_id": message_id}, session=self._session)
            if before is not None:
                self._remove(OUTBOX, before)

    def defer(self, message_id: int, until: int, attempts: int) -> None:
        with self.transaction():
            before = self._db[OUTBOX].find_one({"_id": message_id}, session=self._session)
            if before is not None:
                self._replace(OUTBOX, before, {**before, "due": until, "attempts": attempts})

    # -- private records ----------------------------------------------------------------------

    def _record(self, kind: str, key: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._db[RECORDS].find_one({"_id": record_key(kind, key)}, session=self._session)
        return doc

    def _put(self, kind: str, key: str, value: bytes, expires: int | None, before: dict[str, Any] | None) -> None:
        doc = {"_id": record_key(kind, key), "kind": kind, "key": key, "expires": expires}
        doc.update(self._sealed("value", record_aad(kind, key), value))
        if before is None:
            self._insert(RECORDS, doc)
        else:
            self._replace(RECORDS, before, doc)

    def put_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None) -> None:
        with self.transaction():
            self._put(kind, key, value, expires, self._record(kind, key))

    def add_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None, now: int) -> bool:
        """Read then write in one transaction: two callers racing for the same key conflict, and
        MongoDB aborts one of them (an error, never two accepted)."""
        with self.transaction():
            before = self._record(kind, key)
            if before is not None and (before["expires"] is None or before["expires"] > now):
                return False
            self._put(kind, key, value, expires, before)
            return True

    def get_record(self, kind: str, key: str) -> tuple[bytes, int | None] | None:
        doc = self._record(kind, key)
        return (self._open(record_aad(kind, key), doc["value"]), doc["expires"]) if doc else None

    def record_mark(self, kind: str, key: str) -> bytes | None:
        doc = self._db[RECORDS].find_one({"_id": record_key(kind, key)}, {"value": 1}, session=self._session)
        return None if doc is None else sealed_mark(doc["value"])

    def delete_record(self, kind: str, key: str) -> bool:
        with self.transaction():
            before = self._record(kind, key)
            if before is not None:
                self._remove(RECORDS, before)
            return before is not None

    def record_keys(self, kind: str) -> list[str]:
        return [str(d["key"]) for d in self._find(RECORDS, {"kind": kind}, {"key": 1}).sort("key", ASCENDING)]

    def purge_records(self, now: int) -> int:
        with self.transaction():
            expired = list(self._find(RECORDS, {"expires": {"$ne": None, "$lte": now}}))
            for before in expired:
                self._remove(RECORDS, before)
            return len(expired)

    def reindex(self, resource_type: str | None = None) -> int:
        query: dict[str, Any] = {"deleted": False}
        if resource_type:
            query["type"] = resource_type
        last, done = 0, 0
        while True:
            batch = list(self._find(RESOURCES, {**query, "pk": {"$gt": last}}).sort("pk", ASCENDING).limit(500))
            if not batch:
                return done
            with self.transaction():
                for before in batch:
                    resource = orjson.loads(
                        self._open(resource_aad(before["type"], before["id"], before["version"]), before["content"])
                    )
                    index = self._indexer(resource)
                    key = patient_key(before["type"], before["id"], index)
                    after = {
                        **{k: v for k, v in before.items() if k not in INDEX_FIELDS},
                        "pkey": key,
                        **index_document(index),
                    }
                    self._replace(RESOURCES, before, after)
                    if before.get("pkey") != key:
                        self._move_versions(int(before["pk"]), key)
            last, done = int(batch[-1]["pk"]), done + len(batch)

    # -- master key rotation -----------------------------------------------------------------

    def rewrap_all(self, batch: int = 500) -> int:
        """Re-wrap every blob whose ``kid`` is not the active master key, ``batch`` documents per
        transaction, each read again inside it so that a concurrent write is never overwritten."""
        cipher = self._require_cipher()
        done = 0
        for collection, field_name in _SEALED_FIELDS:
            while True:
                active = cipher.master_keys.active.kid
                stale = {"kid": {"$exists": True, "$ne": active}}
                with self.transaction():
                    docs = list(self._find(collection, stale).limit(batch))
                    for before in docs:
                        blob = cipher.rewrap(bytes(before[field_name]))
                        self._replace(collection, before, {**before, field_name: blob, "kid": cipher.kid_of(blob)})
                if not docs:
                    break
                done += len(docs)
        return done

    def key_ids_in_use(self) -> set[str]:
        """The master keys that wrap at least one stored blob, from the ``kid`` fields."""
        if self._cipher is None:
            return set()
        kids: set[str] = set()
        for collection, _field in _SEALED_FIELDS:
            kids.update(str(k) for k in self._db[collection].distinct("kid", session=self._session) if k)
        return kids

    def _require_cipher(self) -> EnvelopeCipher:
        if self._cipher is None:
            raise MasterKeyError(f"MongoDB database {self.name!r} is not encrypted: there are no keys to re-wrap")
        return self._cipher


def _located(doc: dict[str, Any]) -> dict[str, Any]:
    """The filter of one stored document: its ``_id`` and, on sharded collections, its patient key."""
    return {"_id": doc["_id"], "pkey": doc["pkey"]} if "pkey" in doc else {"_id": doc["_id"]}
