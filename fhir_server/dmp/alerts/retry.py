"""When a failed delivery is tried again, and when the server gives up.

Exponential backoff, capped: 1 min, 2, 4, 8, 16, 32, then every hour. The tenth failure gives up
(about four hours after the first): by then the endpoint is wrong or gone rather than briefly
down, and a Subscription is better in ``error``, where its owner sees it, than retried forever.
The same policy holds whatever failed — an endpoint answering 5xx, a refused connection, a
timeout, the server's own mail relay down: the message waits in the outbox either way, and the
retries follow the job's clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from storage.interface import Queued, Store

log = logging.getLogger(__name__)

FIRST_DELAY = 60  # seconds
MAX_DELAY = 3600
MAX_ATTEMPTS = 10


def delay(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failure (1-based)."""
    return min(FIRST_DELAY * 2 ** (attempts - 1), MAX_DELAY)


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class Retries:
    """The outcome of one delivery attempt, recorded in the outbox (each in a short transaction
    of its own, after the network is done with)."""

    store: Store
    now: datetime

    def done(self, *messages: Queued) -> None:
        """Delivered, or nothing to deliver any more: never returned again."""
        with self.store.transaction():
            for message in messages:
                self.store.acknowledge(message.id)

    def failed(self, message: Queued) -> bool:
        """Defer ``message`` for its next try; True when it has failed too often and the caller
        must give up on it (acknowledge it and say so)."""
        attempts = message.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            return True
        self.store.defer(message.id, epoch(self.now) + delay(attempts), attempts)
        return False

    def unexpected(self, message: Queued, error: Exception) -> None:
        """A message whose handling failed in a way nobody foresaw (a damaged payload, a bug):
        logged, retried like a delivery, and dropped at the limit rather than left to block the
        queue forever."""
        log.error("outbox message %d could not be handled", message.id, exc_info=error)
        if self.failed(message):
            log.error("outbox message %d dropped after %d attempts", message.id, MAX_ATTEMPTS)
            self.done(message)
