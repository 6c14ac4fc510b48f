"""Periodic jobs: work the server does on its own schedule rather than in answer to a request.

The runner the capabilities share: each capability offers its jobs (alerts, majority...), and the
composition root (:data:`fhir_server.app.JOBS`) names those the server runs.

Each job is a function of a :class:`JobContext` that does what is due *now* (by the context's
clock, which tests move) and returns how many things it handled. Jobs must be idempotent: they
run every ``DMP_JOBS_INTERVAL`` seconds in the serving process, and on demand with
``dmp-server jobs``; a job interrupted half-way simply finds the rest due next time.

Only one process runs them at a time (an ``flock`` on ``jobs.lock`` in the data directory), so
several gunicorn workers or servers on one data directory do not send the same mail twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from authz.state_cache import encode_older_stamps
from fhir_server.fhir.service import FhirService
from fhir_server.runtime.mail import Mailer

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    service: FhirService
    mailer: Mailer
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


Job = Callable[[JobContext], int]


def purge_expired_records(context: JobContext) -> int:
    """Forget the private records whose time is over: one-time codes, login challenges, expired
    refresh tokens, used client-assertion ids (kept only as long as the assertion could be
    replayed). Every reader already refuses them; without this the table would only grow (every
    backend token request adds one record)."""
    return context.service.store.purge_records(int(context.clock().timestamp()))


def encode_access_stamps(context: JobContext) -> int:
    """Once, after an upgrade: the access-state stamps an older server wrote made to hold their
    patient's state (:func:`authz.state_cache.encode_older_stamps`), so that a first request
    about a patient no longer reads it from their Patient and Consents."""
    return encode_older_stamps(context.service.store)


@contextmanager
def _only_one_runner(data_dir: os.PathLike[str] | str) -> Iterator[bool]:
    """True when this process holds the jobs lock; False when another one runs the jobs now."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, "jobs.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def run_jobs(context: JobContext, jobs: Mapping[str, Job], only: list[str] | None = None) -> dict[str, int] | None:
    """Run the jobs (or those named) once, in order; None when another process is running them."""
    unknown = sorted(set(only or []) - set(jobs))
    if unknown:
        raise ValueError(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(jobs)}")
    with _only_one_runner(context.service.config.data_dir) as mine:
        if not mine:
            return None
        done: dict[str, int] = {}
        for name, job in jobs.items():
            if only and name not in only:
                continue
            try:
                done[name] = job(context)
            except Exception:  # one failing job must not stop the others, nor the server
                log.exception("job %s failed", name)
                done[name] = -1
        return done


class JobRunner(threading.Thread):
    """Runs the jobs every ``interval`` seconds until stopped (a daemon of ``dmp-server serve``)."""

    def __init__(self, context: JobContext, jobs: Mapping[str, Job], interval: float):
        super().__init__(name="dmp-jobs", daemon=True)
        self.context = context
        self.jobs = jobs
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            run_jobs(self.context, self.jobs)

    def stop(self) -> None:
        self._stop_event.set()
