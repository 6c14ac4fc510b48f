"""HTTP of SMART App Launch for patient apps: the authorisation endpoint and its pages.

The pages are small server-rendered French forms (Jinja2 templates in ``launch_templates/``,
autoescaped). They carry no script and no style, and say so in a strict Content-Security-Policy;
they may not be framed (clickjacking of the approval button), are never cached, and send no
Referer (the query holds the app's ``state``). The pending authorisation is named by an HttpOnly,
SameSite=Lax cookie scoped to the authorisation path; every form also carries the session's CSRF
token. What each step means is decided in :mod:`fhir_server.dmp.accounts.launch`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from authz.authserver.apps import AppRegistry
from authz.authserver.authorize import enable_app_launch
from authz.authserver.errors import AuthError
from authz.authserver.server import AuthorizationServer
from authz.authserver.token_endpoint import NO_STORE
from authz.scopes import parse_scope
from fhir_server.dmp.accounts.launch import AppAuthorization, PageError, Pending, RedirectError
from fhir_server.dmp.accounts.service import AccountService

COOKIE = "dmp_authorize"
#: Every method is routed here, so that none falls through to the FHIR catch-all route.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
TEMPLATES = Path(__file__).parent / "launch_templates"
#: The refusals of the login, as a person reads them (the details stay uniform: R21).
MESSAGES = {
    "invalid_grant": "Identifiant, mot de passe ou code non reconnu.",
    "temporarily_unavailable": "Le code n'a pas pu être envoyé ; réessayez dans quelques instants.",
}
_PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def register_launch_routes(app: Flask, server: AuthorizationServer, accounts: AccountService, base: str) -> None:
    """``{base}/auth/authorize`` (GET and POST) and its steps; the ``authorization_code`` grant and
    the discovery members."""

    def now() -> float:
        return server.clock()

    flow = AppAuthorization(AppRegistry(server.store), accounts.login, server.store, server.base_url, now)
    enable_app_launch(server)
    pages = _Pages(Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True)))
    root = f"{base}/auth/authorize"
    secure = server.base_url.startswith("https://")

    def authorize() -> Response:
        if request.method not in ("GET", "POST"):
            return _not_allowed("GET, POST")
        pairs = list(request.args.items(multi=True) if request.method == "GET" else request.form.items(multi=True))
        try:
            session, pending, registered = flow.begin(pairs)
        except PageError as exc:
            return pages.error(str(exc))
        except RedirectError as exc:
            return _redirect(exc.location())
        response = pages.render("login.html", pending, registered.name, action=f"{root}/login")
        response.set_cookie(COOKIE, session, httponly=True, samesite="Lax", secure=secure, path=root)
        return response

    def step(view: Callable[[str, str, Pending], Response]) -> Callable[[], Response]:
        def handler() -> Response:
            if request.method != "POST":
                return _not_allowed("POST")
            session, csrf = request.cookies.get(COOKIE, ""), request.form.get("csrf", "")
            try:
                return view(session, csrf, flow.pending(session, csrf))
            except PageError as exc:
                return pages.error(str(exc))
            except RedirectError as exc:
                return _redirect(exc.location())

        handler.__name__ = f"launch_{view.__name__}"
        return handler

    def name_of(pending: Pending) -> str:
        registered = flow.app_of(pending)
        return registered.name if registered is not None else pending.client_id

    def login(session: str, csrf: str, pending: Pending) -> Response:
        try:
            pending = flow.sign_in(session, csrf, request.form)
        except AuthError as exc:
            return pages.render("login.html", pending, name_of(pending), exc, action=f"{root}/login")
        return pages.render("code.html", pending, name_of(pending), action=f"{root}/code", sent_to=pending.sent_to)

    def code(session: str, csrf: str, pending: Pending) -> Response:
        try:
            pending = flow.enter_code(session, csrf, request.form.get("code", ""))
        except AuthError as exc:
            now = flow.pending(session)
            if now.stage == "login":
                return pages.render("login.html", now, name_of(now), exc, action=f"{root}/login")
            return pages.render("code.html", now, name_of(now), exc, action=f"{root}/code", sent_to=now.sent_to)
        return _next_page(pending)

    def password(session: str, csrf: str, pending: Pending) -> Response:
        try:
            pending = flow.set_password(session, csrf, request.form.get("new_password", ""))
        except AuthError as exc:
            return pages.render("password.html", pending, name_of(pending), exc, action=f"{root}/password")
        return _next_page(pending)

    def _next_page(pending: Pending) -> Response:
        if pending.stage == "password":
            return pages.render("password.html", pending, name_of(pending), action=f"{root}/password")
        scopes = [(item, *(parse_scope(item) or ("", "", ""))[1:]) for item in pending.scope]
        response = pages.render("consent.html", pending, name_of(pending), action=f"{root}/consent", scopes=scopes)
        # Chrome applies form-action to the redirect that answers the form: allow the app's.
        response.headers["Content-Security-Policy"] += f" {_origin(pending.redirect_uri)}"
        return response

    def consent(session: str, csrf: str, pending: Pending) -> Response:
        try:
            response = _redirect(flow.decide(session, csrf, request.form.get("decision") == "approve"))
        except RedirectError as exc:
            response = _redirect(exc.location())
        response.delete_cookie(COOKIE, path=root, httponly=True, samesite="Lax", secure=secure)  # the session is over
        return response

    app.add_url_rule(root, "launch_authorize", authorize, methods=_METHODS)
    for name, view in (("login", login), ("code", code), ("password", password), ("consent", consent)):
        app.add_url_rule(f"{root}/{name}", f"launch_{name}", step(view), methods=_METHODS)


class _Pages:
    def __init__(self, env: Environment):
        self.env = env

    def render(
        self, template: str, pending: Pending, app_name: str, error: AuthError | None = None, **values: Any
    ) -> Response:
        message = None
        if error is not None:
            message = MESSAGES.get(error.error, f"Demande refusée : {error.description}")
        html = self.env.get_template(template).render(csrf=pending.csrf, app_name=app_name, message=message, **values)
        status = error.status if error is not None else 200
        return _page(html, status, "form-action 'self'")

    def error(self, message: str) -> Response:
        html = self.env.get_template("error.html").render(message=message, app_name=None)
        return _page(html, 400, "form-action 'none'")


def _page(html: str, status: int, form_action: str) -> Response:
    csp = f"default-src 'none'; base-uri 'none'; frame-ancestors 'none'; {form_action}"
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": csp}
    return Response(html, status=status, headers=headers, content_type="text/html; charset=utf-8")


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


def _not_allowed(allowed: str) -> Response:
    return Response(status=405, headers={"Allow": allowed, **NO_STORE})


def _redirect(location: str) -> Response:
    return Response(status=302, headers={"Location": location, **NO_STORE, "Referrer-Policy": "no-referrer"})
