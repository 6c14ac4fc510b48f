"""The trail by group commit (authz/trail_writer.py): every request about a record leaves exactly
one durable AuditEvent before it is answered, while the events of concurrent requests share
commits.

The server parts are real: the SQLite store on a data directory, its journal, the DMP gatekeeper,
real tokens, the Flask test client from several threads. A store that cannot write is real too:
the journal's file replaced by a directory. One situation cannot be produced without depending
on the scheduler and is made through a subclass of the real store, viewing the same store (its
connections, its writer lock, its files) — see :func:`view`: a batch held while other requests
queue (which requests share a batch otherwise depends on timing, and a test must not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from authz.audit import patient_entity, server_event
from authz.gate import DmpGatekeeper
from authz.trail_writer import TrailWriter
from fhir_server.app import create_service
from fhir_server.runtime.config import Config
from fhirmodel.dates import instant_now
from storage.interface import Store
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier
from storage.sqlite.store import SqliteStore
from tests.dmp import INS_SYSTEM, World

INS = "180017512345660"
S = TypeVar("S", bound=SqliteStore)


def view(store: Store, kind: type[S]) -> S:
    """The same store — its connections, writer lock and file — through the subclass ``kind``."""
    assert isinstance(store, SqliteStore)
    seen = kind.__new__(kind)
    seen.__dict__ = store.__dict__
    return seen


class Observed(SqliteStore):
    """A store that counts the events of each batch it logs, and can hold its first batch (before
    logging it) until :attr:`release` is set."""

    batches: list[int]  # the size of each batch logged, in order
    held: threading.Event  # set once the held batch is being logged
    release: threading.Event

    def watch(self, *, hold: bool) -> Observed:
        self.batches, self.held, self.release = [], threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        return self

    def log(self, resources: list[dict[str, Any]]) -> None:
        if not self.held.is_set():
            self.held.set()
            assert self.release.wait(timeout=60), "the test never released the held batch"
        super().log(resources)
        self.batches.append(len(resources))


@contextmanager
def unwritable_journal(store: Store) -> Iterator[None]:
    """The store's journal cannot be written: its file is a directory (a real error of the disk's
    file system, as a read-only or full disk gives), until the block ends."""
    assert isinstance(store, SqliteStore)
    journal = Path(f"{store.path}.journal")
    journal.unlink(missing_ok=True)
    journal.mkdir()
    try:
        yield
    finally:
        journal.rmdir()


@pytest.fixture
def beside(world: World) -> Iterator[Store]:
    """A second store on the same data directory, as another process would open it: it sees only
    what was committed (nothing of the first store's memory or transactions)."""
    other = create_service(Config(data_dir=world.config.data_dir))
    yield other.store
    other.store.close()


def events_on_disk(store: Store) -> list[dict[str, Any]]:
    """The patient's AuditEvents, read through ``store``."""
    found = store.search(Query("AuditEvent", ReferenceIdentifier("patient", INS_SYSTEM, INS), count=10_000), OPEN_SCOPE)
    return [s.json() for s in found.matches]


def entity_references(events: list[dict[str, Any]]) -> list[str]:
    """What each event is about besides the patient (the resource its request named)."""
    refs = [e["what"].get("reference", "") for event in events for e in event["entity"]]
    return [ref for ref in refs if ref and not ref.startswith("Patient/")]


def gatekeeper(world: World) -> DmpGatekeeper:
    gate = world.service.gatekeeper
    assert isinstance(gate, DmpGatekeeper)
    return gate


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(0..count-1)`` in as many threads, all started together; re-raise the first failure."""
    start, failures = threading.Barrier(count), []

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request never returned"
    if failures:
        raise failures[0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.seed_patient(INS)
    yield w
    w.close()


def test_each_request_s_event_is_on_disk_when_its_answer_arrives(world: World, beside: Store) -> None:
    patient = world.patient(INS)
    for n in range(3):
        response = patient.get(f"DocumentReference/probe-{n}")
        assert response.status_code == 404
        seen = entity_references(events_on_disk(beside))
        assert seen == [f"DocumentReference/probe-{i}" for i in range(n + 1)]
    assert patient.get(f"Patient/pat-{INS}").status_code == 200
    (read,) = [e for e in events_on_disk(beside) if not entity_references([e])]
    assert [s["code"] for s in read["subtype"]] == ["read"] and read["outcome"] == "0"


def test_concurrent_requests_each_leave_exactly_one_event(world: World, beside: Store) -> None:
    app = world.client.application
    token = world.patient(INS).headers

    def reads(n: int) -> None:
        client = app.test_client()
        for k in range(6):
            status = client.get(f"/fhir/DocumentReference/t{n}-{k}", headers=token).status_code
            assert status == 404, status
            assert f"DocumentReference/t{n}-{k}" in entity_references(events_on_disk(beside))

    in_threads(8, reads)
    seen = entity_references(events_on_disk(beside))
    assert sorted(seen) == sorted(f"DocumentReference/t{n}-{k}" for n in range(8) for k in range(6))


def test_a_batch_that_cannot_be_written_fails_every_request_and_stores_none_of_them(
    world: World, beside: Store
) -> None:
    app, token = world.client.application, world.patient(INS).headers
    statuses: list[int] = []

    def read(n: int) -> None:
        statuses.append(app.test_client().get(f"/fhir/DocumentReference/t{n}", headers=token).status_code)

    with unwritable_journal(world.store):
        in_threads(6, read)
    assert statuses == [500] * 6
    assert events_on_disk(beside) == []
    assert world.patient(INS).get("DocumentReference/after").status_code == 404  # writable again: served
    assert entity_references(events_on_disk(beside)) == ["DocumentReference/after"]


def trail_events(count: int) -> list[dict[str, Any]]:
    """``count`` AuditEvents of the kind the server writes for its own work (no token needed)."""
    return [
        server_event(
            action="R",
            lifecycle="access",
            agent="test",
            entities=[patient_entity((INS_SYSTEM, INS), None)],
            description=f"event {n}",
            recorded=instant_now(),
            server="test",
        )
        for n in range(count)
    ]


def writer_threads(
    writer: TrailWriter, events: list[dict[str, Any]], outcomes: list[BaseException | None]
) -> list[threading.Thread]:
    """One thread per event, not started, each writing it through ``writer`` and putting what it
    got in ``outcomes`` (None: stored)."""

    def write(n: int) -> None:
        try:
            writer.write(events[n])
        except BaseException as exc:  # what stops a thread too: a request must never answer as stored
            outcomes[n] = exc

    return [threading.Thread(target=write, args=(n,)) for n in range(len(events))]


def queued_while_held(writer: TrailWriter, store: Observed, events: list[dict[str, Any]]) -> list[BaseException | None]:
    """Write ``events[0]`` in a held transaction, let the others queue meanwhile, then release it:
    what each writer got (None: stored)."""
    outcomes: list[BaseException | None] = [None] * len(events)
    first, *others = writer_threads(writer, events, outcomes)
    first.start()
    assert store.held.wait(timeout=60)
    for t in others:
        t.start()
    while len(writer._queue) < len(others):  # private, read only to know that they all wait
        threading.Event().wait(0.01)
    store.release.set()
    for t in [first, *others]:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer never returned"
    return outcomes


def stored_ids(store: Store) -> set[str]:
    found = store.search(Query("AuditEvent", ReferenceIdentifier("patient", INS_SYSTEM, INS), count=100), OPEN_SCOPE)
    return {s.id for s in found.matches}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    service = create_service(Config(data_dir=tmp_path / "data"))
    yield service.store
    service.store.close()


def test_events_queued_while_a_batch_commits_share_the_next_commit(store: Store) -> None:
    observed = view(store, Observed).watch(hold=True)
    events = trail_events(6)
    outcomes = queued_while_held(TrailWriter(observed), observed, events)
    assert outcomes == [None] * 6
    assert observed.batches == [1, 5]
    assert stored_ids(store) == {e["id"] for e in events}


def test_events_are_logged_while_another_process_writes(store: Store, tmp_path: Path) -> None:
    """A request's event does not wait for the database's writer, which every worker shares: the
    journal is written while another process holds it."""
    observed = view(store, Observed).watch(hold=False)
    other = create_service(Config(data_dir=tmp_path / "data")).store  # another worker's store
    writer, events = TrailWriter(observed), trail_events(6)
    outcomes: list[BaseException | None] = [None] * len(events)
    threads = writer_threads(writer, events, outcomes)
    try:
        with other.transaction():  # the other process writes: its writer lock is held throughout
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads), "a writer waited for the other process"
    finally:
        other.close()
    assert outcomes == [None] * 6
    assert sum(observed.batches) == 6
    assert stored_ids(store) == {e["id"] for e in events}


def test_a_batch_is_bounded(store: Store) -> None:
    observed = view(store, Observed).watch(hold=True)
    events = trail_events(8)
    outcomes = queued_while_held(TrailWriter(observed, max_batch=3), observed, events)
    assert outcomes == [None] * 8
    assert observed.batches == [1, 3, 3, 1]
    assert stored_ids(store) == {e["id"] for e in events}


def test_an_event_that_fails_alone_fails_only_its_own_request(store: Store) -> None:
    observed = view(store, Observed).watch(hold=True)
    events = trail_events(5)
    events[2]["extension"] = [{"url": "urn:test", "valueString": object()}]  # cannot be serialised
    outcomes = queued_while_held(TrailWriter(observed), observed, events)
    assert [type(o) for o in outcomes if o is not None] == [orjson.JSONEncodeError]
    assert outcomes[2] is not None
    assert observed.batches == [1, 1, 1, 1]  # the batch of four refused, then each alone: three logged
    assert stored_ids(store) == {e["id"] for n, e in enumerate(events) if n != 2}


class Stopping(Observed):
    """A store whose second batch is interrupted by what stops a thread (``SystemExit``), which
    cannot be raised in a store for real."""

    def log(self, resources: list[dict[str, Any]]) -> None:
        if self.batches:
            raise SystemExit("the worker is stopping")
        super().log(resources)


def test_a_batch_stopped_midway_answers_none_of_its_requests_as_stored(store: Store) -> None:
    stopping = view(store, Stopping).watch(hold=True)
    events = trail_events(5)
    outcomes = queued_while_held(TrailWriter(stopping), stopping, events)
    assert outcomes[0] is None
    assert all(isinstance(o, SystemExit) for o in outcomes[1:])
    assert stored_ids(store) == {events[0]["id"]}


def test_a_write_s_event_lands_in_the_write_s_own_transaction(store: Store) -> None:
    observed = view(store, Observed).watch(hold=False)
    writer = TrailWriter(observed)
    event, failed = trail_events(2)
    with observed.transaction():
        writer.write(event)
    with pytest.raises(RuntimeError), observed.transaction():
        writer.write(failed)
        raise RuntimeError("the write failed after its event was written")
    assert observed.batches == []  # logged in neither: written in the callers' transactions
    assert stored_ids(store) == {event["id"]}


def test_an_app_leaves_no_thread_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    w = World(tmp_path)
    w.seed_patient(INS)
    app, token = w.client.application, w.patient(INS).headers
    in_threads(4, lambda n: app.test_client().get(f"/fhir/DocumentReference/t{n}", headers=token))
    w.close()
    assert set(threading.enumerate()) == before
