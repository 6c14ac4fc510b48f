"""Write transactions by group commit (:mod:`storage.sqlite.group`): concurrent transactions of a
process share a commit, each returns only once its writes are committed, and a failing one is
undone alone. Real SQLite connections on a real file; threads made to meet where a group forms."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.sqlite.connection import DEFAULT_SETTINGS, IntegrityError, SqliteSettings, connect
from storage.sqlite.group import GroupCommit
from storage.sqlite.writer import WriterLock

WAIT = 10.0  # seconds a test waits for another thread before it fails


class Harness:
    """A database, a group committer on it, and one connection per thread, as the store has."""

    def __init__(self, path: Path, settings: SqliteSettings = DEFAULT_SETTINGS):
        self.path = str(path)
        self.settings = settings
        self.groups = GroupCommit(WriterLock(self.path), settings.synchronous)
        self._local = threading.local()
        self.opened: list[sqlite3.Connection] = []
        with self.groups.member(self.conn()) as conn:
            conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE item (name TEXT, parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, None, self.settings)
            self._local.conn = conn
            self.opened.append(conn)
        return conn

    def committed(self) -> list[str]:
        """What another connection sees: only committed rows."""
        reader = connect(self.path, None, self.settings)
        try:
            return sorted(name for (name,) in reader.execute("SELECT name FROM item"))
        finally:
            reader.close()

    def waiting(self, count: int) -> None:
        """Until ``count`` threads wait for their turn."""
        deadline = time.monotonic() + WAIT
        while self.groups._waiting < count:
            assert time.monotonic() < deadline, "the other thread never came to wait for its turn"
            time.sleep(0.001)

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "group.db")
    yield h
    h.close()


class Member(threading.Thread):
    """A thread running one transaction: ``body(conn)`` inside it; what it raised, if anything."""

    def __init__(self, harness: Harness, body: Callable[[sqlite3.Connection], Any], *, synced: bool = True):
        super().__init__(daemon=True)
        self.harness, self.body, self.synced = harness, body, synced
        self.error: BaseException | None = None
        self.entered, self.returned = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            with self.harness.groups.member(self.harness.conn(), synced=self.synced) as conn:
                self.entered.set()
                self.body(conn)
        except BaseException as exc:
            self.error = exc
        self.returned.set()


def _insert(name: str, parent: int | None = None) -> Callable[[sqlite3.Connection], None]:
    def body(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO item VALUES (?, ?)", (name, parent))

    return body


def _insert_then_wait(name: str, event: threading.Event) -> Callable[[sqlite3.Connection], None]:
    def body(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO item VALUES (?, NULL)", (name,))
        assert event.wait(WAIT)

    return body


def _meet(harness: Harness, first: Member, second: Member) -> None:
    """``first`` inside its transaction, then ``second`` waiting for its turn."""
    first.start()
    assert first.entered.wait(WAIT)
    second.start()
    harness.waiting(1)


def test_a_lone_transaction_commits_at_once(harness: Harness) -> None:
    with harness.groups.member(harness.conn()) as conn:
        conn.execute("INSERT INTO item VALUES ('alone', NULL)")
    assert harness.committed() == ["alone"]


def test_a_waiting_transaction_joins_and_commits_for_both(harness: Harness) -> None:
    """A hands its open transaction to B, who waited; A returns only once B committed both."""
    first_may_end, second_inside, second_may_end = threading.Event(), threading.Event(), threading.Event()
    seen_by_second: list[list[str]] = []

    def second(conn: sqlite3.Connection) -> None:
        seen_by_second.append(sorted(name for (name,) in conn.execute("SELECT name FROM item")))
        conn.execute("INSERT INTO item VALUES ('second', NULL)")
        second_inside.set()
        assert second_may_end.wait(WAIT)

    a, b = Member(harness, _insert_then_wait("first", first_may_end)), Member(harness, second)
    _meet(harness, a, b)
    first_may_end.set()
    assert second_inside.wait(WAIT)
    assert not a.returned.wait(0.05), "A returned before its writes were committed"
    assert harness.committed() == [], "nothing is committed while the group is open"
    second_may_end.set()
    assert a.returned.wait(WAIT) and b.returned.wait(WAIT)
    assert (a.error, b.error) == (None, None)
    assert seen_by_second == [["first"]]  # B ran inside A's transaction
    assert harness.committed() == ["first", "second"]


def test_a_failing_member_is_undone_alone_and_the_others_commit(harness: Harness) -> None:
    first_may_end = threading.Event()

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO item VALUES ('undone', NULL)")
        raise ValueError("refused")

    a, b = Member(harness, _insert_then_wait("kept", first_may_end)), Member(harness, failing)
    _meet(harness, a, b)
    first_may_end.set()
    assert a.returned.wait(WAIT) and b.returned.wait(WAIT)
    assert a.error is None
    assert isinstance(b.error, ValueError)
    assert harness.committed() == ["kept"]
    with harness.groups.member(harness.conn()) as conn:  # the lock is free again
        conn.execute("INSERT INTO item VALUES ('after', NULL)")
    assert harness.committed() == ["after", "kept"]


def test_a_commit_that_fails_fails_every_member(harness: Harness) -> None:
    """A deferred foreign key is checked at COMMIT: B's broken row fails the group's commit, and
    A, whose own writes were fine, is not told they were stored."""
    first_may_end = threading.Event()
    a, b = Member(harness, _insert_then_wait("fine", first_may_end)), Member(harness, _insert("orphan", parent=404))
    _meet(harness, a, b)
    first_may_end.set()
    assert a.returned.wait(WAIT) and b.returned.wait(WAIT)
    assert isinstance(a.error, IntegrityError) and isinstance(b.error, IntegrityError)
    assert harness.committed() == []


def test_a_synced_transaction_does_not_wait_in_an_unsynced_group(harness: Harness) -> None:
    """An unsynced group open when a synced transaction comes is committed first: the unsynced
    member returns without waiting for the synced one, whose commit is synced."""
    first_may_end, second_may_end = threading.Event(), threading.Event()

    def synced(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO item VALUES ('document', NULL)")
        synchronous.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))
        assert second_may_end.wait(WAIT)

    synchronous: list[int] = []
    a, b = Member(harness, _insert_then_wait("session", first_may_end), synced=False), Member(harness, synced)
    _meet(harness, a, b)
    first_may_end.set()
    assert a.returned.wait(WAIT), "the unsynced member waited for the synced one"
    assert harness.committed() == ["session"]
    second_may_end.set()
    assert b.returned.wait(WAIT)
    assert (a.error, b.error) == (None, None)
    assert synchronous == [2]  # FULL: the synced member's own transaction
    assert harness.committed() == ["document", "session"]


def test_many_threads_each_see_their_writes_committed_on_return(harness: Harness) -> None:
    """Under real contention every transaction is committed when it returns, none is lost, and
    transactions did share commits (fewer commits than transactions)."""
    threads, each = 8, 25
    commits = 0
    original_close = harness.groups._close

    def counting_close(group: Any, *, commit: bool) -> None:
        nonlocal commits
        commits += 1
        original_close(group, commit=commit)

    harness.groups._close = counting_close  # type: ignore[method-assign]
    late: list[str] = []

    def work(index: int) -> None:
        for n in range(each):
            name = f"t{index}-{n}"
            with harness.groups.member(harness.conn()) as conn:
                conn.execute("INSERT INTO item VALUES (?, NULL)", (name,))
                time.sleep(0.0005)  # a request's work inside its transaction
            if name not in harness.committed():
                late.append(name)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert late == []
    assert len(harness.committed()) == threads * each
    assert commits < threads * each
