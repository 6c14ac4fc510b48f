"""What a serving process does for its store on a thread of its own, not in a request: the
write-ahead logs checkpointed, the trail's events moved into its file.

Checkpoints. SQLite copies the log into the database (a *checkpoint*) in the commit that takes the
log past ``wal_autocheckpoint`` pages, a thousand by default. That commit then writes those pages
back and syncs the database while it holds the writer lock of every worker, so every write of the
server waits behind it: 20 to 150 ms here, about one commit in fifteen under a load of writes. A
PASSIVE checkpoint takes no writer lock and waits for nobody, so the thread runs one every
:data:`INTERVAL` seconds, beside the writers (two processes' checkpoints do not run at once:
SQLite lets the second return at once). Writers still checkpoint themselves once the log holds
:data:`FALLBACK_PAGES`, so the log stays bounded if the thread falls behind, stops, or was never
started: a store opened by a command or a test starts none, and checkpoints as SQLite does.

The journal (:mod:`storage.sqlite.journal`). Its events are durable once appended; moving a batch
of them into the database (about 250 events, 75 ms) is work no request needs done before its
answer, yet the request whose event filled the batch used to do it, and a read's p99 doubled
(45 → 90 ms, ``bench/README.md``). The store now wakes the thread for it (:meth:`Upkeep.wake`), and
moves the journal itself only once it holds :data:`~storage.sqlite.journal.FALLBACK_BYTES`, so
the journal stays bounded if the thread falls behind or stops. A read of the trail still moves
what waits first, whoever runs it. The events of writes, kept in the main file with their writes,
are moved by the same thread once a batch of them waits (``SqliteStore.create``).
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
#: Seconds between two logged failures of a checkpoint (a failure repeats every interval).
LOG_EVERY = 60.0
#: Seconds :meth:`Upkeep.stop` waits for the work under way.
STOP_WAIT = 30.0

log = logging.getLogger(__name__)


class Upkeep:
    """Runs ``checkpoint`` every ``interval`` seconds, and ``move`` whenever woken, on a thread of
    its own, until stopped. ``move`` logs its own failures: each is a batch of the trail's events
    left waiting, worth a line every time."""

    def __init__(self, checkpoint: Callable[[], object], move: Callable[[], object], interval: float = INTERVAL):
        self._checkpoint = checkpoint
        self._move = move
        self._interval = interval
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dmp-sqlite-upkeep", daemon=True)
        self._logged = 0.0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Ask for a move: the thread makes it as soon as it is done with what it does now."""
        self._woken.set()

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def _run(self) -> None:
        while True:
            woken = self._woken.wait(self._interval)
            if self._stop.is_set():
                return
            if woken:
                self._woken.clear()
                self._move()
            try:
                self._checkpoint()
            except Exception:  # a disk full, say: the writers' own checkpoints still bound the log
                if time.monotonic() - self._logged >= LOG_EVERY:
                    self._logged = time.monotonic()
                    log.exception("the write-ahead log could not be checkpointed (tried again)")
