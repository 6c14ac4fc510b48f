"""The embedded default store: SQLite in WAL mode, the trail's events in a file of their own
attached beside the main one (:mod:`storage.sqlite.schema` says why).

One connection per thread (SQLite connections are not shared across threads); writes take the
database lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of deadlocking on a
lock upgrade. A transaction is the unit of atomicity for FHIR transactions and conditional
operations: reads inside it see its own writes.

With a cipher, encryption at rest is two layers. The whole database (every table, the search
index included, and its write-ahead log) is encrypted by SQLCipher under a database key that the
master key wraps (:mod:`storage.sqlite.dbkey`). And every content blob (resource versions, search
sessions, outbox payloads, private records) is also sealed by the envelope cipher before it
reaches SQLite and opened on the way out, its row's identity bound as associated data: documents
stay encrypted with their own keys whatever the backend, and a page-level key alone opens none.

Why one module of ~750 lines: it is the one class implementing every method of the ``Store``
interface, all of them over the same connection, transaction and sealing machinery; the parts that
stand alone are apart (the query compiler, the schema, connections, the database key, backups,
the writer lock).
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any, Protocol

import orjson

from fhirmodel.dates import instant_now
from fhirmodel.indexing import (
    DateValue,
    IndexValue,
    NumberValue,
    Only,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from storage.crypto import MAX_HEADER_BYTES, EnvelopeCipher, MasterKeyError
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
from storage.query import AccessScope, Everything, Expr, Include, Nothing, Query, SortKey, all_of
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
from storage.sqlite import dbkey
from storage.sqlite.compiled import CompiledFragments
from storage.sqlite.compiler import KIND_OF_TYPE, ParamType, SqlCompiler, links_lazy
from storage.sqlite.connection import (
    DEFAULT_SETTINGS,
    SYNCED_LEVELS,
    Attached,
    DatabaseKey,
    OperationalError,
    SqliteSettings,
    ThreadConnections,
    connect,
    defaults_of,
    restrict_files,
)
from storage.sqlite.encrypt import encrypt_in_place, is_plaintext
from storage.sqlite.group import GroupCommit
from storage.sqlite.journal import DRAIN_BYTES, FALLBACK_BYTES, Journal
from storage.sqlite.rekey import settle
from storage.sqlite.schema import (
    ADDED_COLUMNS,
    CLUSTER_SIZE,
    CLUSTERED_KEYS_FROM,
    CLUSTERS,
    COLUMN_NAMES,
    COVERED_KINDS,
    COVERING_SINCE,
    DDL,
    DROPPED_INDEXES,
    FAMILY_OF_TYPE,
    INDEX_KINDS,
    MAIN_TRAIL_TABLES,
    RECORD_SINCE,
    SCHEMA_VERSION,
    SHARED,
    SHARED_STATEMENTS,
    TRAIL,
    TRAIL_DDL,
    TRAIL_SCHEMA,
    TRAIL_TYPES,
    TRAIL_TYPES_SQL,
    VERSION_CONTENT,
    IndexFamily,
    family_of,
    trail_file,
)
from storage.sqlite.upkeep import FALLBACK_PAGES, Upkeep
from storage.sqlite.writer import WriterLock
from storage.stamp import stamp


class Indexer(Protocol):
    """A resource's index values: of every parameter, or of those ``only`` accepts."""

    def __call__(self, resource: dict[str, Any], only: Only | None = None, /) -> dict[str, list[IndexValue]]: ...


#: What a statement reads, for :meth:`SqliteStore._reachable`: the caller's scope, and the type and
#: condition of a search or a read (None for an include's or a history's: their scope's only).
Reading = tuple[AccessScope, str | None, Expr | None]
#: How many resources :meth:`SqliteStore._complete` reads and indexes at a time.
COMPLETE_BATCH = 500
#: Index rows copied per statement when an upgrade moves them to another family (:meth:`SqliteStore._refile`).
REFILED_ROWS = 200_000

log = logging.getLogger(__name__)

#: The ``meta`` key that records a journal file moved in, followed by its generation.
_MOVED = "journal/"
#: Where those keys are: with the rows moved, in the trail's file.
_TRAIL_META = f"{TRAIL_SCHEMA}.meta"
#: The trail's share of a connection's page cache: its file is appended to, and read seldom.
TRAIL_CACHE_SHARE = 0.25
#: Events a write kept in the main file (:meth:`SqliteStore.create`) moved to the trail's at once;
#: the upkeep thread moves them once there are this many.
INBOX_BATCH = 64

#: Sort expression per kind of index table: the lowest value ascending, the highest descending (R4 §3.1.1.5.6).
_SORT_COLUMN: dict[str, str | tuple[str, str]] = {
    "token": "code",
    "string": "norm",
    "date": ("low", "high"),
    "number": "value",
    "quantity": "value",
    "reference": "target_id",
    "uri": "value",
}
#: Per kind of value, its kind of index table; a value's fields are that table's value columns, in
#: order (:data:`COLUMN_NAMES`), so that its row is ``(param, *value)``.
TABLE_OF_VALUE: dict[type, str] = {
    TokenValue: "token",
    StringValue: "string",
    DateValue: "date",
    NumberValue: "number",
    QuantityValue: "quantity",
    ReferenceValue: "reference",
    UriValue: "uri",
}
_STORED_COLUMNS = f"r.pk, v.seq, r.type, r.id, v.version, v.last_updated, v.method, {VERSION_CONTENT}"
#: The current version straight from ``resource``: one row per match, no join to ``version``.
_CURRENT_COLUMNS = "r.pk, NULL, r.type, r.id, r.version, r.last_updated, NULL, r.content"
#: Every sealed column: (table, row key, blob column), for re-wrapping and key accounting.
_SEALED_COLUMNS = (
    ("resource", "pk", "content"),
    ("version", "seq", "content"),
    (TRAIL.resources, "pk", "content"),
    (TRAIL.versions, "seq", "content"),
    ("search_session", "rowid", "data"),
    ("outbox", "id", "payload"),
    ("record", "rowid", "value"),
)


def _page(count: int, offset: int = 0) -> str:
    """``LIMIT``/``OFFSET`` as literals, never bound arguments.

    Why: SQLite's planner reads a bound ``LIMIT`` (and ``OFFSET``) to cost its plan, and marks the
    statement to be prepared again whenever that argument is bound again — which the driver does
    at every execution. A search's page query, with the policy's filter a few kilobytes of SQL and
    two dozen sub-queries, was compiled anew for every search: 1.3 ms of CPU, against 0.3 ms to
    run it (in-process, 10 of a patient's documents, a doctor's filter). The integers come from
    the parsed query, never from text."""
    return f"LIMIT {int(count)} OFFSET {int(offset)}"


#: A search's watermark (:meth:`SqliteStore._marks`): the main file's last key, the trail's, and
#: the main file's last version, which bounds a clustered family's resources by their first.
_SEARCH_MARKS = ((SHARED, "pk"), (TRAIL, "pk"), (SHARED, "seq"))
_FIRST_SEQ = _SEARCH_MARKS.index((SHARED, "seq"))


def _binding_value(family: IndexFamily, references: Iterable[tuple[Any, ...]]) -> str:
    """Whose a resource of a clustered family is: its binding's first reference as the binding
    index has it (``Patient/{id}``, ``|{system}|{value}`` by identifier), or ``""``: the resources
    of no patient share blocks of their own."""
    for param, target_type, target_id, url, id_system, id_value in references:
        if param != family.binding:
            continue
        if target_id is not None:
            return f"{target_type}/{target_id}"
        if id_value is not None:
            return f"|{id_system or ''}|{id_value}"
        if url is not None:
            return url
    return ""


def _sort_value(compiler: SqlCompiler, family: IndexFamily, kind: str, column: str, agg: str, param: str) -> str:
    """A match's sort key, read from its own index rows. The probe names its ``(res, param)`` index,
    as the compiler's conditions do: the planner otherwise picks the covering value index (``param``,
    value..., ``res``) and walks every row of the parameter for each match (``_sort=-date`` read
    every ``date`` of the database, twice, per DocumentReference found)."""
    arg, table, index = compiler.arg(param), family.table(kind), family.probe_index(kind)
    return f"(SELECT {agg}(x.{column}) FROM {table} x INDEXED BY {index} WHERE x.res = r.pk AND x.param = {arg})"


