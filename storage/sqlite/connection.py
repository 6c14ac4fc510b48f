"""Opening the SQLite database, and keeping one connection per thread that closes with its thread.

The driver is SQLCipher (``sqlcipher3``, the DB-API of the standard ``sqlite3`` module over
SQLite with page-level AES-256 encryption): with a key every page of the database and of its
write-ahead log is encrypted and authenticated, the search index included; without a key it is
plain SQLite. The key is passed raw (``x'…'``), so no connection pays SQLCipher's passphrase
derivation (256 000 rounds of PBKDF2-HMAC-SHA512, 0.2 s of CPU here): it is already 256 random
bits.

Pages are authenticated by HMAC-SHA256 in files made since 2026-12 (SHA-256 is done in hardware
here: a page read from the OS's cache costs 7.4–7.9 µs of CPU against 11.0–11.2,
``bench/sqlite_cost.py``), by HMAC-SHA512, SQLCipher 4's default, in older ones. SQLCipher
writes neither the key nor the HMAC into the file: both are in its key file
(:class:`DatabaseKey`, :mod:`storage.sqlite.dbkey`).

Why a connection closes with its thread: a server making one thread per request (the
development server) would otherwise keep one connection (two descriptors and its page cache)
per request it ever served. The connection lives in a per-thread slot; when the thread ends,
Python drops its thread-local data, the slot is collected and a finaliser closes the connection.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlcipher3 import dbapi2 as sqlcipher

from storage.crypto import MasterKeyError

#: The driver's errors (not those of the standard ``sqlite3`` module, a distinct class tree).
OperationalError: type[Exception] = sqlcipher.OperationalError
IntegrityError: type[Exception] = sqlcipher.IntegrityError
DatabaseError: type[Exception] = sqlcipher.DatabaseError

#: The SQLite the store runs on (SQLCipher's, not the standard library's).
SQLITE_VERSION: str = sqlcipher.sqlite_version

#: ``PRAGMA synchronous`` levels a server may run with. FULL (the default) syncs the write-ahead
#: log at every commit, so an acknowledged write survives a power loss; NORMAL syncs only at
#: checkpoints (faster, but the last commits may be lost with the power, never corrupted).
SYNCHRONOUS_LEVELS = ("FULL", "EXTRA", "NORMAL")
#: The levels at which a commit waits for the disk: the trail's journal syncs its appends at these.
SYNCED_LEVELS = ("FULL", "EXTRA")
#: The first bytes of a plaintext SQLite database (an encrypted one starts with random salt).
PLAINTEXT_HEADER = b"SQLite format 3\x00"
#: A database's own files besides the main one; each holds pages of it.
SIDE_FILES = ("-wal", "-shm")
#: The HMACs that authenticate a file's pages: a new file's, then SQLCipher 4's default (older files').
PAGE_HMACS = ("HMAC_SHA256", "HMAC_SHA512")
#: SQLCipher 4's own default, hence the HMAC of every file made before :data:`PAGE_HMACS` (2026-12).
SQLCIPHER_DEFAULT_HMAC = PAGE_HMACS[1]


@dataclass(frozen=True)
class DatabaseKey:
    """What opens an encrypted database file: its raw 256-bit key and the HMAC of its pages."""

    raw: bytes = field(repr=False)
    hmac: str = PAGE_HMACS[0]

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("a database key is 256 bits")
        if self.hmac not in PAGE_HMACS:
            raise ValueError(f"page HMAC {self.hmac!r} is not one of {', '.join(PAGE_HMACS)}")

    @property
    def clause(self) -> str:
        """The key as SQLCipher takes it raw."""
        return f"x'{self.raw.hex()}'"


@dataclass(frozen=True)
class SqliteSettings:
    """How connections are tuned (``DMP_SQLITE_CACHE_MB``, ``DMP_SQLITE_SYNCHRONOUS``)."""

    cache_mb: int = 64  # page cache per connection; one connection per serving thread
    synchronous: str = "FULL"
    #: Whole-database encryption when the store has keys. The server always has it on; off only
    #: where a test or benchmark needs to see or measure what it hides.
    encrypted: bool = True

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS_LEVELS:
            levels = ", ".join(SYNCHRONOUS_LEVELS)
            raise ValueError(f"DMP_SQLITE_SYNCHRONOUS must be one of {levels}, not {self.synchronous!r}")
        if self.cache_mb < 1:
            raise ValueError(f"DMP_SQLITE_CACHE_MB must be at least 1, not {self.cache_mb}")


#: What a store runs with unless told otherwise.
DEFAULT_SETTINGS = SqliteSettings()


def restrict_files(database: Path) -> None:
    """Create the database file owner-only (0600) if missing, and make it and its WAL and shared
    memory owner-only if an earlier version left them readable by others. SQLite gives a new WAL
    and shared-memory file the database file's mode, so they follow."""
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for path in (database, *(database.with_name(database.name + s) for s in SIDE_FILES)):
        if path.exists():
            os.chmod(path, 0o600)


@dataclass(frozen=True)
class Attached:
    """A database file every connection attaches beside the main one (the trail's), with its key
    (None: plaintext) and its share of the page cache."""

    name: str
    path: str
    key: DatabaseKey | None
    cache_share: float


