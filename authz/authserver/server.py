"""The server's own authorisation server, as one object the HTTP layer holds.

Built once per app from the configuration: the store (clients, jtis and refresh tokens live in
its private records), the server's signing key, and one clock that every part reads through
``self.clock`` — tests replace that attribute to move time for the assertion checks, the token
issuer and the JWKS caches at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from authz.authserver.assertions import ASSERTION_TYPE, AssertionRefused, AssertionVerifier
from authz.authserver.clients import Client, ClientRegistry
from authz.authserver.discovery import Publication, jwks_uri, smart_configuration, token_endpoint
from authz.authserver.issuer import TokenIssuer
from authz.authserver.token_endpoint import (
    INVALID_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    OAuthError,
    TokenRequest,
)
from authz.keys import ServerKey
from authz.tokens import Fetcher, own_issuer
from storage.interface import Store

#: A grant: what the token endpoint answers to one ``grant_type`` (a token response, RFC 6749 §5.1).
GrantHandler = Callable[["AuthorizationServer", TokenRequest], dict[str, Any]]


class GrantRegistry:
    """``grant_type`` → handler."""

    def __init__(self, handlers: Mapping[str, GrantHandler] | None = None):
        self._handlers: dict[str, GrantHandler] = dict(handlers or {})

    def register(self, grant_type: str, handler: GrantHandler) -> None:
        """Add a grant; a type registered twice is a programming error, not an override."""
        if grant_type in self._handlers:
            raise ValueError(f"grant type {grant_type} is already registered")
        self._handlers[grant_type] = handler

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def handle(self, server: AuthorizationServer, request: TokenRequest) -> dict[str, Any]:
        grant_type = request.require("grant_type")
        handler = self._handlers.get(grant_type)
        if handler is None:
            raise OAuthError(UNSUPPORTED_GRANT_TYPE, f"grant_type {grant_type} is not supported here")
        return handler(server, request)


class AuthorizationServer:
    def __init__(
        self,
        base_url: str,
        store: Store,
        key: ServerKey,
        *,
        grants: Mapping[str, GrantHandler],
        clock: Callable[[], float] = time.time,
        fetch: Fetcher | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.clock = clock

        def now() -> float:
            return self.clock()

        self.issuer = TokenIssuer(key, own_issuer(self.base_url), self.base_url, store, clock=now)
        self.clients = ClientRegistry(store, now)
        self.assertions = AssertionVerifier(self.clients, store, self.token_endpoint, now, fetch)
        self.grants = GrantRegistry(grants)
        #: What the discovery document announces besides the token endpoint: other parts of the
        #: server call ``publication.publish(endpoints, scopes=..., capabilities=...)``.
        self.publication = Publication()

    @property
    def token_endpoint(self) -> str:
        return token_endpoint(self.base_url)

    @property
    def jwks_uri(self) -> str:
        return jwks_uri(self.base_url)

    # -- extension points ------------------------------------------------------------------------

    def register_grant(self, grant_type: str, handler: GrantHandler) -> None:
        """Serve another ``grant_type`` at the token endpoint (and list it in the discovery document)."""
        self.grants.register(grant_type, handler)

    # -- the endpoints ---------------------------------------------------------------------------

    def token(self, request: TokenRequest) -> dict[str, Any]:
        """The token response to ``request``, or :class:`OAuthError`."""
        return self.grants.handle(self, request)

    def discovery(self) -> dict[str, Any]:
        return smart_configuration(self.base_url, self.grants.types(), self.publication)

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify every token issued here."""
        return dict(self.issuer.key.jwks())

    # -- client authentication -------------------------------------------------------------------

    def client_of(self, request: TokenRequest) -> Client | None:
        """The client the request authenticates as, None when it carries no client authentication
        (a public client); ``invalid_client`` when it carries one that fails.

        One method only: ``private_key_jwt`` (RFC 7523 §2.2). HTTP Basic and client secrets are
        refused rather than ignored, since RFC 6749 §2.3 forbids mixing methods and a client
        sending a secret expects it to count.
        """
        if request.authorization is not None:
            scheme = request.authorization.strip().partition(" ")[0] or "private_key_jwt"
            raise OAuthError(INVALID_CLIENT, "only private_key_jwt client authentication is supported", scheme=scheme)
        if request.get("client_secret") is not None:
            raise OAuthError(INVALID_CLIENT, "client secrets are not accepted: authenticate with private_key_jwt")
        assertion_type, assertion = request.get("client_assertion_type"), request.get("client_assertion")
        if assertion_type is None and assertion is None:
            return None
        if assertion_type != ASSERTION_TYPE:
            raise OAuthError(INVALID_CLIENT, f"client_assertion_type must be {ASSERTION_TYPE}")
        if assertion is None:
            raise OAuthError(INVALID_CLIENT, "missing client_assertion")
        try:
            return self.assertions.verify(assertion, request.get("client_id"))
        except AssertionRefused as exc:
            raise OAuthError(INVALID_CLIENT, str(exc)) from None

    def authenticate_client(self, request: TokenRequest) -> Client:
        """The authenticated client; a request without client authentication is ``invalid_client``."""
        client = self.client_of(request)
        if client is None:
            raise OAuthError(INVALID_CLIENT, "client authentication required: a private_key_jwt client_assertion")
        return client
