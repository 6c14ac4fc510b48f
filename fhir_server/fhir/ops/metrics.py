"""Prometheus metrics: requests by interaction and status, their latency, and the time spent in
the store and writing the trail.

Under gunicorn each worker is a process with its own counters; ``dmp-server serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own before any worker starts, every worker
writes its samples there, and ``GET /metrics`` sums them (prometheus_client's multiprocess mode).
Without it (``--dev``, tests) the process's own registry answers.

Labels hold only bounded, non-personal values: the interaction, the resource type, the status.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from fhir_server.fhir.ops import MULTIPROC_ENV

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "dmp_http_requests",
    "HTTP requests answered, by interaction, resource type and status",
    ["interaction", "type", "status"],
)
LATENCY = Histogram(
    "dmp_http_request_duration_seconds", "Time to answer a request, by interaction", ["interaction"], buckets=_BUCKETS
)
STORE = Histogram(
    "dmp_store_operation_duration_seconds",
    "Time spent in a store operation, by operation",
    ["operation"],
    buckets=_BUCKETS,
)
AUDIT = Histogram("dmp_audit_write_duration_seconds", "Time to write a request's AuditEvent", buckets=_BUCKETS)

#: The store operations timed: every call of the Store interface that does work (``transaction``
#: only opens a context, ``close`` ends the store).
STORE_OPERATIONS = (
    "create", "update", "delete", "expunge", "read", "vread", "search", "history", "exists", "reindex",
    "save_session", "load_session", "enqueue", "pending", "acknowledge", "defer", "put_record", "add_record",
    "get_record", "record_mark", "delete_record", "record_keys", "purge_records",
)  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])


def observed(histogram: Histogram, function: F) -> F:
    """``function``, with the time each call takes observed in ``histogram`` (errors included)."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - start)

    return timed  # type: ignore[return-value]


def instrument_store(store: Any) -> None:
    """Time the store's operations, on this store object only (the class is untouched, so stores
    built for commands and jobs are not counted as the server's)."""
    if getattr(store, "_dmp_timed", False):
        return
    for name in STORE_OPERATIONS:
        method = getattr(store, name, None)
        if method is not None:
            setattr(store, name, observed(STORE.labels(name), method))
    store._dmp_timed = True


def instrument_audit(gatekeeper: Any) -> None:
    """Time the writing of each request's trail: the ``record`` of every guard this gatekeeper
    hands out."""
    if getattr(gatekeeper, "_dmp_timed", False):
        return
    make_guard = gatekeeper.guard

    def guard(*args: Any, **kwargs: Any) -> Any:
        issued = make_guard(*args, **kwargs)
        # Once per guard: a gatekeeper may hand the same one to every request (the open one of
        # the FHIR core's tests and of bench/open_app.py does), and timing it again at each
        # request nested one more timer per request, until the interpreter's recursion limit.
        if not getattr(issued, "_dmp_timed", False):
            issued.record = observed(AUDIT, issued.record)
            issued._dmp_timed = True
        return issued

    gatekeeper.guard = guard
    gatekeeper._dmp_timed = True


#: The request metrics' children by their labels, as ``labels()`` gives them: its checks and its
#: lock cost a few microseconds a request for what the first request of each kind settled.
#: Bounded as the labels are: interactions × served types × statuses.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(interaction: str, resource_type: str, status: int, seconds: float) -> None:
    key = (interaction, resource_type, status)
    children = _CHILDREN.get(key)
    if children is None:
        children = _CHILDREN[key] = (
            REQUESTS.labels(interaction, resource_type, str(status)),
            LATENCY.labels(interaction),
        )
    children[0].inc()
    children[1].observe(seconds)


def exposition() -> Response:
    """The metrics in the Prometheus text format: every worker's, summed, under gunicorn."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
