"""Write transactions by group commit: the transactions of a process's concurrent requests
committed together.

Why: every commit costs more than its own writes. It syncs the log to disk; it writes, encrypted,
every page it changed, and the pages the transactions of one process change overlap (the last
page of each table and of each index by resource, the index pages of a common code); and, worst,
every *other* connection that reads next finds the log changed and drops its whole page cache
(:mod:`storage.sqlite.journal` says why), so that its next statement reads and decrypts its pages
again. Under concurrent writes every request started cold.

How: a process's request threads take turns (a thread lock); the first opens a transaction on its
own connection, holding the writer lock of all processes (:class:`storage.sqlite.writer.WriterLock`),
and each request runs inside it under a savepoint of its own (a failing request is undone alone).
When a request is done and another is waiting for its turn, it hands the open transaction over and
waits; the last one — none waiting, or the group full (:data:`MAX_MEMBERS`) — commits for all and
wakes them. Each request still returns only once its own writes are committed (and synced), or
raises the commit's error: none is answered before its writes are durable. A lone request commits
at once, as before.

What a member sees: the writes of the group's earlier members, which commit with its own or not
at all (a commit that fails fails every member). Members run one at a time, as transactions did.

A request that fails after others joined commits the group before it raises, so that no
transaction stays open on a connection whose thread has moved on. A transaction that need not
be synced (``synced=False``: a paging session, whose loss costs a client a search) joins any group;
a synced one finding an unsynced group open commits it first.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from storage.sqlite.connection import DatabaseError
from storage.sqlite.writer import WriterLock

#: Requests committed together at most: the group holds the writer lock of every process meanwhile.
MAX_MEMBERS = 8


class GroupAborted(Exception):
    """The group's transaction was rolled back as a whole: its members' writes are not stored."""


class _Group:
    """One open transaction and the requests in it."""

    __slots__ = ("conn", "done", "error", "members", "synced")

    def __init__(self, conn: sqlite3.Connection, synced: bool):
        self.conn = conn
        self.synced = synced
        self.members = 0
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommit:
    """The group commits of one store in one process."""

    def __init__(self, writer: WriterLock, synchronous: str, *, max_members: int = MAX_MEMBERS):
        self._writer = writer
        self._synchronous = synchronous
        self._max_members = max_members
        self._turn = threading.Lock()
        self._counter = threading.Lock()
        self._waiting = 0
        self._open: _Group | None = None

    @contextmanager
    def member(self, own: sqlite3.Connection, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction for the calling thread: the connection its statements must use (the
        group's, perhaps another thread's), inside which it is one member. Returns once committed."""
        self._take_turn()
        try:
            group = self._join(own, synced)
            group.conn.execute("SAVEPOINT member")
        except BaseException:
            self._turn.release()
            raise
        try:
            yield group.conn
            group.conn.execute("RELEASE member")
        except BaseException:
            self._leave_failed(group)
            raise
        group.members += 1
        if self._waiting and group.members < self._max_members:
            self._turn.release()  # the next member commits, or hands over in turn
            group.done.wait()
        else:
            self._close(group, commit=True)
            self._turn.release()
        if group.error is not None:
            raise group.error

    def _leave_failed(self, group: _Group) -> None:
        """A failed member's writes undone, and the group closed: what the members before it
        wrote is committed (its thread may use its own connection, the group's perhaps, again)."""
        try:
            try:
                group.conn.execute("ROLLBACK TO member")
                group.conn.execute("RELEASE member")
            except BaseException:  # its writes could not be undone alone: nothing of the group is kept
                group.error = GroupAborted("a request of this group commit could not be undone alone")
                self._close(group, commit=False)
            else:
                self._close(group, commit=group.members > 0)
        finally:
            self._turn.release()

    def _take_turn(self) -> None:
        with self._counter:
            self._waiting += 1
        self._turn.acquire()
        with self._counter:
            self._waiting -= 1

    def _join(self, own: sqlite3.Connection, synced: bool) -> _Group:
        group = self._open
        if group is not None and synced and not group.synced:
            self._close(group, commit=True)  # its members waited for an unsynced commit: given now
            group = None
        if group is None:
            group = self._begin(own, synced)
        return group

    def _begin(self, conn: sqlite3.Connection, synced: bool) -> _Group:
        self._writer.__enter__()
        try:
            if not synced:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore(conn, synced)
            self._writer.__exit__(None, None, None)
            raise
        group = _Group(conn, synced)
        self._open = group
        return group

    def _close(self, group: _Group, *, commit: bool) -> None:
        """End the group's transaction (its writes committed, or none), then wake its members."""
        try:
            group.conn.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException as exc:  # the commit failed: every member fails with it
            group.error = exc
            with contextlib.suppress(DatabaseError):  # SQLite may have rolled it back already
                group.conn.execute("ROLLBACK")
        finally:
            self._restore(group.conn, group.synced)
            self._open = None
            self._writer.__exit__(None, None, None)
            group.done.set()

    def _restore(self, conn: sqlite3.Connection, synced: bool) -> None:
        if not synced:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
