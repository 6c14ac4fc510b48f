"""The trail's journal (storage/sqlite/journal.py): AuditEvents logged by an append to a file of
their own, moved into the database in batches or before anything reads them.

Everything here is real: the SQLite store on files in a temporary directory, its journal, a
second store on the same files as another worker process opens them, the files' bytes damaged
as a crash damages them, and a write cut short by a file-size limit (``RLIMIT_FSIZE``), as a full
disk cuts it.
"""

from __future__ import annotations

import logging
import resource
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage.crypto import DEFLATED_FORMAT, FORMAT, DecryptionError
from storage.interface import NotFound
from storage.query import (
    ANY_SYSTEM,
    EVERYTHING,
    OPEN_SCOPE,
    Chain,
    Expr,
    Has,
    Include,
    Not,
    Query,
    Reference,
    Token,
    all_of,
)
from storage.sqlite.compiler import links_lazy
from storage.sqlite.journal import DRAIN_BYTES, FALLBACK_BYTES, HEADER_BYTES, MAGIC, Journal, frame
from storage.sqlite.schema import TRAIL
from storage.sqlite.store import SqliteStore
from tests.test_storage_contract import _sqlite, doc, patient, trail_event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = _sqlite(tmp_path)
    assert isinstance(opened, SqliteStore)
    opened.create(patient("p1", "Martin"))
    opened.create(doc("d1", "p1"))
    yield opened
    opened.close()


def journal_of(store: SqliteStore) -> Path:
    return Path(f"{store.path}.journal")


def in_database(store: SqliteStore, rid: str) -> bool:
    """Whether the event's row is in the database, read past the store (and its journal): in the
    trail's file, or in the main one where a write's event waits to be moved."""
    sql = "SELECT 1 FROM {} WHERE type = 'AuditEvent' AND id = ?"
    conn = store._conn()
    return any(conn.execute(sql.format(table), (rid,)).fetchone() for table in ("trail.resource", "main.resource"))


def event(eid: str, action: str = "R") -> dict[str, Any]:
    return trail_event(eid, "p1", action, "2024-02-01T10:00:00Z", about="DocumentReference/d1")


def test_a_logged_event_is_on_disk_in_the_journal_not_yet_in_the_database(store: SqliteStore) -> None:
    store.log([event("e1"), event("e2")])
    assert journal_of(store).stat().st_size > HEADER_BYTES
    assert not in_database(store, "e1")
    assert stat.S_IMODE(journal_of(store).stat().st_mode) == 0o600  # owner-only, as the database
    assert store.read("DocumentReference", "d1", OPEN_SCOPE).id == "d1"  # a document's read leaves it waiting
    assert not in_database(store, "e1")


def _ids(found: Any) -> set[str]:
    return {m.id for m in found}


def _search(s: SqliteStore) -> set[str]:
    return _ids(s.search(Query("AuditEvent", Token("_id", ANY_SYSTEM, "e1")), OPEN_SCOPE).matches)


def _has(s: SqliteStore) -> set[str]:
    who = Query("Patient", Has("AuditEvent", "entity", Token("action", ANY_SYSTEM, "X")))
    return _ids(s.search(who, OPEN_SCOPE).matches)


def _revinclude(s: SqliteStore) -> set[str]:
    about = Include("AuditEvent", "entity", reverse=True)
    documents = Query("DocumentReference", Reference("subject", "Patient", "p1"), includes=(about,))
    return _ids(s.search(documents, OPEN_SCOPE).included)


def _include(s: SqliteStore) -> set[str]:
    listed = {"resourceType": "List", "id": "l1", "status": "current", "mode": "working"}
    s.create({**listed, "entry": [{"item": {"reference": "AuditEvent/e1"}}]})
    lists = Query("List", Token("_id", ANY_SYSTEM, "l1"), includes=(Include("List", "item"),))
    return _ids(s.search(lists, OPEN_SCOPE).included)


def _key_accounting(s: SqliteStore) -> set[str]:
    s.key_ids_in_use()
    return {"e1"} if in_database(s, "e1") else set()


def _snapshot(s: SqliteStore) -> set[str]:
    s.snapshot(Path(f"{s.path}.copy"))
    return {"e1"} if in_database(s, "e1") else set()


