"""Fill a fresh data directory with synthetic resources, over HTTP or in-process.

``http`` is what a client of the DMP does (transaction Bundles, the whole validation and
transaction path) and gives the ingest throughput. ``direct`` writes through the same store and
indexer the server uses, without HTTP and validation, which is the only practical way to reach a
million documents on a small machine. Either way the generation is streamed batch by batch.
"""

from __future__ import annotations

import http.client
import itertools
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from bench.datagen import Population, documents, patient_id, reference_resources

#: Documents per store transaction in direct mode: large enough to amortise the commit.
DIRECT_BATCH = 2000
PROGRESS_SECONDS = 30.0


class IdSample:
    """A bounded uniform sample (reservoir) of document ids, for the random-read scenario.

    Keeping every id of a million documents would cost ~100 MB for no gain.
    """

    def __init__(self, capacity: int, rng: random.Random):
        self.capacity = capacity
        self.ids: list[str] = []
        self._seen = 0
        self._rng = rng
        self._lock = threading.Lock()

    def add(self, rid: str) -> None:
        with self._lock:
            self._seen += 1
            if len(self.ids) < self.capacity:
                self.ids.append(rid)
                return
            slot = self._rng.randrange(self._seen)
            if slot < self.capacity:
                self.ids[slot] = rid


@dataclass
class LoadStats:
    mode: str
    documents: int = 0
    reference_resources: int = 0
    reference_seconds: float = 0.0
    document_seconds: float = 0.0
    stopped_early: bool = False

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.document_seconds if self.document_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "documents": self.documents,
            "reference_resources": self.reference_resources,
            "reference_seconds": round(self.reference_seconds, 2),
            "document_seconds": round(self.document_seconds, 2),
            "docs_per_second": round(self.docs_per_second, 1),
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


# -- direct ------------------------------------------------------------------------------------


def load_direct(config: Any, plan: LoadPlan, sample: IdSample) -> LoadStats:
    """Write through ``service.store`` in batches of one transaction each (same indexer as the server)."""
    from fhir_server.app import create_service

    service = create_service(config)
    stats = LoadStats("direct")
    try:
        started = time.perf_counter()
        for batch in chunks(reference_resources(plan.population), DIRECT_BATCH):
            _write_batch(service.store, batch, "PUT")
            stats.reference_resources += len(batch)
        stats.reference_seconds = time.perf_counter() - started
        rng = random.Random(plan.seed)
        _direct_documents(service.store, plan, rng, sample, stats)
    finally:
        service.store.close()
    return stats


def _direct_documents(store: Any, plan: LoadPlan, rng: random.Random, sample: IdSample, stats: LoadStats) -> None:
    progress = Progress("documents (direct)", plan.documents)
    started = time.perf_counter()
    for batch in chunks(documents(rng, plan.population, plan.documents, with_ids=True), DIRECT_BATCH):
        _write_batch(store, batch, "POST")
        for doc in batch:
            sample.add(doc["id"])
        stats.documents += len(batch)
        stats.document_seconds = time.perf_counter() - started
        progress.update(stats.documents)
        if plan.max_seconds is not None and stats.document_seconds > plan.max_seconds:
            stats.stopped_early = True
            break
    progress.update(stats.documents, force=True)


def _write_batch(store: Any, batch: list[dict[str, Any]], method: str) -> None:
    """One transaction per batch; ``method`` mirrors the HTTP loader (PUT for fixed ids, POST for documents)."""
    with store.transaction():
        for resource in batch:
            store.create(resource, method=method)


# -- http --------------------------------------------------------------------------------------


def transaction_bundle(resources: list[dict[str, Any]]) -> bytes:
    """Resources with an id are PUT (patients, practitioners); the others are POSTed (documents)."""
    entries = []
    for resource in resources:
        rtype = resource["resourceType"]
        if "id" in resource:
            request = {"method": "PUT", "url": f"{rtype}/{resource['id']}"}
            entries.append({"fullUrl": f"{rtype}/{resource['id']}", "resource": resource, "request": request})
        else:
            full_url = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def created_ids(response_body: bytes) -> list[str]:
    """Ids the server assigned, from ``entry.response.location`` (``.../Type/id/_history/1``)."""
    bundle = orjson.loads(response_body)
    ids = []
    for entry in bundle.get("entry", []):
        location = entry.get("response", {}).get("location", "")
        parts = location.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            ids.append(parts[-3])
    return ids


class BundlePoster:
    """One keep-alive connection that POSTs transaction Bundles to the FHIR base."""

    def __init__(self, host: str, port: int, base_path: str):
        self.conn = http.client.HTTPConnection(host, port, timeout=600)
        self.base_path = base_path

    def post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        headers["Prefer"] = "return=minimal"
        self.conn.request("POST", self.base_path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"transaction failed: HTTP {resp.status}: {data[:2000]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    base_path: str  # "/fhir"


def load_http(target: Target, plan: LoadPlan, sample: IdSample, clients: int) -> LoadStats:
    """POST transaction Bundles from ``clients`` threads, so the server is never waiting on us."""
    stats = LoadStats("http")
    started = time.perf_counter()
    stats.reference_resources = _post_all(target, chunks(reference_resources(plan.population), plan.batch), clients)
    stats.reference_seconds = time.perf_counter() - started
    rng = random.Random(plan.seed)
    bundles = chunks(documents(rng, plan.population, plan.documents, with_ids=False), plan.batch)
    progress = Progress("documents (http)", plan.documents)
    started = time.perf_counter()

    def on_done(ids: list[str]) -> None:
        for rid in ids:
            sample.add(rid)
        stats.documents += len(ids)
        stats.document_seconds = time.perf_counter() - started
        progress.update(stats.documents)

    def keep_going() -> bool:
        within = plan.max_seconds is None or time.perf_counter() - started <= plan.max_seconds
        stats.stopped_early = stats.stopped_early or not within
        return within

    _post_all(target, bundles, clients, on_done, keep_going)
    stats.document_seconds = time.perf_counter() - started
    progress.update(stats.documents, force=True)
    return stats


def _post_all(
    target: Target,
    batches: Iterator[list[dict[str, Any]]],
    clients: int,
    on_done: Callable[[list[str]], None] | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Drain ``batches`` with ``clients`` threads; returns how many resources were sent."""
    lock = threading.Lock()
    sent = [0]
    failures: list[BaseException] = []

    def next_batch() -> list[dict[str, Any]] | None:
        with lock:
            if failures or not keep_going():
                return None
            return next(batches, None)

    def client() -> None:
        poster = BundlePoster(target.host, target.port, target.base_path)
        try:
            while (batch := next_batch()) is not None:
                data = poster.post(transaction_bundle(batch))
                with lock:
                    sent[0] += len(batch)
                    if on_done is not None:
                        on_done(created_ids(data))
        except BaseException as exc:
            failures.append(exc)
        finally:
            poster.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sent[0]


def sample_ids(target: Target, pop: Population, searches: int, rng: random.Random, sample: IdSample) -> None:
    """Document ids of a reused directory, found the way a client would: searching random patients."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
    try:
        for _ in range(searches):
            path = f"{target.base_path}/DocumentReference?patient=Patient/{patient_id(rng.randrange(pop.patients))}"
            conn.request("GET", path, headers={"Accept": "application/fhir+json"})
            resp = conn.getresponse()
            bundle = orjson.loads(resp.read())
            for entry in bundle.get("entry", []):
                sample.add(entry["resource"]["id"])
    finally:
        conn.close()
