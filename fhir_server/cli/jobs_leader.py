"""The periodic jobs run in one process per data directory, whichever it is.

Every serving process (each gunicorn worker, or the ``--dev`` server) starts a small thread that
waits for an exclusive ``flock`` on ``jobs-leader.lock`` in the data directory. The one that gets
it leads: it runs the jobs every ``DMP_JOBS_INTERVAL`` seconds for as long as it lives, on its own
store connection. When it dies (a worker restarted, a server stopped), the kernel drops its lock
and a waiting process takes over; two servers on one data directory still run the jobs once.
The master process never runs them: it forks workers, and must hold no database connection.
(``run_jobs``' own lock still keeps ``dmp-server jobs`` from running them at the same moment.)
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from fhir_server.dmp.jobs import JobContext, JobRunner
from fhir_server.runtime.config import Config

LEADER_LOCK = "jobs-leader.lock"
log = logging.getLogger(__name__)


def job_context(config: Config) -> JobContext:
    """What the jobs work with: their own service (and store connection) and the mailer."""
    from fhir_server.app import create_service
    from fhir_server.runtime.mail import mailer_from

    return JobContext(create_service(config), mailer_from(config))


def _lead(config: Config) -> None:
    fd = os.open(config.data_dir / LEADER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process leads; the fd stays open for life
    log.info("this process runs the periodic jobs", extra={"fields": {"pid": os.getpid()}})
    from fhir_server.app import JOBS

    JobRunner(job_context(config), JOBS, config.jobs_interval).start()


def start_jobs_leader(config: Config) -> threading.Thread | None:
    """Offer this process as the one running the jobs (none when ``DMP_JOBS_INTERVAL`` is 0)."""
    if config.jobs_interval <= 0:
        return None
    thread = threading.Thread(target=_lead, args=(config,), name="dmp-jobs-leader", daemon=True)
    thread.start()
    return thread
