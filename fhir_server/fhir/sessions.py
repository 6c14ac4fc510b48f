"""Where the state behind a paging link lives: in the link itself, sealed, or in the store.

A search with more hits than a page, a history or ``$everything`` hands out ``_getpages`` links
that must bring back the same query for the same caller over the same data (its watermark).
That state used to be saved in the store at every such search: a write transaction under the
writer lock of all workers, for a read. Now, when it is small (it nearly always is: the query's
parameters, the caller, a watermark), it travels in the link, sealed like the stored content
(AES-GCM under a data key wrapped by the master key, bound to its purpose), so a page link is
unreadable and unforgeable outside the server and a search writes nothing. A state too large for
a link (a search for a thousand ids) is still saved in the store, under a random key.

Both kinds expire after ``DMP_SEARCH_SESSION_SECONDS`` and are bound to the caller by the
interaction that reads them (a stranger's link answers 410). A sealed link cannot be withdrawn
before it expires — a stored one was not either — and stops opening once its master key is
retired (410: run the search again).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import orjson

from storage.crypto import DecryptionError, EnvelopeCipher
from storage.interface import Store

#: What a sealed key starts with; a stored session's key never holds a dot (``token_urlsafe``).
SEALED = "s."
#: The largest state carried in a link (its JSON, in bytes); the link is about 1.4 times longer.
INLINE_LIMIT = 1024
_PURPOSE = b"paging-session"


class PagingSessions:
    def __init__(
        self,
        store: Store,
        cipher: EnvelopeCipher,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
        inline_limit: int = INLINE_LIMIT,
    ):
        self._store = store
        self._cipher = cipher
        self._ttl = ttl_seconds
        self._clock = clock
        self._inline_limit = inline_limit

    def save(self, state: dict[str, Any]) -> str:
        """The key of a new paging session holding ``state``."""
        body = orjson.dumps({"expires": int(self._clock()) + self._ttl, "state": state})
        if len(body) > self._inline_limit:
            return self._store.save_session(orjson.dumps(state), self._ttl)
        sealed = self._cipher.seal(body, _PURPOSE)
        return SEALED + base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")

    def load(self, key: str) -> dict[str, Any] | None:
        """The state of session ``key``; ``None`` when it is unknown, expired or not the server's."""
        if not key.startswith(SEALED):
            raw = self._store.load_session(key)
            return None if raw is None else _state(orjson.loads(raw))
        text = key[len(SEALED) :]
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = orjson.loads(self._cipher.open(sealed, _PURPOSE))
        except (binascii.Error, ValueError, DecryptionError):  # orjson.JSONDecodeError is a ValueError
            return None
        if not isinstance(body, dict) or not isinstance(body.get("expires"), int):
            return None
        if body["expires"] < self._clock():
            return None
        return _state(body.get("state"))


def _state(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None
