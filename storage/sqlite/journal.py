"""The trail's journal: AuditEvents made durable by an append to a file, moved into the database in batches.

Why: every request about a record leaves an AuditEvent (R17), durable before the request is
answered. Committed to the database one request (or one group commit) at a time, each costs a
write transaction — and, worse, every *other* connection's page cache: in WAL mode a connection
that finds the log changed at the start of its next read cannot tell which pages changed, drops
its whole cache and reads (and here decrypts) every page again. Under load nearly every request
started cold: +1 ms of CPU per read, +2.2 ms per search by patient (``bench/foreign_commit.py``).
Appended here instead, an event costs one ``write`` and one ``fsync`` of its own file, which no
database connection watches; the store moves the journal into the database in one transaction
once it holds :data:`DRAIN_BYTES` (in a serving process, on a thread of its own:
:mod:`storage.sqlite.upkeep`), or before any statement that reads the trail
(:meth:`storage.sqlite.store.SqliteStore._drain`).

The file: a header (magic and a random generation), then records, each a length, a CRC-32 and
a payload (:func:`frame`). Appends are whole writes under a lock (a thread lock, then ``flock``
across worker processes); the sync follows outside it, so that one sync covers the appends of
others meanwhile. To be moved, the live file is *detached* — renamed, under the lock, to a name
carrying its generation — and the next append starts a new one: appends never wait for a move.
The store records in the same transaction which generation it moved, so that a crash between
its commit and the detached file's removal does not move it twice (:meth:`Journal.detached`).

A crash (the machine's, not a process's: a write to a regular file is whole or not at all for a
killed process) can leave a torn record at the end of the file: no append after it was
acknowledged, since each acknowledgement waited for a sync that covered it. Reading stops at the
first record that does not check; what follows it is kept aside in ``<journal>.rejected`` and
logged, never silently dropped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: What a journal file starts with: the format, then :data:`GENERATION_BYTES` random bytes.
MAGIC = b"DMPJ\x01"
GENERATION_BYTES = 16
HEADER_BYTES = len(MAGIC) + GENERATION_BYTES
#: A record's head: its payload's length and CRC-32.
_HEAD = struct.Struct(">II")
#: The store moves the journal into the database once the live file holds this much (about 250
#: AuditEvents): the cost of a move, and its commit seen by every connection, spread over many.
#: Every commit empties the page cache of every other connection; at 128 KiB (64 events) a
#: serving thread's cache lasted about eight requests, at 512 KiB about thirty (with the 64 MB
#: cache of ``DMP_SQLITE_CACHE_MB``: reads 15 % faster, searches 3–26 %, ``bench/README.md``).
DRAIN_BYTES = 512 * 1024
#: A serving process moves the journal on a thread of its own (:mod:`storage.sqlite.upkeep`); the
#: request whose append takes the live file past this much moves it itself, so that the journal
#: stays bounded when the thread falls behind or stops (four batches: about a thousand events).
FALLBACK_BYTES = 4 * DRAIN_BYTES


def frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Detached:
    """A journal file taken off appends, waiting to be moved into the database."""

    path: Path
    generation: str  # hex, as in its name
    aside: Path  # where what cannot be read is kept (:func:`_reject`)

    def records(self) -> list[bytes]:
        """Its payloads, in order, up to the first record that does not check (kept aside)."""
        data = self.path.read_bytes()
        if not data.startswith(MAGIC):
            _reject(self.path, data, "no journal header", self.aside)
            return []
        payloads, at = [], HEADER_BYTES
        while at + _HEAD.size <= len(data):
            length, crc = _HEAD.unpack_from(data, at)
            payload = data[at + _HEAD.size : at + _HEAD.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            payloads.append(payload)
            at += _HEAD.size + length
        if at < len(data):
            _reject(self.path, data[at:], "a torn or damaged record and what follows it", self.aside)
        return payloads


def _reject(path: Path, data: bytes, why: str, aside: Path) -> None:
    """Keep unreadable bytes aside for an operator, owner-only, and say so."""
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.error("trail journal %s: %d bytes not moved into the database (%s), kept in %s", path, len(data), why, aside)


class Journal:
    """The journal beside one database file, shared by the threads and processes that open it."""

    def __init__(self, path: str, *, sync: bool):
        self.path = Path(path)
        self.aside = self.path.with_name(f"{self.path.name}.rejected")
        self._sync = sync
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _opened(self) -> int:
        """The file this process appends to, opened if it has none (or forked since): maybe a
        detached one, which :meth:`_locked` finds out once it holds the lock."""
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._pid = os.getpid()
        return self._fd

    def _live_size(self, fd: int) -> int | None:
        """The size of the file ``fd`` opens if it is the live one (None: detached since)."""
        try:
            opened = os.fstat(fd)
            return opened.st_size if os.stat(self.path).st_ino == opened.st_ino else None
        except FileNotFoundError:
            return None

    @contextmanager
    def _locked(self) -> Iterator[tuple[int, int]]:
        """The live file, locked, and its size. Checked once locked: another process may have
        detached the file before or while this one waited for its lock, and what is appended to a
        detached file after it was read would be lost."""
        with self._threads:
            while True:
                fd = self._opened()
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = self._live_size(fd)
                if size is not None:
                    break
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                self._fd = None
            try:
                yield fd, size
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def append(self, payloads: list[bytes]) -> int:
        """Append ``payloads`` and return once they are on disk (with ``sync``); all of them or,
        on an error, none. Returns the live file's size after them."""
        data = b"".join(frame(p) for p in payloads)
        with self._locked() as (fd, start):
            if start == 0:
                data = MAGIC + os.urandom(GENERATION_BYTES) + data
            try:
                if os.write(fd, data) != len(data):
                    raise OSError("short write to the trail's journal (is the disk full?)")
            except BaseException:
                os.ftruncate(fd, start)
                raise
            synced = os.dup(fd)  # its own: the live file may be detached, and ``fd`` closed, meanwhile
        try:
            if self._sync:
                os.fsync(synced)  # outside the lock: one sync covers the appends made meanwhile
        finally:
            os.close(synced)
        return start + len(data)

    def waiting(self, live_bytes: int = HEADER_BYTES + 1) -> bool:
        """Whether anything waits to be moved: a live file of ``live_bytes`` or more (by default,
        one holding a record), or a detached file."""
        try:
            if self.path.stat().st_size >= live_bytes:
                return True
        except FileNotFoundError:
            pass
        return any(self._detached_paths())

    def _detached_paths(self) -> Iterator[Path]:
        prefix = f"{self.path.name}-"
        return (path for path in self.path.parent.iterdir() if path.name.startswith(prefix))

    def detach(self) -> None:
        """Take the live file off appends (if it holds records): the next append starts a new one."""
        with self._locked() as (fd, size):
            header = os.pread(fd, HEADER_BYTES, 0)
            if size and not header.startswith(MAGIC):  # a first append torn by a crash
                _reject(self.path, os.pread(fd, size, 0), "no journal header", self.aside)
                os.ftruncate(fd, 0)
            if size <= HEADER_BYTES or not header.startswith(MAGIC):
                return
            generation = header[len(MAGIC) :].hex()
            os.rename(self.path, self.path.with_name(f"{self.path.name}-{generation}"))

    def detached(self) -> list[Detached]:
        """The detached files, oldest first."""
        found = []
        for path in self._detached_paths():
            try:
                found.append((path.stat().st_mtime_ns, Detached(path, path.name.rsplit("-", 1)[1], self.aside)))
            except FileNotFoundError:  # removed meanwhile by another process's move
                continue
        return [detached for _, detached in sorted(found, key=lambda pair: pair[0])]

    def keep_aside(self, payload: bytes, why: str) -> None:
        """Keep a record that cannot be moved in (as written: sealed) aside for an operator."""
        _reject(self.path, frame(payload), why, self.aside)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
