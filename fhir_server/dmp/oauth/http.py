"""HTTP ↔ the authorisation server: the token endpoint, discovery and the JWKS.

Only transport lives here — methods, content types, headers, JSON rendering; what a token request
means is decided in authz/authserver. These routes are more specific than the FHIR catch-all
``{base}/<path:path>``, so they win, and they answer every method themselves (a GET on the token
endpoint must not fall through to the FHIR router). Answers are plain JSON, never FHIR, and an
error is always an OAuth error object: nothing here answers 500 for a bad request.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, request

from authz.authserver.server import AuthorizationServer
from authz.authserver.token_endpoint import INVALID_REQUEST, NO_STORE, OAuthError, TokenRequest

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_FORM = "application/x-www-form-urlencoded"
#: A token request is a few form fields and one or two JWTs: anything larger is not one.
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
#: Public documents: short enough that a key rotation or a new grant is seen within minutes.
DISCOVERY_CACHE = "public, max-age=3600"
JWKS_CACHE = "public, max-age=600"


def register_oauth_routes(app: Flask, server: AuthorizationServer, base: str) -> None:
    """Route ``{base}/auth/token``, ``{base}/auth/jwks`` and ``{base}/.well-known/smart-configuration``
    to the authorisation server (also kept in ``app.extensions["auth_server"]``)."""
    app.extensions["auth_server"] = server

    def token() -> Response:
        return _token(server)

    def discovery() -> Response:
        return _public_json(server.discovery(), DISCOVERY_CACHE)

    def jwks() -> Response:
        return _public_json(server.jwks(), JWKS_CACHE)

    app.add_url_rule(f"{base}/auth/token", "oauth_token", token, methods=METHODS)
    app.add_url_rule(f"{base}/auth/jwks", "oauth_jwks", jwks, methods=METHODS)
    app.add_url_rule(f"{base}/.well-known/smart-configuration", "smart_configuration", discovery, methods=METHODS)


def oauth_json(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def not_allowed(allowed: str) -> Response:
    return oauth_json(405, {"error": "method_not_allowed", "error_description": f"use {allowed}"}, {"Allow": allowed})


def _public_json(document: dict[str, Any], cache: str) -> Response:
    """A public document: JSON whatever the ``Accept`` header (SMART §Discovery), readable from
    any origin (a browser app discovers the server before it has any credential)."""
    if request.method not in ("GET", "HEAD"):
        return not_allowed("GET, HEAD")
    return oauth_json(200, document, {"Cache-Control": cache, "Access-Control-Allow-Origin": "*"})


def _token(server: AuthorizationServer) -> Response:
    if request.method != "POST":
        return not_allowed("POST")
    try:
        body = server.token(token_request())
    except OAuthError as exc:
        return oauth_json(exc.status, exc.body(), exc.headers())
    return oauth_json(200, body, dict(NO_STORE))


def token_request() -> TokenRequest:
    """RFC 6749 §3.2 (and RFC 7662, RFC 7009): parameters in a form-encoded POST body, never in the
    URL (where credentials would end up in access logs)."""
    if (request.content_length or 0) > MAX_TOKEN_REQUEST_BYTES:
        raise OAuthError(INVALID_REQUEST, "the request is too large", status=413)
    if request.mimetype != _FORM:
        raise OAuthError(INVALID_REQUEST, f"the request must be {_FORM}")
    if request.args:
        raise OAuthError(INVALID_REQUEST, "token request parameters go in the body, not the URL")
    return TokenRequest.from_pairs(request.form.items(multi=True), request.headers.get("Authorization"))
