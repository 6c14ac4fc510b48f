"""HTTP glue of the account endpoints under ``{base}/auth/`` (the server's issuer).

Requests are JSON objects or HTML forms (``application/x-www-form-urlencoded``), so that both an
app and a plain login page can use them; answers are JSON, never cached (RFC 6749 §5.1), and
errors follow the OAuth convention of :mod:`authz.authserver.errors`. What each endpoint does is
decided in :mod:`authz.authserver`; only transport lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from authz.audit import who
from authz.authserver.errors import AuthError, invalid_request
from authz.terms import ADMINISTRATION, PROFESSIONAL
from fhir_server.dmp.accounts.service import AccountService

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_JSON_TYPES = ("application/json", "application/fhir+json")
_FORM = "application/x-www-form-urlencoded"


def account_endpoints(base_url: str) -> dict[str, str]:
    """The account endpoints a client needs to know, as announced in the discovery document."""
    auth = f"{base_url.rstrip('/')}/auth"
    return {
        "patient_login": f"{auth}/login",
        "patient_login_code": f"{auth}/login/code",
        "password_change": f"{auth}/password",
        "dmp_creation": f"{auth}/dmp",
    }


def register_account_routes(app: Flask, accounts: AccountService, base: str) -> None:
    """The login, password, administration and DMP-creation endpoints, and the service at
    ``app.extensions["accounts"]``."""
    app.extensions["accounts"] = accounts

    def route(path: str, endpoint: str, view: Callable[..., tuple[int, dict[str, Any]]]) -> None:
        def handler(**kwargs: Any) -> Response:
            try:
                status, body = view(**kwargs)
            except AuthError as exc:
                return _json(exc.status, exc.body(), exc.headers)
            except HTTPException as exc:  # body too large...
                return _json(exc.code or 400, {"error": "invalid_request", "error_description": exc.description})
            return _json(status, body)

        app.add_url_rule(f"{base}/auth/{path}", f"auth_{endpoint}", handler, methods=["POST"])

    route("login", "login", lambda: (200, accounts.login.start(_body())))
    route("login/code", "login_code", lambda: (200, accounts.login.verify(_body())))
    route("password", "password", lambda: (200, accounts.login.change_password(_body())))

    def create_account() -> tuple[int, dict[str, Any]]:
        admin = accounts.administrator(request.headers.get("Authorization"))
        return 201, accounts.admin.create(_body(), (who(admin), admin.role))

    def reset_account(ins: str) -> tuple[int, dict[str, Any]]:
        admin = accounts.administrator(request.headers.get("Authorization"))
        return 200, accounts.admin.reset(ins, _body(), (who(admin), admin.role))

    def creation_code() -> tuple[int, dict[str, Any]]:
        actor = accounts.caller(request.headers.get("Authorization"), (PROFESSIONAL, ADMINISTRATION))
        return 201, accounts.creation.issue_code(actor, _body())

    route("accounts", "accounts", create_account)
    route("accounts/<path:ins>/reset", "account_reset", reset_account)
    route("creation-codes", "creation_codes", creation_code)
    route("dmp", "dmp", lambda: (201, accounts.creation.create(_body(), request.remote_addr)))


def _body() -> dict[str, Any]:
    """The request's members: a JSON object or a form; 400 for anything else."""
    content_type = (request.mimetype or "").lower()
    if content_type == _FORM:
        return dict(request.form.items())
    data = request.get_data(cache=False)
    if not data.strip():
        return {}
    if content_type not in _JSON_TYPES:
        raise invalid_request(f"send JSON ({_JSON_TYPES[0]}) or a form ({_FORM}), not {content_type or 'no type'}")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise invalid_request("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("the body must be a JSON object")
    return body


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, headers={**_NO_STORE, **(headers or {})}, content_type="application/json"
    )
