"""Access and refresh tokens signed by the server's own key.

Every token the server hands out — to a patient after login, to clinical software after a
backend-services assertion — comes from here, so they all carry the claims CONTRACT §2 requires
and the gatekeeper verifies them like any other issuer's. Refresh tokens are opaque random
strings; only their SHA-256 is stored (a stolen database yields none), with the grant they
continue. Each use rotates it: the old one is forgotten, so a replayed refresh token fails.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from authz.keys import ServerKey
from storage.interface import Store

_REFRESH = "refresh-token"


@dataclass(frozen=True)
class Grant:
    """What a token says: who (``sub``), which scopes, the IHE IUA actor, for which client."""

    sub: str
    scope: str
    iua: dict[str, Any]
    client_id: str | None = None
    #: SMART launch context (``{"patient": id}``): in every token response of the grant, refreshed
    #: ones included, and a claim of its access tokens, so that introspection can say it.
    context: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({**self.__dict__})

    @classmethod
    def from_json(cls, data: bytes) -> Grant:
        raw = orjson.loads(data)
        return cls(raw["sub"], raw["scope"], raw["iua"], raw.get("client_id"), raw.get("context") or {})


class RefreshRefused(Exception):
    """Unknown, expired or already used refresh token (OAuth ``invalid_grant``)."""


@dataclass
class TokenIssuer:
    key: ServerKey
    issuer: str
    audience: str
    store: Store
    access_lifetime: int = 3600
    refresh_lifetime: int = 30 * 24 * 3600
    clock: Callable[[], float] = field(default=time.time)

    def access_token(self, grant: Grant, lifetime: int | None = None) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.sub,
            "aud": self.audience,
            "iat": now,
            "exp": now + (lifetime or self.access_lifetime),
            "jti": secrets.token_urlsafe(16),
            "scope": grant.scope,
            "extensions": {"ihe_iua": grant.iua},
        }
        if grant.client_id:
            claims["client_id"] = grant.client_id
        return self.key.sign({**grant.context, **claims})

    def issue(self, grant: Grant, *, refresh: bool) -> dict[str, Any]:
        """An OAuth 2.0 token response (RFC 6749 §5.1) for ``grant``."""
        response: dict[str, Any] = {
            "access_token": self.access_token(grant),
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
            "scope": grant.scope,
            **grant.context,
        }
        if refresh:
            token = secrets.token_urlsafe(32)
            expires = int(self.clock()) + self.refresh_lifetime
            self.store.put_record(_REFRESH, _digest(token), grant.to_json(), expires=expires)
            response["refresh_token"] = token
        return response

    def refresh(self, token: str) -> dict[str, Any]:
        """A new token pair for a refresh token, which is used up (rotation)."""
        key = _digest(token)
        with self.store.transaction():
            held = self.store.get_record(_REFRESH, key)
            if held is not None:
                self.store.delete_record(_REFRESH, key)
            live = held is not None and (held[1] is None or held[1] > self.clock())
            response = self.issue(Grant.from_json(held[0]), refresh=True) if held is not None and live else None
        if response is None:
            raise RefreshRefused("the refresh token is unknown, expired or already used")
        return response

    def grant_of(self, token: str) -> Grant | None:
        """The grant a live refresh token continues, without using it up: the token endpoint checks
        who presents it (RFC 6749 §6: the client it was issued to) before :meth:`refresh` rotates it."""
        live = self.live_refresh(token)
        return live[0] if live is not None else None

    def live_refresh(self, token: str) -> tuple[Grant, int | None] | None:
        """The grant of a live refresh token and when it expires (introspection says both)."""
        held = self.store.get_record(_REFRESH, _digest(token))
        if held is None or (held[1] is not None and held[1] <= self.clock()):
            return None
        return Grant.from_json(held[0]), held[1]

    def revoke_refresh(self, token: str) -> bool:
        """Forget one refresh token (RFC 7009 revocation, a replayed authorisation code)."""
        return self.store.delete_record(_REFRESH, _digest(token))

    def revoke_refresh_tokens(self, sub: str) -> int:
        """Forget every refresh token of ``sub`` (password reset, account closure)."""
        gone = 0
        with self.store.transaction():
            for key in self.store.record_keys(_REFRESH):
                held = self.store.get_record(_REFRESH, key)
                if held is not None and Grant.from_json(held[0]).sub == sub:
                    gone += self.store.delete_record(_REFRESH, key)
        return gone


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
