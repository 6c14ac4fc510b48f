"""Whether a server is serving a data directory: every server holds a shared ``flock`` on
``serving.lock`` in it for as long as it runs (the gunicorn master, whose workers inherit the open
file, or the ``--dev`` process). Commands that must not run beside a server — ``restore``, which
replaces the database and keys under it — take the lock exclusively without waiting and refuse
when they cannot. The kernel drops the lock when the process dies, however it dies, so a crashed
server never leaves a stale one behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

SERVING_LOCK = "serving.lock"


def hold_serving_lock(data_dir: Path) -> int:
    """Mark ``data_dir`` as served by this process until it exits: the descriptor stays open."""
    fd = os.open(data_dir / SERVING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def is_served(data_dir: Path) -> bool:
    """True while some server holds ``data_dir``'s serving lock."""
    try:
        fd = os.open(data_dir / SERVING_LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also releases the lock when it was taken
    return False