class SqliteStore(Store):
    def __init__(
        self,
        path: Path | str,
        indexer: Indexer,
        param_type: ParamType,
        resource_types: tuple[str, ...],
        cipher: EnvelopeCipher | None = None,
        settings: SqliteSettings = DEFAULT_SETTINGS,
    ):
        self.path = str(path)
        #: The trail's file (:data:`~storage.sqlite.schema.TRAIL_SCHEMA`), attached to every connection.
        self.trail_path = trail_file(self.path)
        self._indexer = indexer
        self._param_type = param_type
        self._fragments = CompiledFragments(param_type)
        self._resource_types = resource_types
        self._cipher = cipher
        self._writer = WriterLock(self.path)
        self._groups = GroupCommit(self._writer, settings.synchronous)
        #: The types whose resources :meth:`log` journals: those of a deferred family (the trail).
        self._logged = frozenset(TRAIL_TYPES)
        synced = settings.synchronous in SYNCED_LEVELS
        self._journal = None if self.path == ":memory:" else Journal(f"{self.path}.journal", sync=synced)
        key: DatabaseKey | None = None
        trail_key: DatabaseKey | None = None
        # What this open makes of the trail's file (an upgrade, or a new database): undone if refused.
        trail_files = (Path(self.trail_path), dbkey.key_path(Path(self.trail_path)))
        made = [] if self.path == ":memory:" else [path for path in trail_files if not path.exists()]
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with self._writer:  # one process creates the keys or encrypts an old database
                restrict_files(Path(self.path))
                restrict_files(Path(self.trail_path))
                if cipher is not None and settings.encrypted:
                    key, trail_key = self._database_key(Path(self.path)), self._database_key(Path(self.trail_path))
        self._upkeep: Upkeep | None = None
        #: Events this process kept in the main file since it last woke the upkeep thread for them.
        self._inboxed = 0
        self._key, self._trail_key, self._settings = key, trail_key, settings  # a backup copies each file
        attached = Attached(TRAIL_SCHEMA, self.trail_path, trail_key, TRAIL_CACHE_SHARE)
        self._connections = ThreadConnections(lambda: self._tuned(connect(self.path, key, settings, attached)))
        conn = self._conn()
        conn.executescript(DDL)
        conn.executescript(TRAIL_DDL)
        self._migrate(conn)
        try:
            self._upgrade()
            self._check_keys()
        except (MasterKeyError, StoreError):
            self.close()
            for path in made:  # no empty trail, under a new key, left beside a database it is not of
                for suffix in ("", "-wal", "-shm"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            raise
        self._settle(None, None)  # what a stopped server left in the journal

    def _database_key(self, database: Path) -> DatabaseKey:
        """A file's key: created with a new file, loaded for an encrypted one; a plaintext
        database of an earlier version is encrypted now, once (:mod:`storage.sqlite.encrypt`)."""
        assert self._cipher is not None
        fresh = database.stat().st_size == 0
        plaintext = is_plaintext(database)
        if not (fresh or plaintext):
            settle(database, self._cipher)  # a re-key interrupted by a crash
            return dbkey.load(database, self._cipher)
        exists = dbkey.key_path(database).exists()
        key = dbkey.load(database, self._cipher) if exists else dbkey.create(database, self._cipher)
        if plaintext:
            encrypt_in_place(database, key)
        return key

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Add the columns a database written by an older server lacks.

        ``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was: columns added since are
        added here, each only if missing, so that opening twice, or two processes opening at
        once, is harmless (a concurrent duplicate ``ADD COLUMN`` is recognised and ignored).
        """
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name in present:
                    continue
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                except OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def _upgrade(self) -> None:
        """Bring a database of an earlier schema to this one, then record the version: the index
        rows a database kept in the shared tables move to their own family's (the documents' and
        submission sets' before version 7, :data:`storage.sqlite.schema.RECORD`), the shared
        ``(res, param)`` indexes of a database before version 6 are made again, covering (a minute
        and a half at 1 000 000 documents, once), and the indexes the schema no longer has are
        dropped (the ones it has were created by the DDL). Before version 8 the trail was in the
        main file: its index tables are dropped, and its events are left where a write's event
        waits to be moved to the trail's file (:meth:`_move_inbox`), which the first settle of the
        store moves, its index rows made anew: 22 s for 51 000 events here, once.

        Each step is one transaction under the writer lock, the version read inside it: two
        processes opening an old database at once upgrade it once, and a crash upgrades nothing
        of the step it interrupts. The trail's file records the version before the main one, so
        that a main file of this schema without its trail's file is refused, not served empty."""
        with self._alone() as conn:
            version = self._schema_of(conn, "meta")
            if version == SCHEMA_VERSION:
                if self._schema_of(conn, _TRAIL_META) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.trail_path}, the trail of {self.path}, is missing or not its own: restore both files"
                    )
                return
            if version > SCHEMA_VERSION:  # its rows may be where this version would not look
                raise StoreError(
                    f"{self.path} is of schema {version}, written by a newer server: this one reads schemas"
                    f" up to {SCHEMA_VERSION}"
                )
            if version < RECORD_SINCE:
                self._upgrade_main(conn, version)
        with self._alone() as conn:
            conn.execute(f"INSERT OR REPLACE INTO {_TRAIL_META} VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        with self._alone() as conn:
            for table in MAIN_TRAIL_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @staticmethod
    def _schema_of(conn: sqlite3.Connection, meta: str) -> int:
        row = conn.execute(f"SELECT value FROM {meta} WHERE key = 'schema_version'").fetchone()
        return 0 if row is None else int(row[0])

    def _upgrade_main(self, conn: sqlite3.Connection, version: int) -> None:
        """The steps of the main file's upgrade up to :data:`RECORD_SINCE` (see :meth:`_upgrade`)."""
        moved = {rtype: family for rtype, family in FAMILY_OF_TYPE.items() if family_of(rtype, version) is SHARED}
        if moved:
            self._refile(conn, moved)
        if version < COVERING_SINCE:  # the shared probes' indexes made anew, covering
            for kind in COVERED_KINDS:
                conn.execute(f"DROP INDEX IF EXISTS main.{SHARED.probe_index(kind)}")
                conn.execute(SHARED.res_index(kind))
        for index in DROPPED_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS main.{index}")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(RECORD_SINCE),))

    @contextmanager
    def _alone(self) -> Iterator[sqlite3.Connection]:
        """A transaction of the calling thread's own connection under the writer lock, outside the
        group commit, for a store that serves no one yet. Why not a group's member: a member runs
        in a savepoint, and SQLite keeps the original of every page a savepoint changes (its
        sub-journal, in memory here: ``temp_store``) — 5 GB for an upgrade at 1 000 000 documents."""
        conn = self._conn()
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _refile(conn: sqlite3.Connection, moved: dict[str, IndexFamily]) -> None:
        """Move the index rows of the ``moved`` types from the shared tables to their families'
        (the trail's rows are dropped: its events' rows are made anew in its own file).

        The shared tables are made anew with the rows that stay rather than emptied row by row:
        the moved rows are most of them (a document's ~26, a submission set's ~14, an AuditEvent's
        ~23), and each delete rewrote a random page of every value index of its table; copied in
        ``res`` order into fresh tables, they are appended. They are copied :data:`REFILED_ROWS` at a
        time, so that what SQLite keeps to undo one statement (in memory here: ``temp_store``)
        stays small: the whole upgrade held 1 GB at most at 1 000 000 documents."""
        for shared in SHARED.tables:
            indexes = conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (shared,)
            ).fetchall()
            for (name,) in indexes:
                conn.execute(f"DROP INDEX {name}")
            conn.execute(f"ALTER TABLE {shared} RENAME TO {shared}_refiled")
        for statement in SHARED_STATEMENTS:
            conn.execute(statement)
        types_of: dict[IndexFamily, list[str]] = {}
        for rtype, family in moved.items():
            types_of.setdefault(family, []).append(rtype)
        types_json = {family: orjson.dumps(types).decode() for family, types in types_of.items()}
        every = orjson.dumps(list(moved)).decode()
        for kind in INDEX_KINDS:
            shared, old = SHARED.table(kind), f"{SHARED.table(kind)}_refiled"
            rows = f"SELECT o.* FROM {old} o JOIN resource r ON r.pk = o.res WHERE o.rowid > ?1 AND o.rowid <= ?2 AND"
            last = int(conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {old}").fetchone()[0])
            for start in range(0, last, REFILED_ROWS):
                span = (start, start + REFILED_ROWS)
                for family, types in types_json.items():
                    if family.schema != "main":
                        continue
                    conn.execute(
                        f"INSERT INTO {family.table(kind)} {rows} r.type IN (SELECT value FROM json_each(?3))",
                        (*span, types),
                    )
                conn.execute(
                    f"INSERT INTO {shared} {rows} r.type NOT IN (SELECT value FROM json_each(?3))", (*span, every)
                )
            conn.execute(f"DROP TABLE {old}")

    def _check_keys(self) -> None:
        """Refuse to start when the data and the keys do not belong together.

        Checked on the newest resource with content only, so it is cheap. Without this a server
        given a lost or another directory's key file would start, accept writes, and fail every
        older read.
        """
        row = self._conn().execute("SELECT content FROM resource WHERE content IS NOT NULL ORDER BY pk DESC LIMIT 1")
        newest = row.fetchone()
        check_keys(None if newest is None else bytes(newest[0]), self._cipher, self.path)

    # -- encryption --------------------------------------------------------------------------

    def _seal(self, aad: str, plaintext: bytes, *, deflate: bool = False) -> bytes:
        return plaintext if self._cipher is None else self._cipher.seal(plaintext, aad.encode(), deflate=deflate)

    def _open(self, aad: str, blob: bytes) -> bytes:
        return open_blob(self._cipher, aad, blob, self.path)

    def _stored(self, row: tuple[Any, ...]) -> Stored:
        """A :class:`Stored` from a row of ``_STORED_COLUMNS`` or ``_CURRENT_COLUMNS``, opened."""
        pk, seq, rtype, rid, version, last_updated, method, content = row
        if content is not None:
            content = self._open(resource_aad(rtype, rid, version), content)
        return Stored(pk, seq, rtype, rid, version, last_updated, method, content)

    # -- connections and transactions --------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        return self._connections.slot().conn

    def _tuned(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """A new connection; while the upkeep thread runs, its commits leave the log's
        checkpoints to the thread up to :data:`~storage.sqlite.upkeep.FALLBACK_PAGES`."""
        if self._upkeep is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES}")
        return conn

    def start_upkeep(self) -> None:
        """Checkpoint the log, and move the trail's journal in, on a thread of this process
        (:mod:`storage.sqlite.upkeep`), for the connections opened from now on: the serving threads'."""
        if self.path == ":memory:" or self._upkeep is not None:
            return
        self._upkeep = Upkeep(self._checkpoint, self._move_batch)
        self._upkeep.start()

    def _checkpoint(self) -> None:
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def open_connections(self) -> int:
        """How many connections this store holds open: one per live thread that used it."""
        return self._connections.count()

    def transaction(self) -> AbstractContextManager[None]:
        return self._transaction(synced=True)

    @contextmanager
    def _transaction(self, *, synced: bool) -> Iterator[None]:
        """The calling thread's transaction: a savepoint inside its own, or a member of this
        process's next group commit (:mod:`storage.sqlite.group`), its statements on the group's
        connection until it is committed."""
        slot = self._connections.slot()
        conn = slot.conn
        if slot.depth:
            # Nested: a savepoint, so that a failing inner unit (one batch entry) is undone alone.
            slot.depth += 1
            savepoint = f"sp{slot.depth}"
            conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
                raise
            else:
                conn.execute(f"RELEASE {savepoint}")
            finally:
                slot.depth -= 1
            return
        with self._groups.member(conn, synced=synced) as group_conn:
            slot.conn, slot.depth = group_conn, 1
            try:
                yield
            finally:
                slot.conn, slot.depth = conn, 0

    def _unsynced(self) -> AbstractContextManager[None]:
        """A transaction that may be lost with the power commits without syncing the WAL.

        Why: a stored paging session (the FHIR layer keeps most in the link itself; a state too
        large for a link comes here) is saved by a read; synced, it held the writer lock of all
        workers for an fsync, and reads and searches queued behind it.
        Lost, its client gets a 410 and runs the search again. The database stays consistent
        (WAL, ``synchronous=NORMAL``), and the next synced commit syncs it along."""
        return self._transaction(synced=False)

    def in_transaction(self) -> bool:
        return self._connections.slot().depth > 0

    def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
        self._connections.close_all()
        self._writer.close()
        if self._journal is not None:
            self._journal.close()

    # -- writes ------------------------------------------------------------------------------

    def _write_version(self, pk: int, version: int, last_updated: str, method: str, family: IndexFamily) -> int:
        """Insert a version row without content: the current version's content is the resource
        row's (:data:`VERSION_CONTENT`), so most resources — never updated, an AuditEvent per
        request among them — are stored once, not twice."""
        cur = self._conn().execute(
            f"INSERT INTO {family.versions} (res, version, last_updated, method) VALUES (?, ?, ?, ?)",
            (pk, version, last_updated, method),
        )
        return int(cur.lastrowid or 0)

    def _keep_replaced(self, pk: int, version: int, family: IndexFamily) -> None:
        """Before the resource row is overwritten, its content becomes that of its version row
        (the same sealed blob: its AAD names the version). A version row written by an earlier
        server already holds it, and a deleted version has none: both are left as they are."""
        self._conn().execute(
            f"UPDATE {family.versions} SET content = (SELECT content FROM {family.resources} WHERE pk = ?1)"
            " WHERE res = ?1 AND version = ?2 AND content IS NULL",
            (pk, version),
        )

    def _reindex(self, pk: int, resource: dict[str, Any]) -> None:
        """Replace the index rows of ``pk``. (A create writes its rows without deleting any: they
        go with their resource, ``ON DELETE CASCADE``, so a reused ``pk`` starts empty too.)"""
        conn, family = self._conn(), family_of(resource["resourceType"])
        for table in family.tables:
            conn.execute(f"DELETE FROM {table} WHERE res = ?", (pk,))
        if family.lazy:  # all its rows are written now
            conn.execute(f"DELETE FROM {family.pending} WHERE res = ?", (pk,))
        self._insert_rows(family, [(pk, self._index_rows(resource))])

    def _index_rows(self, resource: dict[str, Any], only: Only | None = None) -> dict[str, list[tuple[Any, ...]]]:
        """A resource's index values as rows of each kind of table: ``(param, *values)``."""
        rows: dict[str, list[tuple[Any, ...]]] = {}
        index = self._indexer(resource) if only is None else self._indexer(resource, only)
        for param, values in index.items():
            for value in values:
                rows.setdefault(TABLE_OF_VALUE[type(value)], []).append((param, *value))
        return rows

    def _insert_rows(self, family: IndexFamily, resources: list[tuple[int, dict[str, Any]]]) -> None:
        """The index rows of ``resources`` (``(pk, rows by kind)``), one statement per table."""
        batches: dict[str, list[tuple[Any, ...]]] = {}
        for pk, rows in resources:
            for kind, kind_rows in rows.items():
                batches.setdefault(kind, []).extend((pk, *row) for row in kind_rows)
        conn = self._conn()
        for kind, batch in batches.items():
            if not batch:
                continue
            table, marks = family.table(kind), ", ".join("?" * len(batch[0]))
            conn.executemany(f"INSERT INTO {table} (res, param, {COLUMN_NAMES[kind]}) VALUES ({marks})", batch)

    def _insert_by_family(self, resources: Iterable[tuple[str, int, dict[str, Any]]]) -> None:
        """The index rows of resources of any type (``(type, pk, rows by kind)``), one statement
        per table of each family."""
        by_family: dict[IndexFamily, list[tuple[int, dict[str, Any]]]] = {}
        for rtype, pk, rows in resources:
            by_family.setdefault(family_of(rtype), []).append((pk, rows))
        for family, batch in by_family.items():
            self._insert_rows(family, batch)

    def _settle(self, compiler: SqlCompiler | None, *types: str | None, reading: Reading | None = None) -> None:
        """Before a statement runs: what the trail keeps aside — its events in the journal, the
        events of writes in the main file (:meth:`create`) — is moved into its file if the
        statement reads the index of a deferred family (``compiler``'s) or resources of one of
        ``types`` (``None``: of any type), so that it sees every resource stored before it, as
        if all were written at once. Other statements (a document's read) leave both waiting.
        Then the rows a lazy family left out are written for the resources the statement may read
        (:meth:`_complete`, :meth:`_reachable`)."""
        reads_index = compiler is not None and any(family.deferred for family in compiler.families)
        if not reads_index and not any(t is None or t in self._logged for t in types):
            return
        if self._journal is not None and self._journal.waiting():
            self._drain()
        if self._inbox(1):
            self._move_inbox()
        for family in compiler.families if compiler is not None else ():
            if family.lazy:
                self._complete(family, None if reading is None else self._reachable(family, *reading))

    def _inbox(self, limit: int) -> int:
        """How many of the trail's events wait in the main file, counted up to ``limit``."""
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM resource WHERE type IN ({TRAIL_TYPES_SQL}) LIMIT {int(limit)})"
        return int(self._conn().execute(sql).fetchone()[0])

    def _taken(self, rtype: str, rid: str) -> bool:
        """Whether ``rtype/rid`` is stored: in its file, or, for the trail's, waiting in the main one
        (a plain look-up per file: 3.7 µs, where :meth:`_taken_of`'s JSON list takes 8.5 for one)."""
        conn = self._conn()
        return any(
            conn.execute(f"SELECT 1 FROM {t} WHERE type = ? AND id = ?", (rtype, rid)).fetchone()
            for t in {family_of(rtype).resources, "resource"}
        )

    def _taken_of(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``keys`` (``(type, id)``) are stored, as :meth:`_taken` says, in one statement
        per type and file: a move of the journal asks for hundreds at once."""
        ids: dict[str, list[str]] = {}
        for rtype, rid in keys:
            ids.setdefault(rtype, []).append(rid)
        conn, found = self._conn(), set[tuple[str, str]]()
        for rtype, of_type in ids.items():
            for table in {family_of(rtype).resources, "resource"}:
                rows = conn.execute(
                    f"SELECT id FROM {table} WHERE type = ? AND id IN (SELECT value FROM json_each(?))",
                    (rtype, orjson.dumps(of_type).decode()),
                ).fetchall()
                found.update((rtype, rid) for (rid,) in rows)
        return found

    def create(self, resource: dict[str, Any], *, method: str = "POST") -> Stored:
        """A new resource. One of the trail's (a write's event, in the write's transaction) is
        kept in the main file, without its index rows: so it is committed with the write, or not at
        all — a transaction over two files in WAL mode is atomic in each, not in both — and
        moved to the trail's file with the next batch (:meth:`_move_inbox`), before anything reads
        the trail."""
        with self.transaction():
            rtype, rid = resource["resourceType"], resource["id"]
            if self._taken(rtype, rid):
                raise AlreadyExists(f"{rtype}/{rid} already exists")
            content, last_updated = stamp(resource, 1)
            blob = self._seal(resource_aad(rtype, rid, 1), content, deflate=rtype in DEFLATED_TYPES)
            family = family_of(rtype)
            if family.deferred:
                pk, seq = self._insert_new(rtype, rid, last_updated, blob, method, SHARED, self._next_key())
                self._inboxed += 1
            else:
                rows = self._index_rows(resource)
                key = self._cluster_key(family, rows) if family.clustered else self._next_key()
                pk, seq = self._insert_new(rtype, rid, last_updated, blob, method, family, key)
                self._insert_rows(family, [(pk, rows)])
            self._observed(rtype, None, resource)
        if self._inboxed >= INBOX_BATCH and self._upkeep is not None:
            # In a caller's transaction (a write's event) the thread may count before it commits,
            # find less than a batch, and leave it for the next wake: two batches wait at most.
            self._inboxed = 0
            self._upkeep.wake()
        return Stored(pk, seq, rtype, rid, 1, last_updated, method, content)

    def _insert_new(
        self, rtype: str, rid: str, last_updated: str, blob: bytes, method: str, family: IndexFamily, key: int | None
    ) -> tuple[int, int]:
        """The rows of a new resource's first version in ``family``'s file, its index aside: ``(pk, seq)``.
        ``key``: its ``pk``, or None for the next of its file's (the trail's counts on by itself)."""
        cur = self._conn().execute(
            f"INSERT INTO {family.resources} (pk, type, id, version, last_updated, content) VALUES (?, ?, ?, 1, ?, ?)",
            (key, rtype, rid, last_updated, blob),
        )
        pk = int(cur.lastrowid or 0)
        return pk, self._write_version(pk, 1, last_updated, method, family)

    def _next_key(self) -> int:
        """The main file's next key below the clustered ones (:data:`CLUSTERED_KEYS_FROM`): SQLite's
        own would be above the highest, a clustered one."""
        sql = "SELECT COALESCE(MAX(pk), 0) + 1 FROM resource WHERE pk < ?"
        return int(self._conn().execute(sql, (CLUSTERED_KEYS_FROM,)).fetchone()[0])

    def _cluster_key(self, family: IndexFamily, rows: dict[str, list[tuple[Any, ...]]]) -> int:
        """The key of a new resource of a clustered family: the next of its patient's block
        (:data:`CLUSTERS`), a new block when the patient has none or a full one."""
        patient = _binding_value(family, rows.get("reference", ()))
        conn = self._conn()
        taken = conn.execute(
            f"UPDATE {CLUSTERS} SET used = used + 1 WHERE key = ? AND used < {CLUSTER_SIZE} RETURNING home, used",
            (patient,),
        ).fetchone()
        if taken is None:  # ``WHERE true``: SQLite's parser needs it before an upsert's ``ON CONFLICT``
            taken = conn.execute(
                f"INSERT INTO {CLUSTERS} (key, home, used) SELECT ?, COALESCE(MAX(home), -1) + 1, 1 FROM {CLUSTERS}"
                " WHERE true ON CONFLICT (key) DO UPDATE SET home = excluded.home, used = 1 RETURNING home, used",
                (patient,),
            ).fetchone()
        home, used = taken
        return CLUSTERED_KEYS_FROM + int(home) * CLUSTER_SIZE + int(used) - 1

    def log(self, resources: list[dict[str, Any]]) -> None:
        """The trail's events go to the journal (:mod:`storage.sqlite.journal`): stamped and sealed
        now, as a create would (the blob is the one the resource row will hold), durable once
        appended; moved into the trail's file with the next batch (by the upkeep thread of a
        serving process, :mod:`storage.sqlite.upkeep`), or before anything reads them. A move that
        fails does not fail the log (its events are durable): it is logged, and tried again with
        the next batch; a read of the trail meanwhile fails with its error.
        Inside a transaction, or for a type whose family is not deferred, they are created in it."""
        journal = self._journal
        if journal is None or self.in_transaction() or any(r["resourceType"] not in self._logged for r in resources):
            super().log(resources)
            return
        payloads = []
        for resource in resources:
            rtype, rid = resource["resourceType"], resource["id"]
            content, last_updated = stamp(resource, 1)
            blob = self._seal(resource_aad(rtype, rid, 1), content, deflate=rtype in DEFLATED_TYPES)
            payloads.append(orjson.dumps([rtype, rid, last_updated]) + b"\n" + blob)
        size = journal.append(payloads)
        if size < DRAIN_BYTES:
            return
        if self._upkeep is not None and size < FALLBACK_BYTES:
            self._upkeep.wake()
        else:
            self._move_aside()

    def _move_batch(self) -> None:
        """The upkeep thread's move: a batch of the journal, or what a failed move left, and the
        writes' events once a batch of them waits. The appends made while a move was under way woke
        the thread again; what they left is a few events, whose move would cost every connection
        its page cache of the trail's file for little, so it waits for a batch."""
        journal_waits = self._journal is not None and self._journal.waiting(DRAIN_BYTES)
        if journal_waits or self._inbox(INBOX_BATCH) >= INBOX_BATCH:
            self._move_aside()

    def _move_aside(self) -> None:
        """:meth:`_drain` and :meth:`_move_inbox`, a failure logged, not raised: the events are
        stored, and the next batch, or the next read of them, moves them in."""
        try:
            self._drain()
            self._move_inbox()
        except Exception:
            log.exception("the trail's events could not be moved into its file (retried later)")

    def _move_inbox(self) -> None:
        """Move the trail's events a write kept in the main file (:meth:`create`) into the
        trail's, :data:`INBOX_BATCH` at a time. Each batch is copied and committed there first, then
        deleted from the main file in a transaction of its own: the two files' commits are not
        atomic together, and a crash between them leaves events in both, which the next move
        recognises by their ids and deletes without copying them again. In a caller's transaction
        the copy is made and the delete left to the next move outside one.

        Only the events there when it starts are moved: those written meanwhile wait for the next
        batch. A move that took them too chased the writes: under a steady flow of them it went
        on moving one or two events at a time, two commits each (for one client creating alone,
        0.38 ms of every create, ``bench/README.md``)."""
        (end,) = self._conn().execute(f"SELECT MAX(pk) FROM resource WHERE type IN ({TRAIL_TYPES_SQL})").fetchone()
        last = 0
        while end is not None:
            with self.transaction():
                conn = self._conn()
                rows = conn.execute(
                    "SELECT pk, type, id, version, last_updated, deleted, content FROM resource"
                    f" WHERE type IN ({TRAIL_TYPES_SQL}) AND pk > ? AND pk <= ? ORDER BY pk {_page(INBOX_BATCH * 8)}",
                    (last, end),
                ).fetchall()
                if not rows:
                    return
                self._copy_inboxed(rows)
            if not self.in_transaction():
                with self.transaction():  # their versions go with them (ON DELETE CASCADE)
                    self._conn().executemany("DELETE FROM resource WHERE pk = ?", [(row[0],) for row in rows])
            last = rows[-1][0]

    def _copy_inboxed(self, rows: list[tuple[Any, ...]]) -> None:
        """Copy events of the main file, with their versions, to their family's file, and make
        their index rows there (from their content: the last version that has one, for a deleted
        event). Those already there, copied before a crash, are skipped."""
        conn, indexed = self._conn(), []
        for pk, rtype, rid, version, last_updated, deleted, content in rows:
            family = family_of(rtype)
            if conn.execute(f"SELECT 1 FROM {family.resources} WHERE type = ? AND id = ?", (rtype, rid)).fetchone():
                continue
            new = conn.execute(
                f"INSERT INTO {family.resources} (type, id, version, last_updated, deleted, content)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (rtype, rid, version, last_updated, deleted, content),
            ).lastrowid
            versions = conn.execute(
                "SELECT version, last_updated, method, content FROM version WHERE res = ? ORDER BY version", (pk,)
            ).fetchall()
            conn.executemany(
                f"INSERT INTO {family.versions} (res, version, last_updated, method, content) VALUES (?, ?, ?, ?, ?)",
                [(new, *row) for row in versions],
            )
            sealed = [(version, content)] + [(number, blob) for number, _, _, blob in reversed(versions)]
            number, blob = next(((n, b) for n, b in sealed if b is not None), (0, None))
            if blob is not None:
                resource = orjson.loads(self._open(resource_aad(rtype, rid, number), blob))
                indexed.append(self._index_moved(rtype, int(new or 0), resource))
        self._insert_by_family(indexed)

    def _index_moved(self, rtype: str, pk: int, resource: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        """The index rows a resource moved into its deferred family's file gets now (``(type, pk,
        rows by kind)``): all of them, or a lazy family's rows that start a search, the resource
        listed pending for the others (:meth:`_complete`)."""
        family = family_of(rtype)
        if not family.lazy:
            return rtype, pk, self._index_rows(resource)
        self._conn().execute(f"INSERT INTO {family.pending} (res) VALUES (?)", (pk,))
        return rtype, pk, self._index_rows(resource, family.eager)

    def _complete(self, family: IndexFamily, within: tuple[str, list[Any]] | None) -> None:
        """Write the rows a lazy family left out (:attr:`IndexFamily.lazy`) of its resources listed
        pending — those among the keys ``within`` selects (a statement and its numbered arguments),
        or all of them — before a statement that may read them runs. A patient's look at their
        trail completes their events; a statement that may read any event's (an include of every
        type, a chain to the trail's types) completes them all, in batches, once."""
        among, args = ("", []) if within is None else (f" WHERE p.res IN ({within[0]})", within[1])
        listed = f"SELECT p.res FROM {family.pending} p{among}"
        if self._conn().execute(f"{listed} LIMIT 1", args).fetchone() is None:
            return
        with self.transaction():  # the list read again inside: another process may have done it
            conn = self._conn()  # the transaction's (a group commit's connection)
            while True:
                rows = conn.execute(
                    f"SELECT pk, type, id, version, content FROM {family.resources}"
                    f" WHERE pk IN ({listed} LIMIT {COMPLETE_BATCH})",
                    args,
                ).fetchall()
                if not rows:
                    return
                indexed = []
                for pk, rtype, rid, version, content in rows:
                    resource = self._last_content(family, pk, rtype, rid, version, content)
                    if resource is not None:
                        made = self._index_rows(resource)
                        left = {
                            kind: [r for r in kind_rows if not family.eager(r[0], kind)]
                            for kind, kind_rows in made.items()
                        }
                        indexed.append((pk, left))
                self._insert_rows(family, indexed)
                conn.executemany(f"DELETE FROM {family.pending} WHERE res = ?", [(row[0],) for row in rows])

    def _last_content(
        self, family: IndexFamily, pk: int, rtype: str, rid: str, version: int, content: bytes | None
    ) -> dict[str, Any] | None:
        """A resource's content as its index holds it: the current version's, or a deleted one's
        last version that has content (None: none has)."""
        if content is None:
            row = (
                self._conn()
                .execute(
                    f"SELECT version, content FROM {family.versions} WHERE res = ? AND content IS NOT NULL"
                    " ORDER BY version DESC LIMIT 1",
                    (pk,),
                )
                .fetchone()
            )
            if row is None:
                return None
            version, content = row
        loaded: dict[str, Any] = orjson.loads(self._open(resource_aad(rtype, rid, version), content))
        return loaded

    def _drain(self) -> None:
        """Move the journal into the trail's file, in one transaction (the caller's, if it is in one).

        The live file is detached first, so appends go on meanwhile. Which detached files were
        moved is recorded with their rows (the trail's ``meta``: ``journal/<generation>``), and a
        file is removed only once that is committed: a crash in between leaves a file whose rows
        are in, which the next move skips, then removes. A record that cannot be moved (it does
        not open with the store's keys) fails the move as a whole — nothing is lost, and the error
        is raised; one whose id is taken is kept aside (:meth:`Journal.keep_aside`) and the others go in."""
        journal = self._journal
        if journal is None:
            return
        with self.transaction():
            conn = self._conn()
            journal.detach()
            keys = conn.execute(f"SELECT key FROM {_TRAIL_META} WHERE key LIKE ?", (f"{_MOVED}%",)).fetchall()
            moved = {key.removeprefix(_MOVED) for (key,) in keys}
            files = journal.detached()
            for detached in files:
                if detached.generation not in moved:
                    self._insert_logged(detached.records())
                    conn.execute(f"INSERT INTO {_TRAIL_META} VALUES (?, '')", (f"{_MOVED}{detached.generation}",))
            for generation in moved - {d.generation for d in files}:  # removed after an earlier move
                conn.execute(f"DELETE FROM {_TRAIL_META} WHERE key = ?", (f"{_MOVED}{generation}",))
        if not self.in_transaction():  # committed: the files are in the database
            for detached in files:
                detached.path.unlink(missing_ok=True)

    def _insert_logged(self, payloads: list[bytes]) -> None:
        """The rows of logged resources, their index rows written together per family."""
        heads = [orjson.loads(payload.partition(b"\n")[0]) for payload in payloads]
        taken = self._taken_of([(rtype, rid) for rtype, rid, _ in heads])
        indexed: list[tuple[str, int, dict[str, Any]]] = []
        for payload, (rtype, rid, last_updated) in zip(payloads, heads, strict=True):
            blob = payload.partition(b"\n")[2]
            resource = orjson.loads(self._open(resource_aad(rtype, rid, 1), blob))
            if (rtype, rid) in taken:  # its id is taken: kept aside, sealed; the others go in
                assert self._journal is not None
                self._journal.keep_aside(payload, f"{rtype}/{rid}: the id is taken")
                continue
            taken.add((rtype, rid))
            pk, _ = self._insert_new(rtype, rid, last_updated, blob, "POST", family_of(rtype), None)
            indexed.append(self._index_moved(rtype, pk, resource))
            self._observed(rtype, None, resource)
        self._insert_by_family(indexed)

    def _current(self, rtype: str, rid: str) -> tuple[int, int, int] | None:
        self._settle(None, rtype)
        row = (
            self._conn()
            .execute(
                f"SELECT pk, version, deleted FROM {family_of(rtype).resources} WHERE type = ? AND id = ?", (rtype, rid)
            )
            .fetchone()
        )
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    def _settle_first(self, rtype: str) -> None:
        """Before a write of ``rtype`` opens its transaction: the trail's events waiting are moved
        in, so that the write finds its resource where it is written, and none is left behind
        (:meth:`_move_inbox` deletes the main file's copies only outside a transaction)."""
        if not self.in_transaction():
            self._settle(None, rtype)

    def _before(self, rtype: str, rid: str, current: tuple[int, int, int]) -> dict[str, Any] | None:
        """The content a write replaces, read only for the observers of its type (None: deleted)."""
        pk, version, deleted = current
        if deleted or not self.watched(rtype):
            return None
        row = self._conn().execute(f"SELECT content FROM {family_of(rtype).resources} WHERE pk = ?", (pk,)).fetchone()
        content: dict[str, Any] = orjson.loads(self._open(resource_aad(rtype, rid, version), row[0]))
        return content

    def update(self, resource: dict[str, Any], *, expected_version: int | None = None, method: str = "PUT") -> Stored:
        self._settle_first(resource["resourceType"])
        with self.transaction():
            rtype, rid = resource["resourceType"], resource["id"]
            current = self._current(rtype, rid)
            if current is None:
                raise NotFound(f"{rtype}/{rid} does not exist")
            pk, version, _deleted = current
            before = self._before(rtype, rid, current)
            if expected_version is not None and expected_version != version:
                raise VersionConflict(f"{rtype}/{rid} is at version {version}, not {expected_version}")
            new_version = version + 1
            content, last_updated = stamp(resource, new_version)
            blob = self._seal(resource_aad(rtype, rid, new_version), content, deflate=rtype in DEFLATED_TYPES)
            family = family_of(rtype)
            self._keep_replaced(pk, version, family)
            self._conn().execute(
                f"UPDATE {family.resources} SET version = ?, last_updated = ?, deleted = 0, content = ? WHERE pk = ?",
                (new_version, last_updated, blob, pk),
            )
            seq = self._write_version(pk, new_version, last_updated, method, family)
            self._reindex(pk, resource)
            self._observed(rtype, before, resource)
            return Stored(pk, seq, rtype, rid, new_version, last_updated, method, content)

    def delete(self, resource_type: str, resource_id: str, *, expected_version: int | None = None) -> Stored:
        self._settle_first(resource_type)
        with self.transaction():
            current = self._current(resource_type, resource_id)
            if current is None:
                raise NotFound(f"{resource_type}/{resource_id} does not exist")
            pk, version, deleted = current
            if expected_version is not None and expected_version != version:
                raise VersionConflict(f"{resource_type}/{resource_id} is at version {version}")
            if deleted:
                raise Gone(resource_type, resource_id, version)
            before = self._before(resource_type, resource_id, current)
            new_version = version + 1
            last_updated = instant_now()
            # The index of the last live version stays: it lets the access filter decide whether
            # the caller may learn that this resource was deleted (410) or not (404).
            family = family_of(resource_type)
            self._keep_replaced(pk, version, family)
            self._conn().execute(
                f"UPDATE {family.resources} SET version = ?, last_updated = ?, deleted = 1, content = NULL"
                " WHERE pk = ?",
                (new_version, last_updated, pk),
            )
            seq = self._write_version(pk, new_version, last_updated, "DELETE", family)
            self._observed(resource_type, before, None)
            return Stored(pk, seq, resource_type, resource_id, new_version, last_updated, "DELETE", None)

    def expunge(self, resource_type: str, resource_id: str) -> int:
        """Delete the resource's rows: its index values, its versions, the resource itself.

        ``secure_delete`` is on while they go, so that SQLite overwrites the freed cells with zeros
        instead of leaving the index values in free space (encrypted with the database, but
        readable by whoever holds its key);
        :meth:`compact` then rewrites the file for what earlier, ordinary deletes left behind.
        """
        self._settle_first(resource_type)
        with self.transaction():
            conn = self._conn()
            current = self._current(resource_type, resource_id)
            if family_of(resource_type).deferred:  # a copy left in the main file would come back
                conn.execute("DELETE FROM main.resource WHERE type = ? AND id = ?", (resource_type, resource_id))
            if current is None:
                return 0
            pk = current[0]
            before = self._before(resource_type, resource_id, current)
            previous = int(conn.execute("PRAGMA secure_delete").fetchone()[0])
            conn.execute("PRAGMA secure_delete = ON")
            try:
                family = family_of(resource_type)
                for table in family.tables:
                    conn.execute(f"DELETE FROM {table} WHERE res = ?", (pk,))
                versions = conn.execute(f"DELETE FROM {family.versions} WHERE res = ?", (pk,)).rowcount
                conn.execute(f"DELETE FROM {family.resources} WHERE pk = ?", (pk,))
            finally:
                conn.execute(f"PRAGMA secure_delete = {previous}")
            self._observed(resource_type, before, None)
            return int(versions)

    def compact(self) -> str:
        """``VACUUM`` rebuilds the file from the live rows only, then the WAL is checkpointed into
        it and truncated: no freed page, old page image or WAL frame keeps an expunged value.

        Taken under the writer lock, so this process's and other processes' writers wait. A reader
        of another process holding an old snapshot stops the checkpoint short; that is reported,
        and the next checkpoint (any write, or a rerun) finishes it.
        """
        if self.path == ":memory:":
            return "in memory: nothing to compact"
        self._settle(None, None)
        conn = self._conn()
        busy, frames, done = 0, 0, 0
        with self._writer:
            for schema in ("main", TRAIL_SCHEMA):
                conn.execute(f"VACUUM {schema}")
                busy_one, frames_one, done_one = conn.execute(f"PRAGMA {schema}.wal_checkpoint(TRUNCATE)").fetchone()
                busy, frames, done = busy or busy_one, frames + frames_one, done + done_one
        if busy:
            return f"compacted; write-ahead log not truncated yet ({done}/{frames} frames back: a reader is open)"
        return "compacted; write-ahead log truncated"

    def snapshot(self, target: Path) -> None:
        """A copy of the database at ``target`` and of the trail's file beside it
        (:func:`~storage.sqlite.schema.trail_file`) while it serves (``VACUUM INTO``: one read
        transaction each, writers go on), each encrypted under its own key, owner-only, synced.

        Each copy is consistent; the trail's is taken after the main one's, so it holds every
        event of the writes in the main copy (a write's event is in the main file with it until
        moved, and a moved one is in the trail's copy), and perhaps events of later requests."""
        if self.path == ":memory:":
            raise ValueError("an in-memory database has no file to copy")
        self._settle(None, None)  # the copy holds the trail's journal too
        # The trail's file through a connection of its own: SQLCipher writes a copy of an attached
        # file under the main file's key.
        with closing(connect(self.trail_path, self._trail_key, self._settings)) as trail:
            copies = ((self._conn(), self._key, target), (trail, self._trail_key, Path(trail_file(str(target)))))
            for conn, key, copy in copies:
                os.close(os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))  # empty: VACUUM INTO fills it
                with defaults_of(conn, key):  # the copy takes SQLCipher's defaults, not the file's
                    conn.execute("VACUUM INTO ?", (str(copy),))
                with open(copy, "rb+") as handle:
                    os.fsync(handle.fileno())

    # -- reads -------------------------------------------------------------------------------

    def _compiler(self, scope: AccessScope) -> SqlCompiler:
        return SqlCompiler(self._param_type, scope.filter)

    def _reachable(
        self, family: IndexFamily, scope: AccessScope, rtype: str | None, expr: Expr | None
    ) -> tuple[str, list[Any]] | None:
        """A statement selecting the keys of ``family``'s resources whose rows a statement may read
        (with its arguments) — one of ``rtype`` on ``expr`` in ``scope``, or (no type, no condition)
        an include's or a history's, within the scope only; None: any of them.

        Those within the caller's scope for the family's types: a search's candidates and a read's
        resource are checked against that scope, a scoped chain's or include's targets too. Out of
        it, a resource may be read but not found: the policy binds every search of a lazy family
        to one patient (its filter starts with the binding, :meth:`SqlCompiler.driven`), so what
        else a condition reads of an event of another patient cannot make it match. So a patient
        looking at their trail completes their own events, whatever the query. Any of them: the
        server's own statements (an open scope has no binding; a search of the family's type then
        completes its own candidates), and a link the policy makes unscoped to one of the types."""
        compiler, types = self._compiler(scope), [t for t in TRAIL_TYPES if family_of(t) is family]
        held = [e for e in (expr, *map(scope.filter, types)) if e is not None]
        if any(links_lazy(e, scope.filter, unscoped_only=True) for e in held):
            return None
        selects = []
        for ftype in types:
            within = scope.filter(ftype)
            if isinstance(within, Nothing):
                continue
            driver = None if isinstance(within, Everything) else compiler.driven(within, ftype)[0]
            if driver is None and ftype == rtype and expr is not None and not links_lazy(expr, scope.filter):
                driver = compiler.driven(expr, ftype)[0]  # no binding in the scope: the statement's own
            if driver is None:
                return None
            selects.append(driver)
        return (" UNION ALL ".join(selects) or "SELECT NULL", compiler.args)

    def _visible(self, pk: int, rtype: str, scope: AccessScope) -> bool:
        scope_expr = scope.filter(rtype)
        if isinstance(scope_expr, Everything):
            return True
        if isinstance(scope_expr, Nothing):
            return False
        compiler, cond = self._fragments.compile(
            ("visible", rtype), scope_expr, scope, lambda c, skeleton: c.condition(skeleton, "r", rtype)
        )
        sql = f"SELECT 1 FROM {family_of(rtype).resources} r WHERE {cond} AND r.pk = {compiler.arg(pk)}"
        self._settle(compiler, reading=(scope, rtype, scope_expr))
        return self._conn().execute(sql, compiler.args).fetchone() is not None

    def exists(self, resource_type: str, resource_id: str) -> int | None:
        current = self._current(resource_type, resource_id)
        return current[1] if current else None

    def read(self, resource_type: str, resource_id: str, scope: AccessScope) -> Stored:
        self._settle(None, resource_type)
        row = (
            self._conn()
            .execute(
                f"SELECT {_CURRENT_COLUMNS} FROM {family_of(resource_type).resources} r WHERE r.type = ? AND r.id = ?",
                (resource_type, resource_id),
            )
            .fetchone()
        )
        if row is None or not self._visible(row[0], resource_type, scope):
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        stored = self._stored(row)
        if stored.deleted:
            raise Gone(resource_type, resource_id, stored.version)
        return stored

    def vread(self, resource_type: str, resource_id: str, version: int, scope: AccessScope) -> Stored:
        self._settle(None, resource_type)
        family = family_of(resource_type)
        row = (
            self._conn()
            .execute(
                f"SELECT {_STORED_COLUMNS} FROM {family.resources} r JOIN {family.versions} v ON v.res = r.pk"
                " WHERE r.type = ? AND r.id = ? AND v.version = ?",
                (resource_type, resource_id, version),
            )
            .fetchone()
        )
        if row is None or not self._visible(row[0], resource_type, scope):
            raise NotFound(f"{resource_type}/{resource_id}/_history/{version} is not known")
        return self._stored(row)

    def _where(self, scope: AccessScope, rtype: str, expr: Expr, deleted: bool) -> tuple[SqlCompiler, str]:
        """The condition of a search (the query's and the scope's), compiled once per shape and
        kept (:mod:`storage.sqlite.compiled`)."""

        def build(compiler: SqlCompiler, skeleton: Expr) -> str:
            driver, rest = compiler.driven(skeleton, rtype)
            # A candidate the driver names is found by its key and its type checked on its row,
            # which the page reads anyway (``+`` keeps the planner off the type's index: one more
            # page per candidate, seldom cached at a million documents). The price: a candidate
            # of another type is read only to be refused — the index rows hold no type, so a
            # patient's Consents are searched among their documents (bench/README.md).
            typed = "+r.type" if driver is not None else "r.type"
            parts = [f"{typed} = {compiler.arg(rtype)}"]
            if not deleted:
                parts.append("r.deleted = 0")
            if driver is not None:
                parts.append(f"r.pk IN ({driver})")
            parts.append(compiler.condition(rest, "r", rtype))
            return " AND ".join(parts)

        return self._fragments.compile(("where", rtype, deleted), expr, scope, build)

    @staticmethod
    def _within(compiler: SqlCompiler, rtype: str, marks: list[int]) -> str:
        """The watermark of a later page, bound after the condition: what was stored when the
        first page was read, and nothing since."""
        family = family_of(rtype)
        if family.clustered:  # its keys are not in the order of creation: its first version's are
            first = f"(SELECT MIN(seq) FROM {family.versions} WHERE res = r.pk)"
            return f" AND {first} <= {compiler.arg(marks[_FIRST_SEQ])}"
        return f" AND r.pk <= {compiler.arg(marks[family.schema == TRAIL_SCHEMA])}"

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The calling thread's connection, its statements meanwhile reading one state of the
        files: in the caller's transaction, else in a read transaction of their own."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")  # deferred: it takes no lock until its first read, and never writes
        try:
            yield conn
        finally:
            if conn.in_transaction:  # an error may have ended it already
                conn.execute("COMMIT")

    def _order(self, compiler: SqlCompiler, rtype: str, sort: tuple[SortKey, ...]) -> str:
        keys: list[str] = []
        for key in sort:
            kind = KIND_OF_TYPE.get(self._param_type(rtype, key.param) or "")
            if kind is None:
                continue
            family, column = compiler.family(rtype), _SORT_COLUMN[kind]
            if not isinstance(column, str):
                column = column[1] if key.descending else column[0]
            agg = "MAX" if key.descending else "MIN"
            value = _sort_value(compiler, family, kind, column, agg, key.param)
            keys.append(f"{value} IS NULL, {value} {'DESC' if key.descending else 'ASC'}")  # missing last
        keys.append("r.pk ASC")
        return ", ".join(keys)

    def search(self, query: Query, scope: AccessScope) -> SearchResult:
        """A page and its total, read in one snapshot of the files (:meth:`_snapshot`), so that
        the total counts exactly what the pages list.

        A later page (``query.watermark``) sees only what was stored when the first was read. A
        first page sees its snapshot whole, and its watermark is read in it: every resource it
        finds was stored by then, so no watermark is asked of its candidates (for a clustered
        family, a look-up of each one's first version: 8 % of the CPU of a first page of a
        thousand documents, in-process, ``bench/README.md``)."""
        rtype = query.resource_type
        self._settle(None, rtype)  # before the watermark: the events waiting are older than it
        expr = all_of(query.where, scope.filter(rtype))
        resources = family_of(rtype).resources
        total: int | None = None
        if isinstance(expr, Nothing):
            return SearchResult([], [], 0 if query.total else None, self._marks(query.watermark, _SEARCH_MARKS))
        # Compiled once for the count and the page: the policy's filter makes it the larger part
        # of a search's Python time. The page's own arguments are numbered after the condition's.
        compiler, where = self._where(scope, rtype, expr, query.deleted)
        later = query.watermark is not None
        if later:
            marks = self._marks(query.watermark, _SEARCH_MARKS)
            where += self._within(compiler, rtype, marks)
        condition_args = list(compiler.args)  # the page's own arguments come after
        rows: list[tuple[Any, ...]] = []
        order = self._order(compiler, rtype, query.sort) if query.count > 0 else ""
        self._settle(compiler, reading=(scope, rtype, expr))  # it may write: before the snapshot
        with self._snapshot() as conn:
            if not later:
                marks = self._marks(None, _SEARCH_MARKS)
            ends = False  # whether the page is known to end the results
            if query.count > 0:
                # With a total, one row past the page is asked for: when none comes, the page ends
                # the results, and the total is known without counting them again through the
                # filter (about half of the searches by patient; a result exactly one page long
                # among them).
                asked = query.count + 1 if query.total else query.count
                sql = (
                    f"SELECT {_CURRENT_COLUMNS} FROM {resources} r"
                    f" WHERE {where} ORDER BY {order} {_page(asked, query.offset)}"
                )
                rows = conn.execute(sql, compiler.args).fetchall()
                ends = len(rows) <= query.count
                rows = rows[: query.count]
            if query.total:
                if ends and (rows or query.offset == 0):
                    total = query.offset + len(rows)
                else:
                    count_sql = f"SELECT COUNT(*) FROM {resources} r WHERE {where}"
                    total = int(conn.execute(count_sql, condition_args).fetchone()[0])
        matches = [self._stored(row) for row in rows]  # opened once the snapshot is let go
        included = self._includes(matches, query.includes, scope) if query.includes else []
        return SearchResult(matches, included, total, marks)

    def _marks(self, watermark: Watermark | None, parts: tuple[tuple[IndexFamily, str], ...]) -> list[int]:
        """A watermark: per part ``(family, column)``, the last ``pk`` of the family's file's
        resources or ``seq`` of its versions. A search's (:data:`_SEARCH_MARKS`) has both files', so
        that one watermark serves the searches of every type that follow (``$everything``, an
        export); a history's, their versions'. The parts a watermark from an earlier version lacks
        are read now: a number (a link from before the trail had a file) bounds the main file's
        resources only, a list of two (before :attr:`IndexFamily.clustered`) not the first versions."""
        if isinstance(watermark, int):
            main = next((i for i, (family, _) in enumerate(parts) if family.schema == "main"), None)
            given = {} if main is None else {main: watermark}
        else:
            given = dict(enumerate(watermark or []))
            if len(given) > len(parts):
                raise StoreError(f"a watermark has {len(given)} parts, not {len(parts)}")
        missing = [i for i in range(len(parts)) if i not in given]
        if missing:  # in one statement: a search's first page asks for three
            lasts = (
                f"(SELECT COALESCE(MAX({column}), 0) FROM {family.versions if column == 'seq' else family.resources})"
                for family, column in (parts[i] for i in missing)
            )
            given.update(zip(missing, self._conn().execute(f"SELECT {', '.join(lasts)}").fetchone(), strict=True))
        return [int(given[i]) for i in range(len(parts))]

    def _includes(self, matches: list[Stored], includes: tuple[Include, ...], scope: AccessScope) -> list[Stored]:
        return follow_includes(matches, includes, lambda sources, inc: self._include_one(sources, inc, scope))

    def _include_one(self, sources: list[Stored], inc: Include, scope: AccessScope) -> list[Stored]:
        conn = self._conn()
        compiler = self._compiler(scope)
        references = compiler.family(inc.source_type).table("reference")  # the references are the source's
        columns = _CURRENT_COLUMNS.replace("r.", "t.")
        if not inc.reverse:
            marks = compiler.one_of("i.res", (s.pk for s in sources))
            param_cond = f" AND i.param = {compiler.arg(inc.param)}" if inc.param else ""
            selects = []  # one per file its targets may be in
            for family, types in self._files(inc.target_type):
                typed = f"t.type = {compiler.arg(inc.target_type)} AND " if inc.target_type else ""
                scope_sql = self._scope_sql(compiler, scope, "t", types, typed=inc.target_type is not None)
                selects.append(
                    f"SELECT DISTINCT {columns} FROM {references} i"
                    f" JOIN {family.resources} t ON t.type = i.target_type AND t.id = i.target_id"
                    f" WHERE {marks}{param_cond} AND {typed}t.deleted = 0 AND {scope_sql}"
                )
            sql = " UNION ".join(selects)
        else:
            source_filter = scope.filter(inc.source_type)
            if isinstance(source_filter, Nothing):  # the caller sees none: no look-up (nor a plan for one)
                return []
            targets = compiler.any_reference_to("i", ((s.resource_type, s.id) for s in sources))
            param_cond = f" AND {compiler.param_is('i', inc.source_type, inc.param)}" if inc.param else ""
            indexed, narrowed = compiler.reverse(inc.source_type, inc.param, "i", "t", source_filter)
            scope_sql = self._scope_sql(compiler, scope, "t", [inc.source_type], typed=True)
            sql = (
                f"SELECT DISTINCT {columns} FROM {references} i {indexed}"
                f" JOIN {family_of(inc.source_type).resources} t ON t.pk = i.res"
                f" WHERE ({targets}){param_cond}{narrowed} AND t.type = {compiler.arg(inc.source_type)}"
                f" AND t.deleted = 0 AND {scope_sql}"
            )
        # A reverse include reads its sources' index (the compiler knows whose); a forward one reads
        # the resources its references name, of any type when it names none.
        self._settle(compiler, *(() if inc.reverse else (inc.target_type,)), reading=(scope, None, None))
        return [self._stored(row) for row in conn.execute(sql, compiler.args).fetchall()]

    def complete_index(self) -> None:
        """Write every row a lazy family left out (:meth:`_complete`): before a copy elsewhere reads
        the index tables as they are (``dmp-server migrate``)."""
        self._settle(None, None)
        for family in FAMILY_OF_TYPE.values():
            if family.lazy:
                self._complete(family, None)

    def _files(self, resource_type: str | None) -> list[tuple[IndexFamily, list[str]]]:
        """Where resources of ``resource_type`` (None: of any type) are: per file, a family of it
        (for its ``resources`` and ``versions``) and the served types whose resources it holds."""
        if resource_type is not None:
            return [(family_of(resource_type), [resource_type])]
        in_trail = [t for t in self._resource_types if family_of(t).schema == TRAIL_SCHEMA]
        return [(SHARED, [t for t in self._resource_types if t not in in_trail]), (TRAIL, in_trail)]

    @staticmethod
    def _scope_sql(compiler: SqlCompiler, scope: AccessScope, alias: str, types: list[str], *, typed: bool) -> str:
        """The scope filter of resources of ``types``: of that one type when ``typed`` (the caller
        checks it), else of any of them, each row by its type's filter."""
        if typed:
            return " AND ".join(compiler.condition(scope.filter(t), alias, t) for t in types)
        branches = [
            f"({alias}.type = {compiler.arg(t)} AND {compiler.condition(scope.filter(t), alias, t)})" for t in types
        ]
        return "(" + " OR ".join(branches) + ")" if branches else "0"

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
        """A type's or a resource's history is in its file, newest first by ``seq``; the
        system's is in both, newest first by time, and its watermark is one ``seq`` per file."""
        self._settle(None, resource_type)  # before the watermark, as a search
        files = self._files(resource_type)
        marks = self._marks(watermark, tuple((family, "seq") for family, _ in files))
        compiler = self._compiler(scope)
        bases = []
        for (family, types), mark in zip(files, marks, strict=True):
            parts = [f"v.seq <= {compiler.arg(mark)}"]
            if resource_type is not None:
                parts.append(f"r.type = {compiler.arg(resource_type)}")
            parts.append(self._scope_sql(compiler, scope, "r", types, typed=resource_type is not None))
            if resource_id is not None:
                parts.append(f"r.id = {compiler.arg(resource_id)}")
            if since is not None:
                parts.append(f"v.last_updated >= {compiler.arg(since)}")
            if at is not None:
                start, end = at
                parts.append(f"v.last_updated < {compiler.arg(end)}")
                parts.append(
                    f"NOT EXISTS (SELECT 1 FROM {family.versions} w WHERE w.res = v.res AND w.version > v.version"
                    f" AND w.seq <= {compiler.arg(mark)} AND w.last_updated <= {compiler.arg(start)})"
                )
            bases.append(
                f"FROM {family.versions} v JOIN {family.resources} r ON r.pk = v.res WHERE " + " AND ".join(parts)
            )
        self._settle(compiler, reading=(scope, resource_type, None))
        total_sql = "SELECT " + " + ".join(f"(SELECT COUNT(*) {base})" for base in bases)
        # One file: by seq. Both: by time (the 6th column), then seq (the 2nd) within a file.
        order = "v.seq DESC" if len(bases) == 1 else "6 DESC, 2 DESC"
        selects = " UNION ALL ".join(f"SELECT {_STORED_COLUMNS} {base}" for base in bases)
        with self._snapshot() as conn:  # the total counts what the pages list, as a search's
            total = int(conn.execute(total_sql, compiler.args).fetchone()[0])
            rows = conn.execute(f"{selects} ORDER BY {order} {_page(count, offset)}", compiler.args).fetchall()
        return HistoryPage([self._stored(row) for row in rows], total, marks[0] if len(marks) == 1 else marks)

    def save_session(self, data: bytes, ttl_seconds: int) -> str:
        key = secrets.token_urlsafe(24)
        now = int(time.time())
        with self._unsynced():
            conn = self._conn()
            conn.execute("DELETE FROM search_session WHERE expires < ?", (now,))
            blob = self._seal(session_aad(key), data)
            conn.execute("INSERT INTO search_session VALUES (?, ?, ?)", (key, now + ttl_seconds, blob))
        return key

    def load_session(self, key: str) -> bytes | None:
        row = (
            self._conn()
            .execute("SELECT data FROM search_session WHERE key = ? AND expires >= ?", (key, int(time.time())))
            .fetchone()
        )
        return self._open(session_aad(key), row[0]) if row else None

    def enqueue(self, topic: str, payload: bytes) -> int:
        with self.transaction():
            conn = self._conn()
            first = payload if self._cipher is None else b""
            cur = conn.execute(
                "INSERT INTO outbox (topic, created, payload) VALUES (?, ?, ?)", (topic, instant_now(), first)
            )
            message_id = int(cur.lastrowid or 0)
            if self._cipher is not None:
                # The id the payload is bound to is only known once the row exists: seal it now,
                # in the same transaction, so that no plaintext is ever committed.
                blob = self._seal(outbox_aad(message_id, topic), payload)
                conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (blob, message_id))
            return message_id

    def pending(self, topic: str, limit: int = 100, *, now: int | None = None) -> list[Queued]:
        due, args = ("", ()) if now is None else (" AND (due IS NULL OR due <= ?)", (now,))
        rows = (
            self._conn()
            .execute(
                "SELECT id, payload, attempts FROM outbox"
                f" WHERE topic = ? AND delivered IS NULL{due} ORDER BY id {_page(limit)}",
                (topic, *args),
            )
            .fetchall()
        )
        return [Queued(int(r[0]), self._open(outbox_aad(int(r[0]), topic), r[1]), int(r[2])) for r in rows]

    def acknowledge(self, message_id: int) -> None:
        with self.transaction():
            self._conn().execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def defer(self, message_id: int, until: int, attempts: int) -> None:
        with self.transaction():
            self._conn().execute(
                "UPDATE outbox SET due = ?, attempts = ? WHERE id = ? AND delivered IS NULL",
                (until, attempts, message_id),
            )

    # -- private records ----------------------------------------------------------------------

    def put_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None) -> None:
        with self.transaction():
            self._conn().execute(
                "INSERT OR REPLACE INTO record VALUES (?, ?, ?, ?)",
                (kind, key, expires, self._seal(record_aad(kind, key), value)),
            )

    def add_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None, now: int) -> bool:
        with self.transaction():
            conn = self._conn()
            conn.execute("DELETE FROM record WHERE kind = ? AND key = ? AND expires <= ?", (kind, key, now))
            cur = conn.execute(
                "INSERT OR IGNORE INTO record VALUES (?, ?, ?, ?)",
                (kind, key, expires, self._seal(record_aad(kind, key), value)),
            )
            return cur.rowcount == 1

    def get_record(self, kind: str, key: str) -> tuple[bytes, int | None] | None:
        row = (
            self._conn().execute("SELECT value, expires FROM record WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        )
        return (self._open(record_aad(kind, key), row[0]), row[1]) if row else None

    def record_mark(self, kind: str, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value FROM record WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else sealed_mark(row[0])

    def delete_record(self, kind: str, key: str) -> bool:
        with self.transaction():
            cur = self._conn().execute("DELETE FROM record WHERE kind = ? AND key = ?", (kind, key))
            return cur.rowcount == 1

    def record_keys(self, kind: str) -> list[str]:
        rows = self._conn().execute("SELECT key FROM record WHERE kind = ? ORDER BY key", (kind,)).fetchall()
        return [str(row[0]) for row in rows]

    def purge_records(self, now: int) -> int:
        with self.transaction():
            return int(self._conn().execute("DELETE FROM record WHERE expires <= ?", (now,)).rowcount)

    def reindex(self, resource_type: str | None = None) -> int:
        self._settle(None, resource_type)
        conn = self._conn()
        where, args = ("AND type = ?", (resource_type,)) if resource_type else ("", ())
        done = 0
        for family, _types in self._files(resource_type):
            last = 0
            while True:
                rows = conn.execute(
                    f"SELECT pk, type, id, version, content FROM {family.resources}"
                    f" WHERE deleted = 0 AND pk > ? {where} ORDER BY pk LIMIT 500",
                    (last, *args),
                ).fetchall()
                if not rows:
                    break
                with self.transaction():
                    for pk, rtype, rid, version, blob in rows:
                        self._reindex(pk, orjson.loads(self._open(resource_aad(rtype, rid, version), blob)))
                last, done = rows[-1][0], done + len(rows)
        return done

    # -- master key rotation -----------------------------------------------------------------

    def rewrap_all(self, batch: int = 500) -> int:
        """Re-wrap the database key and every blob whose data key is not under the active master key.

        Each batch is read and rewritten inside one write transaction, so a concurrent update is
        never overwritten by an older blob; short batches keep the write lock for little time.
        """
        cipher = self._require_cipher()
        self._settle(None, None)  # the journal's blobs are sealed too: re-wrapped once moved in
        files = () if self.path == ":memory:" else (self.path, self.trail_path)
        done = sum(dbkey.rewrap(Path(file), cipher) for file in files)
        for table, key, column in _SEALED_COLUMNS:
            last: Any = None
            while True:
                with self.transaction():
                    rows = self._sealed_batch(table, key, column, last, batch)
                    if not rows:
                        break
                    active = cipher.master_keys.active.kid
                    stale = [(cipher.rewrap(blob), row_key) for row_key, blob in rows if cipher.kid_of(blob) != active]
                    self._conn().executemany(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", stale)
                last, done = rows[-1][0], done + len(stale)
        return done

    def _sealed_batch(self, table: str, key: str, column: str, after: Any, limit: int) -> list[tuple[Any, bytes]]:
        """The next ``limit`` non-empty blobs of ``table`` in key order, after key ``after``."""
        where = f"length({column}) > 0" + ("" if after is None else f" AND {key} > ?")
        args = () if after is None else (after,)
        sql = f"SELECT {key}, {column} FROM {table} WHERE {where} ORDER BY {key} {_page(limit)}"
        return [(row[0], bytes(row[1])) for row in self._conn().execute(sql, args).fetchall()]

    def key_ids_in_use(self) -> set[str]:
        """The master keys that wrap the database key or at least one stored blob (reads only headers)."""
        if self._cipher is None:
            return set()
        self._settle(None, None)  # the journal's blobs, once moved in, are counted with the rest
        files = () if self.path == ":memory:" else (self.path, self.trail_path)
        kids = {kid for file in files if (kid := dbkey.kid(Path(file), self._cipher))}
        for table, _key, column in _SEALED_COLUMNS:
            sql = f"SELECT DISTINCT substr({column}, 1, {MAX_HEADER_BYTES}) FROM {table} WHERE length({column}) > 0"
            kids.update(self._cipher.kid_of(bytes(row[0])) for row in self._conn().execute(sql))
        return kids

    def _require_cipher(self) -> EnvelopeCipher:
        if self._cipher is None:
            raise MasterKeyError(f"{self.path} is not encrypted: there are no keys to re-wrap")
        return self._cipher