#: Each way to read the trail, and what it finds once the event ``e1`` (action X) is in.
READS: dict[str, tuple[Callable[[SqliteStore], set[str]], set[str]]] = {
    "read": (lambda s: {s.read("AuditEvent", "e1", OPEN_SCOPE).id}, {"e1"}),
    "vread": (lambda s: {s.vread("AuditEvent", "e1", 1, OPEN_SCOPE).id}, {"e1"}),
    "exists": (lambda s: {"e1"} if s.exists("AuditEvent", "e1") == 1 else set(), {"e1"}),
    "search": (_search, {"e1"}),
    "_has": (_has, {"p1"}),
    "_revinclude": (_revinclude, {"e1"}),
    "_include": (_include, {"e1"}),
    "history of the type": (lambda s: _ids(s.history(OPEN_SCOPE, "AuditEvent").entries), {"e1"}),
    "history of the server": (lambda s: _ids(s.history(OPEN_SCOPE).entries) & {"e1"}, {"e1"}),
    "key accounting": (_key_accounting, {"e1"}),
    "snapshot (a backup's copy)": (_snapshot, {"e1"}),
}


@pytest.mark.parametrize("how", READS)
def test_every_read_of_the_trail_finds_the_events_logged_before_it(store: SqliteStore, how: str) -> None:
    """As with events written at once: what reads the trail moves the journal in first."""
    read, expected = READS[how]
    store.log([event("e1", "X")])
    assert not in_database(store, "e1")
    assert read(store) == expected
    assert in_database(store, "e1")
    assert store._journal is not None and not store._journal.waiting()


def test_another_process_reads_what_this_one_logged(store: SqliteStore, tmp_path: Path) -> None:
    other = _sqlite(tmp_path)  # the same files, opened again: another worker
    try:
        store.log([event("e1")])
        assert other.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"
        store.log([event("e2")])
        found = store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
        assert {m.id for m in found.matches} == {"e1", "e2"}
    finally:
        other.close()


def test_the_journal_moves_in_by_itself_once_it_holds_a_batch(store: SqliteStore) -> None:
    logged, n = [], 0
    while not in_database(store, "e0"):
        eid = f"e{n}"
        store.log([event(eid)])
        logged.append(eid)
        n += 1
        assert n * 1000 < 4 * DRAIN_BYTES, "never moved in"
    assert all(in_database(store, eid) for eid in logged)
    assert not journal_of(store).exists() or journal_of(store).stat().st_size == 0
    assert not list(journal_of(store).parent.glob("*.journal-*"))  # the detached file removed


#: Seconds a test waits for the upkeep thread, and holds the writer lock against a move at most.
WAIT = 10.0


def _log_past(store: SqliteStore, size: int) -> list[str]:
    """Log events until the live journal holds ``size`` bytes, or a log moved them in: the last
    log is the one that crossed. Returns their ids."""
    logged: list[str] = []
    while not logged or (not in_database(store, logged[0]) and journal_of(store).stat().st_size < size):
        logged.append(f"e{len(logged)}")
        store.log([event(logged[-1])])
    return logged


