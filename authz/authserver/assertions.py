"""Client authentication by a signed JWT (RFC 7523 §3, SMART ``client-confidential-asymmetric``).

The client proves who it is with a one-time JWT signed by its private key: ``iss`` = ``sub`` =
its client id, ``aud`` = this token endpoint's URL, an ``exp`` at most five minutes ahead and a
``jti`` never used before. The signature is checked with the key the header's ``kid`` names in the
client's registered JWK Set (inline, or fetched from its ``jwks_uri`` and cached), through the same
code as bearer tokens (authz/tokens.py), with the algorithm pinned to the key.

Algorithms: RS384 and ES384 only. SMART requires clients to support both and servers at least one;
accepting exactly these two keeps one key type per algorithm and refuses ``none``, every HMAC
(an HS384 "signed" with the public key is the classic forgery) and RS256/ES256 (SMART's baseline
is SHA-384; a client can always sign RS384).

Replay: each ``jti`` is kept per client in the private records until the assertion could no longer
be accepted anyway (``exp`` plus the leeway); ``add_record`` inserts only if absent, atomically,
so two workers racing with the same assertion cannot both win. The jti is recorded last, once
everything else holds, so a malformed assertion does not burn the client's jti.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from authz.authserver.clients import Client, ClientRegistry
from authz.tokens import (
    Fetcher,
    InvalidToken,
    JwksSource,
    RemoteJwks,
    check_header,
    fetch_json,
    split_jws,
    verify_signature,
)
from storage.interface import Store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
#: SMART: the assertion's ``exp`` "SHALL be no more than five minutes in the future".
MAX_LIFETIME_SECONDS = 300
#: Clock skew tolerated between client and server, on every time check.
LEEWAY_SECONDS = 30
MAX_JTI_LENGTH = 256
JTI_RECORD = "oauth-assertion-jti"


class AssertionRefused(Exception):
    """The client is not authenticated (OAuth ``invalid_client``); the message is for the client."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class AssertionVerifier:
    """Checks client assertions for one token endpoint; thread-safe (the JWKS caches are)."""

    def __init__(
        self,
        clients: ClientRegistry,
        store: Store,
        audience: str,
        clock: Callable[[], float] = time.time,
        fetch: Fetcher | None = None,
        jwks_ttl_seconds: int = 300,
    ):
        self.clients = clients
        self.store = store
        self.audience = audience
        self.clock = clock
        self._fetch = fetch or fetch_json
        self._jwks_ttl = jwks_ttl_seconds
        self._remote: dict[tuple[str, str], RemoteJwks] = {}
        self._lock = threading.Lock()

    def verify(self, assertion: str, client_id: str | None = None) -> Client:
        """The client ``assertion`` authenticates, or :class:`AssertionRefused`.

        ``client_id`` is the request's own ``client_id`` parameter, if sent: it must name the same
        client as the assertion (SMART: "ensure that the client_id provided ... matches").
        """
        try:
            header, unverified = split_jws(assertion)
            alg, kid = check_header(header, ASSERTION_ALGORITHMS)
        except InvalidToken as exc:
            raise AssertionRefused(f"client assertion: {exc.message}") from None
        if kid is None:
            raise AssertionRefused("client assertion: the header must name the key (kid)")
        if str(header.get("typ", "JWT")).upper() != "JWT":
            raise AssertionRefused("client assertion: typ must be JWT")
        client = self._client(unverified.get("iss"), client_id)
        if "jku" in header and header["jku"] != client.jwks_uri:
            raise AssertionRefused("client assertion: jku is not the client's registered JWK Set URL")
        try:
            claims = verify_signature(assertion, alg, kid, self._source(client))
        except InvalidToken as exc:
            raise AssertionRefused(f"client assertion: {exc.message}") from None
        now = self.clock()
        self._check_claims(claims, client.client_id, now)
        self._spend(client.client_id, claims["jti"], claims["exp"], now)
        return client

    def _client(self, iss: Any, client_id: str | None) -> Client:
        if not isinstance(iss, str) or not iss:
            raise AssertionRefused("client assertion: iss must be the client id")
        if client_id is not None and client_id != iss:
            raise AssertionRefused("client_id does not match the client assertion's iss")
        client = self.clients.get(iss)
        if client is None:
            raise AssertionRefused("unknown client")
        return client

    def _source(self, client: Client) -> JwksSource:
        """The client's keys: inline, or its ``jwks_uri`` through a cache kept per (client, URL),
        so that re-registering a client with another URL starts afresh."""
        if client.jwks is not None:
            return client.jwks
        uri = str(client.jwks_uri)
        with self._lock:
            remote = self._remote.get((client.client_id, uri))
            if remote is None:
                remote = RemoteJwks(uri, self._fetch, self.clock, self._jwks_ttl)
                self._remote[(client.client_id, uri)] = remote
            return remote

    def _check_claims(self, claims: dict[str, Any], client_id: str, now: float) -> None:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise AssertionRefused("client assertion: iss and sub must both be the client id")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise AssertionRefused(f"client assertion: aud must be the token endpoint {self.audience}")
        exp, jti = claims.get("exp"), claims.get("jti")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AssertionRefused("client assertion: exp is required (a number)")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise AssertionRefused("client assertion: jti is required (a string)")
        if now - LEEWAY_SECONDS >= exp:
            raise AssertionRefused("client assertion expired")
        if exp > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
            raise AssertionRefused("client assertion: exp must be at most five minutes ahead")
        for name in ("nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise AssertionRefused(f"client assertion: {name} must be a number")
            if name in claims and claims[name] > now + LEEWAY_SECONDS:
                raise AssertionRefused(f"client assertion: {name} is in the future")

    def _spend(self, client_id: str, jti: str, exp: float, now: float) -> None:
        """Record the jti until the assertion could not pass anyway; refuse one already recorded."""
        key = hashlib.sha256(f"{client_id}\n{jti}".encode()).hexdigest()
        expires = int(exp) + LEEWAY_SECONDS + 1
        if not self.store.add_record(JTI_RECORD, key, b"", expires=expires, now=int(now)):
            raise AssertionRefused("client assertion already used (jti seen before)")
