"""The trail by group commit: the AuditEvents of concurrent requests made durable together.

R17 wants every request about a record traced, durably, before it is answered. Each request's
event made durable on its own waits for its own sync to disk; databases solve the same problem for
their own log by *group commit*, and so does this: a request queues its event and waits; one
waiting request — the first to find nobody committing — takes the queued events (at most
:data:`MAX_BATCH`), hands them to the store's :meth:`~storage.interface.Store.log` at once, and
wakes the others once they are durable. While a batch is logged, the next requests queue, and
their batch follows. Each request still answers only once its own event is durable, and the cost
of a sync is shared by the batch. (The SQLite store logs to a journal file of its own and moves it
into the database in batches: :mod:`storage.sqlite.journal` says why.)

The committer is one of the waiting requests rather than a thread of its own: a request waits for
its batch anyway, so nothing is lost, one thread hand-off is saved, and there is nothing to start,
stop or leak — an app built by a test or a command leaves no thread behind, a gunicorn graceful
stop waits for its requests and so for their events, and a fork finds no writer thread missing.

What stays apart:

- a request already inside a transaction (a write: the service records it before committing)
  writes its event in that transaction, so the change and its trace land together or not at all;
- an emergency access's event and its alert are written in one transaction of their own, so that
  the alert is queued exactly when the event is stored;
- a batch the store refuses is logged again one event at a time: an event that fails on its own
  fails only its request, and a failure of the store itself (a full or read-only disk) fails every
  request of the batch with that error, as each would have failed alone — none answers without
  its event.

Back-pressure: at most :data:`MAX_WAITING` events wait in one process; a request finding the queue
full waits for room (a server makes one thread per request at most, so this only binds a
development server flooded with threads).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from authz.outbox import EMERGENCY_TOPIC
from storage.interface import Store

#: Events written in one transaction at most: a batch holds the write lock of all workers, so it
#: stays short (a batch of 64 events is a few tens of milliseconds of work).
MAX_BATCH = 64
#: Events waiting in one process at most (see the module doc).
MAX_WAITING = 1024


@dataclass(eq=False)
class _Pending:
    """One request's event, until its batch is committed (or failed)."""

    event: dict[str, Any]
    done: bool = False
    error: BaseException | None = None


class TrailWriter:
    """The group committer of one store's trail, shared by the request threads of a process."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH, max_waiting: int = MAX_WAITING):
        self._store = store
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._changed = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._committing = False

    def write(self, event: dict[str, Any], alert: bytes | None = None) -> None:
        """Store ``event`` (and queue ``alert``, an emergency access's, with it); return once it is
        committed, or raise what kept it from being stored."""
        if alert is not None or self._store.in_transaction():
            self._write(event, alert)
            return
        pending = _Pending(event)
        with self._changed:
            while len(self._queue) >= self._max_waiting:
                self._changed.wait()
            self._queue.append(pending)
            while not pending.done:
                if self._committing:
                    self._changed.wait()
                else:
                    self._lead()
        if pending.error is not None:
            raise pending.error

    def _lead(self) -> None:
        """Commit the next batch (called holding the lock, released meanwhile). It may not hold the
        caller's own event, when more than a batch was waiting: the caller then waits on."""
        self._committing = True
        self._changed.release()
        try:
            self._commit()
        finally:
            self._changed.acquire()
            self._committing = False
            self._changed.notify_all()

    def _take(self) -> list[_Pending]:
        """The next batch, off the queue."""
        with self._changed:
            return [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]

    def _commit(self) -> None:
        """Log the next batch; every entry done, each with its error if it has one. Only what
        stops the thread itself (``SystemExit``...) is raised: the committer answers for its own
        event only."""
        batch = self._take()
        try:
            self._store.log([pending.event for pending in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # which event is refused, if it is one: each alone (nothing of the batch is stored)
                for pending in batch:
                    try:
                        self._store.log([pending.event])
                    except Exception as alone:
                        pending.error = alone
        except BaseException as exc:  # the thread stops: no request of the batch answers as stored
            for pending in batch:
                pending.error = exc
            raise
        finally:
            for pending in batch:
                pending.done = True

    def _write(self, event: dict[str, Any], alert: bytes | None) -> None:
        """One event and its alert, together, in the caller's transaction or one of their own.
        Inside a transaction, a ``create`` is undone alone when it fails (its own savepoint): only
        an alert needs one more, around both."""
        if alert is None:
            self._store.create(event)
            return
        with self._store.transaction():
            self._store.create(event)
            self._store.enqueue(EMERGENCY_TOPIC, alert)
