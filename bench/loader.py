"""Fill a fresh data directory with synthetic resources in-process, and what both load modes share.

``direct`` writes through the same store and indexer the server uses, without HTTP, tokens,
validation or the access rules, which is the only practical way to reach a million documents on a
small machine. Since the server enforces the DMP rules on every request, it also writes what the
rules need and the server would have written itself: each DMP's two emergency settings and the
bench doctor's access grant (what ``POST Patient`` by that doctor would have created). The HTTP
load (``bench.httpload``) goes through the real API instead. Generation is streamed batch by batch.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.auth import DOCTOR, NURSE, Professional, access_grant, emergency_settings
from bench.datagen import (
    BigPatient,
    Population,
    documents,
    make_patient,
    patient_index_of,
    patient_ins,
    practitioners,
)

#: Documents per store transaction in direct mode: large enough to amortise the commit, small
#: enough that each document's savepoint stays cheap. Why not more: releasing a savepoint walks
#: the transaction's sub-journal (SQLite keeps it in memory, in a list of chunks), which grows by
#: the pages each document changes: with a patient's documents stored together, a document
#: changes a page of each of its own B-trees, and at 2 000 a transaction the releases took 2 ms of
#: the 2.7 each document cost (0.9 at 200).
DIRECT_BATCH = 200
PROGRESS_SECONDS = 30.0

#: A document the read scenario may ask for: its id and the index of its patient (whose token reads it).
DocRef = tuple[str, int]


class IdSample:
    """A bounded uniform sample (reservoir) of (document id, patient), for the random-read scenario.

    Keeping every id of a million documents would cost ~100 MB for no gain. The patient is kept
    with the id because a read needs a token about that document's patient (R1).
    """

    def __init__(self, capacity: int, rng: random.Random):
        self.capacity = capacity
        self.ids: list[DocRef] = []
        self._seen = 0
        self._rng = rng
        self._lock = threading.Lock()

    def add(self, ref: DocRef) -> None:
        with self._lock:
            self._seen += 1
            if len(self.ids) < self.capacity:
                self.ids.append(ref)
                return
            slot = self._rng.randrange(self._seen)
            if slot < self.capacity:
                self.ids[slot] = ref


@dataclass
class LoadStats:
    """Counts and durations per phase; each rate covers its phase only."""

    mode: str
    practitioners: int = 0
    practitioner_seconds: float = 0.0
    patients: int = 0
    patient_seconds: float = 0.0  # creating the DMPs (direct: Patient + its Consents)
    documents: int = 0
    document_seconds: float = 0.0
    big_documents: int = 0
    big_seconds: float = 0.0  # the big patient: DMP, documents, masking, the nurse's grant
    stopped_early: bool = False

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.document_seconds if self.document_seconds else 0.0

    @property
    def patients_per_second(self) -> float:
        return self.patients / self.patient_seconds if self.patient_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "practitioners": self.practitioners,
            "practitioner_seconds": round(self.practitioner_seconds, 2),
            "patients": self.patients,
            "patient_seconds": round(self.patient_seconds, 2),
            "patients_per_second": round(self.patients_per_second, 1),
            "documents": self.documents,
            "document_seconds": round(self.document_seconds, 2),
            "docs_per_second": round(self.docs_per_second, 1),
            "big_patient_documents": self.big_documents,
            "big_patient_seconds": round(self.big_seconds, 2),
            "stopped_early": self.stopped_early,
        }


@dataclass(frozen=True)
class LoadPlan:
    """What to load: how many documents over which population, in which batches, within what time."""

    population: Population
    documents: int
    batch: int
    seed: int
    max_seconds: float | None = None
    big: BigPatient | None = None


def chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class Progress:
    """Prints the load rate now and then: a long load must show it is alive and how fast it goes."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.start = self._last = time.perf_counter()

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < PROGRESS_SECONDS:
            return
        self._last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed else 0.0
        print(f"  {self.label}: {done}/{self.total} in {elapsed:.0f}s ({rate:.0f}/s)", file=sys.stderr, flush=True)


def big_patient_rng(seed: int) -> random.Random:
    """The big patient's own generator, so its documents do not depend on how many others were loaded."""
    return random.Random(seed * 7919 + 1)


# -- direct ------------------------------------------------------------------------------------


