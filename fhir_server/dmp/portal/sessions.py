"""Sessions of the patient portal: kept server side, named by a random cookie.

Why server side: a signed-cookie session would hand the browser the person's access and refresh
tokens (readable by anyone who copies the cookie jar, and impossible to end from the server). Here
the cookie carries only a random name; the session — tokens, CSRF token, login in progress — is a
sealed private record in the store (encrypted like the resources, shared by every worker process),
under the digest of that name, so neither a stolen database row nor the cookie alone reveals the
other. A session untouched for ``idle`` seconds is over: the record expires and is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from storage.interface import Store

RECORD_KIND = "portal-session"
COOKIE_NAME = "dmp_portal"


def _token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PortalSession:
    """What the portal remembers of one browser between two pages."""

    csrf: str = field(default_factory=_token)  # the token every form must carry back
    seen: float = 0.0  # epoch seconds of the last page: the idle timeout counts from it
    notice: str | None = None  # a message for the next page ("document masqué")
    # a login in progress (R21): the challenge of the code sent, then a password-change credential
    challenge: str | None = None
    sent_to: str | None = None
    password_change: str | None = None
    # signed in: the person's own tokens, and whose record they act on
    access_token: str | None = None
    refresh_token: str | None = None
    token_expires: float = 0.0
    role: str | None = None  # PAT or LEGREP
    subject: str | None = None  # the signed-in person's INS
    patient_ins: str | None = None  # the record's INS (a representative's: the minor's)
    patient_id: str | None = None
    patient_name: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.access_token is not None

    def with_notice(self, notice: str | None) -> PortalSession:
        return replace(self, notice=notice)


@dataclass
class SessionBook:
    """Portal sessions in the store, with the idle timeout of the configuration."""

    store: Store
    idle: int  # seconds
    clock: Callable[[], float]

    def open(self, name: str | None) -> tuple[PortalSession | None, bool]:
        """The live session a cookie names, and whether the cookie named one that expired."""
        if not name or len(name) > 100:
            return None, False
        key = _digest(name)
        held = self.store.get_record(RECORD_KIND, key)
        if held is None:
            return None, True
        session = PortalSession(**orjson.loads(held[0]))
        if session.seen + self.idle <= self.clock():
            self.store.delete_record(RECORD_KIND, key)
            return None, True
        return session, False

    def start(self) -> tuple[str, PortalSession]:
        """A new anonymous session (a login form needs its CSRF token too) and its cookie value."""
        return secrets.token_urlsafe(32), PortalSession(seen=self.clock())

    def save(self, name: str, session: PortalSession) -> None:
        """Keep ``session`` as seen now; it expires ``idle`` seconds later."""
        now = self.clock()
        value: dict[str, Any] = asdict(replace(session, seen=now))
        self.store.put_record(RECORD_KIND, _digest(name), orjson.dumps(value), expires=int(now) + self.idle)

    def end(self, name: str) -> None:
        self.store.delete_record(RECORD_KIND, _digest(name))


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """A CSRF token check that takes the same time whatever the guess."""
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())