def connect(
    path: str, key: DatabaseKey | None, settings: SqliteSettings, attached: Attached | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode (the store opens its transactions itself), WAL journal.

    With ``key`` the database is opened encrypted; a key that does not open it, or a key missing
    for an encrypted file, is a :class:`MasterKeyError` naming the file, not a driver error. So is
    the ``attached`` file's, attached with the same settings (each file has its own page cache:
    ``cache_share`` of ``cache_mb`` for it).
    """
    conn = _keyed(sqlcipher.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False), path, key)
    _tune(conn, "main", settings.synchronous, settings.cache_mb)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    if attached is not None:
        attach(conn, attached)
        _tune(conn, attached.name, settings.synchronous, max(1, round(settings.cache_mb * attached.cache_share)))
    return cast(sqlite3.Connection, conn)


def attach(conn: Any, attached: Attached) -> None:
    """``attached`` attached to ``conn`` with its key, checked by a first read; ``conn`` closed and
    :class:`MasterKeyError` if the key does not open it."""
    # SQLCipher attaches a file without a KEY clause under the main file's key: '' says plaintext.
    key_clause = attached.key.clause if attached.key is not None else ""
    try:
        with defaults_of(conn, attached.key):  # an attached file takes no pragma of its own
            conn.execute(f'ATTACH DATABASE ? AS {attached.name} KEY "{key_clause}"', (attached.path,))
            conn.execute(f"SELECT count(*) FROM {attached.name}.sqlite_master").fetchone()
    except DatabaseError:
        conn.close()
        raise MasterKeyError(f"{attached.path} does not open with its database key") from None


#: Held while SQLCipher's process-wide defaults are another file's (:func:`defaults_of`).
_DEFAULTS = threading.Lock()


@contextmanager
def defaults_of(conn: Any, key: DatabaseKey | None) -> Iterator[None]:
    """SQLCipher's process-wide page HMAC set to ``key``'s while the block runs, for the files
    that take no connection's settings: one attached (``ATTACH``, ``sqlcipher_export``'s target)
    or written by ``VACUUM INTO``. Every such opening in the process goes through here, one at a
    time, and the default is SQLCipher's own again after. A connection's main file sets its own
    HMAC after its key (:func:`_keyed`), so it never depends on the default. A backup's copy holds
    the lock while it writes: in the backup command's process, where nothing else waits on it."""
    if key is None:
        yield
        return
    with _DEFAULTS:
        conn.execute(f"PRAGMA cipher_default_hmac_algorithm = {key.hmac}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA cipher_default_hmac_algorithm = {SQLCIPHER_DEFAULT_HMAC}")


def _tune(conn: Any, schema: str, synchronous: str, cache_mb: int) -> None:
    """One file's journal, syncing and page cache (each file has its own)."""
    conn.execute(f"PRAGMA {schema}.journal_mode = WAL")
    conn.execute(f"PRAGMA {schema}.synchronous = {synchronous}")
    conn.execute(f"PRAGMA {schema}.cache_size = {-1024 * cache_mb}")  # negative: in KiB


def connect_read_only(path: Path, key: DatabaseKey | None, attached: Attached | None = None) -> sqlite3.Connection:
    """A connection that reads ``path`` and can write nothing (a tool copying a store elsewhere),
    with ``attached`` (its path a read-only URI) attached."""
    conn = _keyed(sqlcipher.connect(f"file:{path}?mode=ro", uri=True), str(path), key)
    if attached is not None:
        attach(conn, attached)
    return cast(sqlite3.Connection, conn)


def connect_untuned(path: Path, key: DatabaseKey | None) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode, checked by a first read, tuned in nothing
    (a tool's, copying the file or testing a key)."""
    return cast(sqlite3.Connection, _keyed(sqlcipher.connect(str(path), isolation_level=None), str(path), key))


def key_opens(path: Path, key: DatabaseKey) -> bool:
    """Whether ``key`` is the key of the database at ``path``."""
    try:
        connect_untuned(path, key).close()
    except MasterKeyError:
        return False
    return True


def _keyed(conn: Any, path: str, key: DatabaseKey | None) -> Any:
    """``conn`` opened with ``key``, checked by a first read."""
    try:
        if key is not None:
            conn.execute(f'PRAGMA key = "{key.clause}"')
            conn.execute(f"PRAGMA cipher_hmac_algorithm = {key.hmac}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the key is checked on first read
    except DatabaseError:
        conn.close()
        if key is None:
            raise MasterKeyError(f"{path} is encrypted: open it with its database key") from None
        raise MasterKeyError(f"{path} does not open with its database key (another database's key file?)") from None
    return conn


class _Slot:
    """One thread's connection and its transaction nesting depth."""

    __slots__ = ("__weakref__", "conn", "depth")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.depth = 0


class ThreadConnections:
    """At most one connection per thread, closed when the thread ends or on :meth:`close_all`."""

    def __init__(self, opener: Callable[[], sqlite3.Connection]):
        self._opener = opener
        self._local = threading.local()
        self._open: dict[int, sqlite3.Connection] = {}
        self._lock = threading.RLock()  # a finaliser may run in a thread already holding it
        self._tokens = itertools.count()

    def slot(self) -> _Slot:
        """The calling thread's slot, its connection opened on first use."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            conn = self._opener()
            slot = _Slot(conn)
            token = next(self._tokens)
            with self._lock:
                self._open[token] = conn
            weakref.finalize(slot, self._release, token)
            self._local.slot = slot
        return slot

    def _release(self, token: int) -> None:
        with self._lock:
            conn = self._open.pop(token, None)
        if conn is not None:
            conn.close()

    def count(self) -> int:
        """How many connections are open now (one per live thread that used the store)."""
        with self._lock:
            return len(self._open)

    def close_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open.values()), {}
        for conn in conns:
            conn.close()
        self._local = threading.local()