def dmp_records(index: int, moment: datetime, grantees: tuple[Professional, ...]) -> list[dict[str, Any]]:
    """A DMP as the server would hold it after ``POST Patient`` by a professional: the Patient,
    the two emergency settings and the access grants (R5, R16)."""
    ident = patient_ins(index)
    grants = [access_grant(ident, who, moment) for who in grantees]
    return [make_patient(index), *emergency_settings(ident, moment), *grants]


def load_direct(config: Any, plan: LoadPlan, sample: IdSample) -> LoadStats:
    """Write through ``service.store`` in batches of one transaction each (same indexer as the server)."""
    from fhir_server.app import create_service

    service = create_service(config)
    store = service.store
    stats = LoadStats("direct")
    moment = datetime.now(UTC)
    try:
        started = time.perf_counter()
        stats.practitioners = _write_all(store, practitioners(plan.population), "PUT")
        stats.practitioner_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _write_all(store, _all_dmps(plan.population, moment), "PUT")
        stats.patients = plan.population.patients
        stats.patient_seconds = time.perf_counter() - started
        _direct_documents(store, plan, random.Random(plan.seed), sample, stats)
        if plan.big is not None:
            _direct_big_patient(store, plan.big, plan, moment, stats)
    finally:
        store.close()
    return stats


def in_process_patients(docs: int) -> int:
    """How many patients the in-process benchmarks spread ``docs`` documents over."""
    return max(docs // 20, 1)


def in_process_arguments(doc: str, requests: int, argv: list[str] | None) -> argparse.Namespace:
    """The options every in-process benchmark takes: its data set (``--docs``, ``--seed``) and how
    long it measures (``--requests`` per measure and round, ``--rounds``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=requests, help="requests per measure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def load_in_process(config: Any, docs: int, seed: int) -> IdSample:
    """``docs`` documents of :func:`in_process_patients` patients, loaded directly into
    ``config``'s data directory: the data set of the in-process benchmarks. Returns the sample
    of their ids."""
    patients = in_process_patients(docs)
    plan = LoadPlan(Population(patients, max(patients // 10, 1)), docs, 2000, seed, big=None)
    sample = IdSample(20_000, random.Random(seed))
    load_direct(config, plan, sample)
    return sample


def _all_dmps(pop: Population, moment: datetime) -> Iterator[dict[str, Any]]:
    for index in range(pop.patients):
        yield from dmp_records(index, moment, (DOCTOR,))


def _write_all(store: Any, resources: Iterable[dict[str, Any]], method: str) -> int:
    written = 0
    for batch in chunks(resources, DIRECT_BATCH):
        _write_batch(store, batch, method)
        written += len(batch)
    return written


def _direct_documents(store: Any, plan: LoadPlan, rng: random.Random, sample: IdSample, stats: LoadStats) -> None:
    progress = Progress("documents (direct)", plan.documents)
    started = time.perf_counter()
    for batch in chunks(documents(rng, plan.population, plan.documents, with_ids=True), DIRECT_BATCH):
        _write_batch(store, batch, "POST")
        for doc in batch:
            sample.add((doc["id"], patient_index_of(doc)))
        stats.documents += len(batch)
        stats.document_seconds = time.perf_counter() - started
        progress.update(stats.documents)
        if plan.max_seconds is not None and stats.document_seconds > plan.max_seconds:
            stats.stopped_early = True
            break
    progress.update(stats.documents, force=True)


def _direct_big_patient(store: Any, big: BigPatient, plan: LoadPlan, moment: datetime, stats: LoadStats) -> None:
    """The big patient with its labels as the patient would have set them, and the nurse's grant."""
    started = time.perf_counter()
    _write_batch(store, dmp_records(big.index, moment, (DOCTOR, NURSE)), "PUT")
    rng = big_patient_rng(plan.seed)
    stats.big_documents = _write_all(store, big.documents_of(rng, plan.population, with_ids=True), "POST")
    stats.big_seconds = time.perf_counter() - started


def _write_batch(store: Any, batch: list[dict[str, Any]], method: str) -> None:
    """One transaction per batch; ``method`` mirrors the HTTP loader (PUT for fixed ids, POST for documents)."""
    with store.transaction():
        for resource in batch:
            store.create(resource, method=method)
