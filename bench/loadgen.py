"""Closed-loop HTTP load: ``concurrency`` threads, one keep-alive connection each.

Each thread sends its next request as soon as the previous answer is read, so the figures are
the server's throughput at that concurrency and the latency a client sees, not an open-loop
arrival rate. Only requests that start after the warm-up and finish before the end of the window
count; a non-2xx answer or a broken connection is an error and is not counted in the rate.
"""

from __future__ import annotations

import http.client
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: method, path with query, body, headers
Request = tuple[str, str, bytes | None, dict[str, str]]
RequestMaker = Callable[[random.Random], Request]
ERROR_BODY_CHARS = 600


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    make: RequestMaker
    documents_per_request: int = 0  # ingest scenarios: documents each request carries (docs/s = req/s × this)


@dataclass(frozen=True)
class Window:
    """Absolute ``perf_counter`` times: warm-up until ``measure_from``, measure until ``end``."""

    measure_from: float
    end: float


@dataclass
class ThreadTally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: int = 0
    first_error: str | None = None


@dataclass(frozen=True)
class Result:
    name: str
    description: str
    seconds: float
    ok: int
    errors: int
    latencies_ms: dict[str, float]
    first_error: str | None
    worker_cpu_s: tuple[float, ...] = ()  # CPU seconds per server worker, warm-up included
    other_cpu_s: float | None = None  # CPU seconds used by neither the server nor this client (other jobs)
    documents_per_request: int = 0
    #: The ceiling's req/s measured just before and just after this scenario (their mean): what its
    #: share is read against, the machine as this scenario saw it (None: not bracketed).
    ceiling_rps: float | None = None

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.rps * self.documents_per_request

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "seconds": self.seconds,
            "requests_ok": self.ok,
            "requests_per_second": round(self.rps, 1),
            "errors": self.errors,
            "latency_ms": self.latencies_ms,
            "first_error": self.first_error,
            "worker_cpu_s": list(self.worker_cpu_s),
            "other_cpu_s": self.other_cpu_s,
            "documents_per_request": self.documents_per_request,
            "documents_per_second": round(self.docs_per_second, 1),
            "ceiling_rps": round(self.ceiling_rps, 1) if self.ceiling_rps is not None else None,
        }


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    as_ms = {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else 0.0,
    }
    return {k: round(v * 1000, 2) for k, v in as_ms.items()}


class Client:
    """One keep-alive connection, re-opened only after a transport failure."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def send(self, request: Request) -> tuple[int | None, bytes]:
        method, path, body, headers = request
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            return None, repr(exc).encode()

    def close(self) -> None:
        self.conn.close()


def _client_loop(client: Client, make: RequestMaker, rng: random.Random, window: Window, tally: ThreadTally) -> None:
    while True:
        request = make(rng)
        started = time.perf_counter()
        if started >= window.end:
            return
        status, body = client.send(request)
        finished = time.perf_counter()
        if started < window.measure_from or finished > window.end:
            continue
        if status is not None and 200 <= status < 300:
            tally.latencies.append(finished - started)
            continue
        tally.errors += 1
        if tally.first_error is None:
            text = body[:ERROR_BODY_CHARS].decode("utf-8", "replace")
            tally.first_error = f"{request[0]} {request[1]} -> {status}: {text}"


def run_scenario(
    scenario: Scenario, host: str, port: int, *, concurrency: int, warmup: float, duration: float, seed: int
) -> Result:
    """Run one scenario: all threads start together, warm up, then are measured for ``duration`` s."""
    clients = [Client(host, port) for _ in range(concurrency)]
    tallies = [ThreadTally() for _ in range(concurrency)]
    start = time.perf_counter()
    window = Window(start + warmup, start + warmup + duration)
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(clients[i], scenario.make, random.Random(seed * 1000 + i), window, tallies[i]),
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    latencies = [lat for tally in tallies for lat in tally.latencies]
    errors = sum(t.errors for t in tallies)
    first_error = next((t.first_error for t in tallies if t.first_error), None)
    summary = summarize(latencies)
    return Result(
        scenario.name,
        scenario.description,
        duration,
        len(latencies),
        errors,
        summary,
        first_error,
        documents_per_request=scenario.documents_per_request,
    )
