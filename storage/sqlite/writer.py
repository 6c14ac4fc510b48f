"""One writer at a time, queued rather than polled.

SQLite lets one transaction write at a time; a second writer otherwise waits in the busy handler,
which sleeps and polls with growing pauses (up to 100 ms), so under load writes finish late and in
no particular order. Taking a lock first — a thread lock within a process, then an ``flock`` on a
file beside the database across processes (gunicorn workers) — lets waiters wake the moment the
writer is done.
"""

from __future__ import annotations

import fcntl
import os
import threading
from types import TracebackType


class WriterLock:
    def __init__(self, database_path: str):
        self._path = None if database_path == ":memory:" else f"{database_path}.writer"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._path is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked worker needs its own description
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> WriterLock:
        self._threads.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
