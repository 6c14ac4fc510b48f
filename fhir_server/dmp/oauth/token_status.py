"""HTTP of token introspection (RFC 7662) and revocation (RFC 7009): form POSTs answered in JSON,
errors as RFC 6749 §5.2. Who may call them is decided in :mod:`authz.authserver.revocation`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from authz.authserver.revocation import TokenStatus
from authz.authserver.server import AuthorizationServer
from authz.authserver.token_endpoint import NO_STORE, OAuthError
from fhir_server.dmp.oauth.http import METHODS, not_allowed, oauth_json, token_request


def register_token_status_routes(app: Flask, server: AuthorizationServer, base: str) -> None:
    """``{base}/auth/introspect`` and ``{base}/auth/revoke``, on the server's clock."""

    def now() -> float:
        return server.clock()

    status = TokenStatus.of(server, now)

    def introspect() -> Response:
        return _answer(lambda: status.introspect(token_request()))

    def revoke() -> Response:
        def revoked() -> dict[str, Any]:
            status.revoke(token_request())
            return {}  # RFC 7009 §2.2: 200, the body is ignored

        return _answer(revoked)

    app.add_url_rule(f"{base}/auth/introspect", "oauth_introspect", introspect, methods=METHODS)
    app.add_url_rule(f"{base}/auth/revoke", "oauth_revoke", revoke, methods=METHODS)


def _answer(answer: Callable[[], dict[str, Any]]) -> Response:
    if request.method != "POST":
        return not_allowed("POST")
    try:
        body = answer()
    except OAuthError as exc:
        return oauth_json(exc.status, exc.body(), exc.headers())
    return oauth_json(200, body, dict(NO_STORE))
