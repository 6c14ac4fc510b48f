"""The write-ahead log copied into the database by a thread of its own, not by a committing writer.

Why: SQLite copies the log into the database (a *checkpoint*) in the commit that takes the log past
``wal_autocheckpoint`` pages, a thousand by default. That commit then writes those pages back and
syncs the database while it holds the writer lock of every worker, so every write of the server
waits behind it: 20 to 150 ms here, about one commit in fifteen under a load of writes. A PASSIVE
checkpoint takes no writer lock and waits for nobody, so a thread of each serving process runs one
every :data:`INTERVAL` seconds, beside the writers (two processes' checkpoints do not run at once:
SQLite lets the second return at once). Writers still checkpoint themselves once the log holds
:data:`FALLBACK_PAGES`, so the log stays bounded if the thread falls behind, stops, or was never
started: a store opened by a command or a test starts none, and checkpoints as SQLite does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Seconds between two checkpoints of the thread: a busy server adds about a thousand pages to
#: the log in that time, what SQLite would otherwise copy in one commit.
INTERVAL = 0.1
#: Pages past which a writer checkpoints by itself, as SQLite does at 1 000 without the thread.
FALLBACK_PAGES = 10_000
#: Seconds between two logged failures of the thread (a failure repeats every interval).
LOG_EVERY = 60.0
#: Seconds :meth:`Checkpointer.stop` waits for a checkpoint under way.
STOP_WAIT = 30.0

log = logging.getLogger(__name__)


class Checkpointer:
    """Runs ``checkpoint`` every ``interval`` seconds on a thread of its own, until stopped."""

    def __init__(self, checkpoint: Callable[[], object], interval: float = INTERVAL):
        self._checkpoint = checkpoint
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dmp-sqlite-checkpoints", daemon=True)
        self._logged = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._checkpoint()
            except Exception:  # a disk full, say: the writers' own checkpoints still bound the log
                if time.monotonic() - self._logged >= LOG_EVERY:
                    self._logged = time.monotonic()
                    log.exception("the write-ahead log could not be checkpointed (tried again)")