def test_a_serving_store_moves_a_batch_on_its_upkeep_thread_and_the_log_does_not_wait(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Once the serving process started its upkeep, the log whose event fills a batch only wakes
    the thread: it returns while another process holds the writer lock a move needs, and the
    thread moves the batch once the lock is free. (Moved by the log itself, the batch waited for
    the lock, which the holder lets go after WAIT seconds at most.)"""
    store.start_upkeep()
    other = _sqlite(tmp_path)  # the same database, as another worker process opens it
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other.transaction():
            other.create(patient("p2", "Durand"))
            held.set()
            release.wait(WAIT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(WAIT)
        logged = _log_past(store, DRAIN_BYTES)
        answered_while_held = holder.is_alive()
        assert not in_database(store, "e0")
    finally:
        release.set()
        holder.join()
        other.close()
    assert answered_while_held, "the log waited for the writer lock: it moved the batch itself"
    deadline = time.monotonic() + WAIT
    while not in_database(store, logged[-1]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(in_database(store, eid) for eid in logged), "the thread did not move the batch in"


def test_the_upkeep_thread_woken_with_less_than_a_batch_waiting_moves_nothing(store: SqliteStore) -> None:
    """Appends made while a move is under way wake the thread again; what they leave waits for a
    batch: a move of a few events would empty every other connection's page cache for little."""
    store.start_upkeep()
    assert store._upkeep is not None
    store.log([event("e1")])
    store._upkeep.wake()
    time.sleep(0.3)  # the thread's three next rounds
    assert not in_database(store, "e1")
    assert store.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"  # a read of the trail still moves it


def test_with_its_upkeep_stopped_a_serving_store_moves_the_journal_in_the_log_past_the_fallback(
    store: SqliteStore,
) -> None:
    """The thread behind or stopped, the journal stays bounded: the log that takes it past
    FALLBACK_BYTES moves it itself."""
    store.start_upkeep()
    assert store._upkeep is not None
    store._upkeep.stop()
    logged = _log_past(store, DRAIN_BYTES)
    assert not in_database(store, "e0"), "moved in at the first batch, without the thread"
    largest = 0
    while not in_database(store, "e0"):
        largest = max(largest, journal_of(store).stat().st_size)
        assert largest < FALLBACK_BYTES, "never moved in"
        logged.append(f"e{len(logged)}")
        store.log([event(logged[-1])])
    assert largest > FALLBACK_BYTES - 4096, "moved in before the fallback"
    assert all(in_database(store, eid) for eid in logged)


def test_a_journal_left_by_a_stopped_server_is_moved_in_when_the_store_opens(
    store: SqliteStore, tmp_path: Path
) -> None:
    store.log([event("e1"), event("e2")])
    store.close()
    reopened = _sqlite(tmp_path)
    assert isinstance(reopened, SqliteStore)
    try:
        assert in_database(reopened, "e1") and in_database(reopened, "e2")
        assert reopened.read("AuditEvent", "e2", OPEN_SCOPE).json()["meta"]["versionId"] == "1"
    finally:
        reopened.close()


def test_a_file_moved_in_whose_removal_a_crash_prevented_is_not_moved_twice(store: SqliteStore) -> None:
    """The commit that moved a file's events records its generation: found again (the process
    died before removing it), it is removed, not moved a second time."""
    store.log([event("e1")])
    copy = journal_of(store).read_bytes()
    generation = copy[5:HEADER_BYTES].hex()
    assert store.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"  # moved in, the file removed
    left = journal_of(store).with_name(f"{journal_of(store).name}-{generation}")
    left.write_bytes(copy)  # as if the removal had not happened
    store.log([event("e2")])
    found = store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
    assert sorted(m.id for m in found.matches) == ["e1", "e2"]
    assert not left.exists()


def test_a_record_torn_by_a_crash_is_kept_aside_and_the_others_moved_in(
    store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.log([event("e1"), event("e2")])
    store.close()
    whole = journal_of(store).read_bytes()
    with open(journal_of(store), "ab") as handle:  # a third append cut short by the power going
        handle.write(b"\x00\x00\x10\x00garbage")
    with caplog.at_level(logging.ERROR, logger="storage.sqlite.journal"):
        reopened = _sqlite(tmp_path)
    assert isinstance(reopened, SqliteStore)
    try:
        assert in_database(reopened, "e1") and in_database(reopened, "e2")
        aside = Path(f"{reopened.path}.journal.rejected")
        assert aside.read_bytes() == b"\x00\x00\x10\x00garbage"
        assert "kept in" in caplog.text
        assert len(whole) > HEADER_BYTES
    finally:
        reopened.close()


def test_an_event_whose_id_is_taken_is_kept_aside_and_does_not_stop_the_others(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.create(event("taken"))
    store.log([event("taken", "U"), event("e2")])
    with caplog.at_level(logging.ERROR, logger="storage.sqlite.journal"):
        assert store.read("AuditEvent", "e2", OPEN_SCOPE).id == "e2"
    assert store.read("AuditEvent", "taken", OPEN_SCOPE).json()["action"] == "R"  # the first one stays
    assert Path(f"{store.path}.journal.rejected").stat().st_size > 0
    assert "AuditEvent/taken" in caplog.text


def test_of_two_events_of_one_id_moved_together_the_first_goes_in(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The ids a move finds taken are looked up for the whole batch at once: one taken by an
    earlier record of the same batch is found too."""
    store.log([event("twice"), event("e2")])
    store.log([event("twice", "U")])
    with caplog.at_level(logging.ERROR, logger="storage.sqlite.journal"):
        assert store.read("AuditEvent", "twice", OPEN_SCOPE).json()["action"] == "R"
    assert store.read("AuditEvent", "e2", OPEN_SCOPE).id == "e2"
    assert "AuditEvent/twice" in caplog.text


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Limit the size of the files this process writes (``RLIMIT_FSIZE``), as a full disk would:
    a write past it is cut short, then refused (``EFBIG``; the signal it also sends is ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_an_append_cut_short_leaves_the_journal_as_it_was(
    tmp_path: Path, file_size_limit: Callable[[int], None]
) -> None:
    journal = Journal(str(tmp_path / "j.journal"), sync=True)
    journal.append([b"first"])
    before = (tmp_path / "j.journal").read_bytes()
    file_size_limit(len(before) + 100)
    with pytest.raises(OSError):
        journal.append([b"x" * 50, b"y" * 500])  # the first 100 bytes would fit
    file_size_limit(resource.RLIM_INFINITY)
    assert (tmp_path / "j.journal").read_bytes() == before
    journal.append([b"second"])
    journal.detach()
    (detached,) = journal.detached()
    assert detached.records() == [b"first", b"second"]
    journal.close()


def test_a_journal_that_cannot_be_written_fails_the_log_and_stores_nothing(store: SqliteStore) -> None:
    journal = journal_of(store)
    journal.unlink(missing_ok=True)
    journal.mkdir()
    try:
        with pytest.raises(OSError):
            store.log([event("e1")])
    finally:
        journal.rmdir()
    store.log([event("e2")])
    found = store.search(Query("AuditEvent", Reference("patient", "Patient", "p1")), OPEN_SCOPE)
    assert [m.id for m in found.matches] == ["e2"]


def test_inside_a_transaction_an_event_is_written_with_it(store: SqliteStore) -> None:
    """A write's event lands with the write or not at all: it never goes through the journal."""
    with store.transaction():
        store.log([event("e1")])
    assert in_database(store, "e1") and not journal_of(store).exists()
    with pytest.raises(RuntimeError), store.transaction():
        store.log([event("e2")])
        raise RuntimeError("the write failed")
    assert store._journal is not None and not store._journal.waiting()
    assert not in_database(store, "e2")


def test_the_trail_is_stored_deflated_and_the_documents_are_not(store: SqliteStore) -> None:
    """Both ways in (the journal, and a write's event in the main file) store the event's content
    deflated (format 2), the blob the journal holds being the one the row keeps; a document's
    content stays as it is (a search inflating each of its results would cost every search)."""
    store.log([event("e1")])
    with store.transaction():
        store.log([event("e2")])
    assert orjson.loads(store.read("AuditEvent", "e1", OPEN_SCOPE).content)["id"] == "e1"
    assert orjson.loads(store.read("AuditEvent", "e2", OPEN_SCOPE).content)["id"] == "e2"
    conn = store._conn()
    formats = dict(conn.execute("SELECT id, substr(content, 5, 1) FROM trail.resource").fetchall())
    assert formats == {"e1": bytes([DEFLATED_FORMAT]), "e2": bytes([DEFLATED_FORMAT])}
    (document,) = conn.execute("SELECT substr(content, 5, 1) FROM main.resource WHERE id = 'd1'").fetchone()
    assert document == bytes([FORMAT])


def test_only_the_trail_is_journaled(store: SqliteStore) -> None:
    store.log([doc("d2", "p1")])
    assert store._conn().execute("SELECT 1 FROM resource WHERE id = 'd2'").fetchone() is not None
    assert not journal_of(store).exists()


def test_no_record_is_lost_when_the_journal_is_detached_while_another_process_appends(tmp_path: Path) -> None:
    """Two processes' journals on one file (two objects, each its own lock and descriptor): every
    record one appends is read exactly once by the other's detach-and-read, however they
    interleave — an append that waited for the lock while the file was detached goes to the
    new live file, not to the detached one already read."""
    path = str(tmp_path / "j.journal")
    appender, mover = Journal(path, sync=False), Journal(path, sync=False)
    count, read = 3000, []
    done = threading.Event()

    def append() -> None:
        for n in range(count):
            appender.append([str(n).encode()])
        done.set()

    def move() -> None:
        while True:
            finished = done.is_set()
            mover.detach()
            for detached in mover.detached():
                read.extend(detached.records())
                detached.path.unlink()
            if finished:
                return

    threads = [threading.Thread(target=append), threading.Thread(target=move)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(int(r) for r in read) == list(range(count))
    appender.close()
    mover.close()


def test_a_move_that_fails_does_not_fail_the_log_and_leaves_the_events_waiting(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A record that does not open with the store's keys stops the move as a whole (nothing is
    moved, nothing lost); the log that crossed the threshold still succeeds — its events are on
    disk — and says the move failed; a read of the trail fails with the error meanwhile."""
    unopenable = frame(orjson.dumps(["AuditEvent", "alien", "2024-01-01T00:00:00Z"]) + b"\n" + b"not sealed here")
    journal_of(store).with_name(f"{journal_of(store).name}-{'ab' * 16}").write_bytes(
        MAGIC + bytes.fromhex("ab" * 16) + unopenable
    )
    logged = []
    with caplog.at_level(logging.ERROR, logger="storage.sqlite.store"):
        while "could not be moved" not in caplog.text:
            logged.append(f"e{len(logged)}")
            store.log([event(logged[-1])])  # never raises
            assert len(logged) * 100 < 4 * DRAIN_BYTES, "the threshold was never crossed"
    assert not any(in_database(store, eid) for eid in logged)
    with pytest.raises(DecryptionError):
        store.read("AuditEvent", "e0", OPEN_SCOPE)
    for stale in journal_of(store).parent.glob(f"{journal_of(store).name}-{'ab' * 16}"):
        stale.unlink()  # the operator removes what does not belong: everything logged moves in
    assert store.read("AuditEvent", logged[-1], OPEN_SCOPE).id == logged[-1]
    assert all(in_database(store, eid) for eid in logged)


# -- the rows written when read (IndexFamily.lazy) --------------------------------------------


class _ReadsOfOnePatientScope:
    """A caller who sees one patient's events that are reads: the binding the policy puts first,
    and a filter on a row that starts no search."""

    def filter(self, resource_type: str) -> Expr:
        if resource_type != "AuditEvent":
            return EVERYTHING
        return all_of(Reference("patient", "Patient", "p1"), Token("action", ANY_SYSTEM, "R"))


def pending(store: SqliteStore) -> set[str]:
    """The ids of the events whose rows that start no search are not written yet."""
    sql = f"SELECT r.id FROM {TRAIL.pending} p JOIN trail.resource r ON r.pk = p.res"
    return {rid for (rid,) in store._conn().execute(sql).fetchall()}


def test_a_moved_event_has_the_rows_that_start_a_search_and_a_search_writes_the_others_of_its_patient(
    store: SqliteStore,
) -> None:
    """Moved in, an event gets its patient's and its dates' rows; a search bound to one patient
    writes the others for that patient's events only, and finds by them."""
    store.create(patient("p2", "Durand"))
    store.log([event("e1"), trail_event("e2", "p2", "R", "2024-02-01T10:00:00Z")])
    assert store.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"  # moved in, nothing read but the event
    assert pending(store) == {"e1", "e2"}
    assert _index_rows_of(store, "e1") == 4  # the patient's reference and identifier, two dates
    updates = store.search(
        Query("AuditEvent", all_of(Reference("patient", "Patient", "p1"), Token("action", ANY_SYSTEM, "U"))), OPEN_SCOPE
    )
    assert updates.matches == [] and pending(store) == {"e2"} and _index_rows_of(store, "e1") > 10
    reads = store.search(
        Query("AuditEvent", all_of(Reference("patient", "Patient", "p2"), Token("action", ANY_SYSTEM, "R"))), OPEN_SCOPE
    )
    assert [s.id for s in reads.matches] == ["e2"] and pending(store) == set()


def _index_rows_of(store: SqliteStore, rid: str) -> int:
    conn = store._conn()
    (pk,) = conn.execute("SELECT pk FROM trail.resource WHERE type = 'AuditEvent' AND id = ?", (rid,)).fetchone()
    return sum(
        conn.execute(f"SELECT COUNT(*) FROM {table} WHERE res = ?", (pk,)).fetchone()[0] for table in TRAIL.tables
    )


def test_a_read_of_an_event_writes_the_rows_of_the_events_in_the_callers_scope_only(store: SqliteStore) -> None:
    store.create(patient("p2", "Durand"))
    store.log([event("e1"), event("e2", "U"), trail_event("e3", "p2", "R", "2024-02-01T10:00:00Z")])
    assert store.read("AuditEvent", "e1", _ReadsOfOnePatientScope()).id == "e1"
    assert pending(store) == {"e3"}
    for hidden in ("e2", "e3"):
        with pytest.raises(NotFound):
            store.read("AuditEvent", hidden, _ReadsOfOnePatientScope())
    assert pending(store) == {"e3"}


def test_a_search_without_a_patient_writes_every_events_rows(store: SqliteStore) -> None:
    store.create(patient("p2", "Durand"))
    store.log([event("e1"), trail_event("e2", "p2", "U", "2024-02-01T10:00:00Z")])
    found = store.search(Query("AuditEvent", Token("action", ANY_SYSTEM, "U")), OPEN_SCOPE)
    assert [s.id for s in found.matches] == ["e2"] and pending(store) == set()


def test_a_statement_that_may_read_other_events_rows_writes_them_all(store: SqliteStore) -> None:
    """A search of one patient's trail whose filter follows a chain to the trail's own type reads
    the rows of events that are not its candidates: every event's are written first."""
    store.create(patient("p2", "Durand"))
    store.log([event("e1"), trail_event("e2", "p2", "U", "2024-02-01T10:00:00Z")])
    chained = Chain("entity", ("AuditEvent",), Token("action", ANY_SYSTEM, "U"))
    store.search(Query("AuditEvent", all_of(Reference("patient", "Patient", "p1"), chained)), OPEN_SCOPE)
    assert pending(store) == set()


def test_what_links_to_the_rows_of_events() -> None:
    def scope(rtype: str) -> Expr:
        return Has("AuditEvent", "entity", EVERYTHING) if rtype == "Binary" else EVERYTHING

    action = Token("action", ANY_SYSTEM, "R")
    assert not links_lazy(all_of(Reference("patient", "Patient", "p1"), action), scope)
    assert not links_lazy(Not(Chain("entity", ("DocumentReference",), action)), scope)
    assert links_lazy(Not(Chain("entity", ("AuditEvent",), action)), scope)
    assert not links_lazy(Not(Chain("entity", ("AuditEvent",), action)), scope, unscoped_only=True)
    assert links_lazy(Not(Chain("entity", ("AuditEvent",), action, scoped=False)), scope, unscoped_only=True)
    assert links_lazy(Has("AuditEvent", "entity", action), scope)
    assert links_lazy(Chain("entity", ("Binary",), action), scope)  # the Binary's filter has one
    assert not links_lazy(Chain("entity", ("Binary",), action, scoped=False), scope)


def test_a_patients_look_at_their_trail_writes_their_events_rows_whatever_it_follows(store: SqliteStore) -> None:
    """Bound to one patient by the scope, a statement completes that patient's events only, even
    when it follows a chain to the trail's type (the chain's targets are in the scope too)."""
    store.create(patient("p2", "Durand"))
    store.log([event("e1"), event("e2", "U"), trail_event("e3", "p2", "U", "2024-02-01T10:00:00Z")])
    chained = Chain("entity", ("AuditEvent",), Token("action", ANY_SYSTEM, "U"))
    found = store.search(Query("AuditEvent", chained), _PatientScope("p1"))
    assert found.matches == [] and pending(store) == {"e3"}
    assert [s.id for s in store.history(_PatientScope("p1"), "AuditEvent").entries] == ["e2", "e1"]
    assert pending(store) == {"e3"}


class _PatientScope:
    """A patient's view of the trail: their own events (as the policy binds it)."""

    def __init__(self, pid: str) -> None:
        self.pid = pid

    def filter(self, resource_type: str) -> Expr:
        return Reference("patient", "Patient", self.pid) if resource_type == "AuditEvent" else EVERYTHING


def test_a_store_completes_every_event_for_a_copy_elsewhere(store: SqliteStore) -> None:
    store.log([event("e1"), event("e2")])
    assert store.read("AuditEvent", "e1", OPEN_SCOPE).id == "e1"  # moved in, nothing read but the event
    assert pending(store) == {"e1", "e2"}
    store.complete_index()
    assert pending(store) == set()
