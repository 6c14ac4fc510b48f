"""The SQLite log checkpointed by a thread of the serving process, not by the committing writers
(:mod:`storage.sqlite.upkeep`; the same thread's moves of the trail's journal are tested with the
journal, ``tests/test_trail_journal.py``). Real stores on real files, a real thread; what is
observed is the database file itself, which in WAL mode only a checkpoint writes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.fhir.service import SERVED_TYPES
from storage.crypto import EnvelopeCipher, MasterKeys
from storage.sqlite.connection import SqliteSettings
from storage.sqlite.store import SqliteStore
from storage.sqlite.upkeep import FALLBACK_PAGES, Upkeep
from tests.test_storage_contract import _index, _param_type, doc, patient

WAIT = 10.0
THREAD = "dmp-sqlite-upkeep"


def _store(directory: Path) -> SqliteStore:
    cipher = EnvelopeCipher(MasterKeys.load_or_create(directory))
    return SqliteStore(directory / "store.sqlite3", _index, _param_type, SERVED_TYPES, cipher, SqliteSettings())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = _store(tmp_path)
    yield opened
    opened.close()


def _write(store: SqliteStore, count: int, start: int = 0) -> None:
    """``count`` commits, from a thread of their own: a serving thread, whose connection is new."""

    def run() -> None:
        for n in range(start, start + count):
            with store.transaction():
                store.create(patient(f"p{n}", f"Family{n}"))
                store.create(doc(f"d{n}", f"p{n}"))

    writer = threading.Thread(target=run)
    writer.start()
    writer.join(60)


def _database_written(store: SqliteStore) -> int:
    return Path(store.path).stat().st_mtime_ns


def _wait_until_changed(read: int, store: SqliteStore) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if _database_written(store) != read:
            return True
        time.sleep(0.02)
    return False


def _upkeep_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD]


def test_the_thread_checkpoints_what_writers_left_in_the_log(store: SqliteStore) -> None:
    _write(store, 3)  # well under SQLite's own threshold: no writer checkpoints
    before = _database_written(store)
    time.sleep(0.3)
    assert _database_written(store) == before, "a writer checkpointed: the test cannot tell the thread's work"
    store.start_upkeep()
    _write(store, 3, start=3)
    assert _wait_until_changed(before, store), "nothing copied the log into the database"


def test_serving_writers_leave_checkpoints_to_the_thread_up_to_the_fallback(store: SqliteStore) -> None:
    """With the thread started, a serving connection checkpoints only past FALLBACK_PAGES: with the
    thread stopped, writes of more than SQLite's 1 000 pages leave the database file alone."""
    store.start_upkeep()
    assert store._upkeep is not None
    store._upkeep.stop()
    before = _database_written(store)
    frames = Path(f"{store.path}-wal")
    _write(store, 60)
    pages = frames.stat().st_size // 4096
    assert 1_000 < pages < FALLBACK_PAGES, f"{pages} pages in the log: not between the two thresholds"
    assert _database_written(store) == before


def test_a_store_not_serving_checkpoints_as_sqlite_does(store: SqliteStore) -> None:
    """A store of a command or a test starts no thread, and its writers checkpoint at 1 000 pages."""
    before = _database_written(store)
    _write(store, 60)
    assert _database_written(store) != before
    assert _upkeep_threads() == []


def test_close_stops_the_thread(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.start_upkeep()
    store.start_upkeep()  # once per store
    assert len(_upkeep_threads()) == 1
    store.close()
    assert _upkeep_threads() == []


def test_the_thread_runs_until_stopped_and_logs_a_lasting_failure_once(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    def failing() -> None:
        calls.append(time.monotonic())
        raise OSError("disk full")

    upkeep = Upkeep(failing, lambda: None, interval=0.01)
    with caplog.at_level(logging.ERROR, logger="storage.sqlite.upkeep"):
        upkeep.start()
        deadline = time.monotonic() + WAIT
        while len(calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        upkeep.stop()
    assert len(calls) >= 5, "the thread stopped after a failure"
    assert _upkeep_threads() == []
    after = len(calls)
    time.sleep(0.05)
    assert len(calls) == after, "the thread ran on after stop()"
    assert [record.getMessage() for record in caplog.records] == [
        "the write-ahead log could not be checkpointed (tried again)"
    ]


def test_the_thread_moves_the_journal_when_woken_and_only_then() -> None:
    moves: list[str] = []
    upkeep = Upkeep(lambda: None, lambda: moves.append(threading.current_thread().name), interval=0.01)
    upkeep.start()
    try:
        time.sleep(0.1)  # ten checkpoints
        assert moves == []
        upkeep.wake()
        deadline = time.monotonic() + WAIT
        while not moves and time.monotonic() < deadline:
            time.sleep(0.01)
        assert moves == [THREAD]
    finally:
        upkeep.stop()
    assert _upkeep_threads() == []
