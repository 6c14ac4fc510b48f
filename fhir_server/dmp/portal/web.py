"""What every page of the portal shares: the session of the request, CSRF, headers, rendering.

Each request loads its session (``sessions.py``) before the view runs and saves it after, which
is what moves the idle timeout. A POST is refused before any view runs unless it carries the
session's CSRF token, and when the session has expired nothing of what it asked is done. Pages
are sent with a Content-Security-Policy that allows no inline script or style (the little script
there is comes from the portal's own static files), are never cached, and may not be framed by
anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from authz.authserver.issuer import RefreshRefused
from fhir_server.dmp.portal.ports import Accounts, DocumentKinds
from fhir_server.dmp.portal.record import Record
from fhir_server.dmp.portal.sessions import COOKIE_NAME, PortalSession, SessionBook, same_token
from fhir_server.fhir.service import FhirService

log = logging.getLogger(__name__)

#: The pages' policy: only the portal's own files; documents open in its own sandboxed frames.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: Refresh the access token this long before it expires, so no request runs on a dying token.
_TOKEN_MARGIN = 60

View = TypeVar("View", bound=Callable[..., Any])


@dataclass
class Portal:
    """What the portal's views need, built once by :func:`fhir_server.portal.register_portal`."""

    service: FhirService
    accounts: Accounts
    kinds: DocumentKinds
    sessions: SessionBook
    secure_cookie: bool
    cookie_path: str

    @property
    def clock(self) -> Callable[[], float]:
        return self.sessions.clock


def portal() -> Portal:
    return cast(Portal, current_app.extensions["portal"])


def session() -> PortalSession:
    """The session of this request (a login form's anonymous one included)."""
    current = g.get("portal_session")
    if current is None:
        name, current = portal().sessions.start()
        g.portal_cookie = name
        g.portal_session = current
    return cast(PortalSession, current)


def keep(updated: PortalSession) -> None:
    """Remember ``updated`` as this request's session (saved when the response leaves)."""
    session()
    g.portal_session = updated


def restart(updated: PortalSession) -> None:
    """Carry on under a new cookie (after a login: the name an attacker may have planted is dropped)."""
    old = g.get("portal_cookie")
    if old:
        portal().sessions.end(old)
    g.portal_cookie, _ = portal().sessions.start()
    g.portal_session = updated


def end_session() -> None:
    old = g.get("portal_cookie")
    if old:
        portal().sessions.end(old)
    g.portal_cookie = None
    g.portal_session = None
    g.portal_clear = True


def notify(message: str) -> None:
    keep(session().with_notice(message))


def record() -> Record:
    """Requests about the signed-in person's record, with their own token (refreshed when due)."""
    current = session()
    assert current.access_token is not None
    if current.token_expires - _TOKEN_MARGIN <= portal().clock() and current.refresh_token:
        tokens = portal().accounts.issuer.refresh(current.refresh_token)
        current = replace(
            current,
            access_token=tokens["access_token"],
            refresh_token=tokens.get("refresh_token"),
            token_expires=portal().clock() + int(tokens.get("expires_in", 0)),
        )
        keep(current)
    return Record(portal().service, current.access_token or "", request.remote_addr)


def signed_in(view: View) -> View:
    """A page for the signed-in only: others go to the sign-in page, told why when their session
    expired."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        current = g.get("portal_session")  # no new session for a visitor who is only sent away
        if current is None or not current.signed_in:
            if g.get("portal_expired"):
                return to_sign_in("Votre session a expiré. Reconnectez-vous.")
            return redirect(url_for("portal.sign_in"))
        try:
            return view(*args, **kwargs)
        except RefreshRefused:
            end_session()
            return to_sign_in("Votre session a expiré. Reconnectez-vous.")

    return cast(View, guarded)


def to_sign_in(message: str) -> Any:
    end_session()
    name, fresh = portal().sessions.start()
    g.portal_cookie, g.portal_session = name, fresh.with_notice(message)
    g.portal_clear = False
    return redirect(url_for("portal.sign_in"))


def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    """A page, with the session's notice shown once."""
    current = session()
    if current.notice:
        keep(current.with_notice(None))
    field = Markup('<input type="hidden" name="csrf" value="{}">').format(current.csrf)
    return render_template(f"portal/{template}", me=current, notice=current.notice, csrf_field=field, **context), status


def install(blueprint: Blueprint) -> None:
    """The request hooks and error pages of the portal's blueprint."""

    @blueprint.before_request
    def load() -> Any:
        if request.endpoint == "portal.static":
            g.portal_skip = True
            return None
        name = request.cookies.get(COOKIE_NAME)
        current, expired = portal().sessions.open(name)
        g.portal_cookie = name if current is not None else None
        g.portal_session = current
        g.portal_expired = expired
        if request.method != "POST":
            return None
        if current is None:
            if expired:
                return to_sign_in("Votre session a expiré : rien n'a été modifié. Reconnectez-vous.")
            return refused("Ce formulaire n'est lié à aucune session. Rechargez la page et recommencez.")
        if not same_token(request.form.get("csrf"), current.csrf):
            return refused(
                "Ce formulaire n'est pas valide (jeton de sécurité absent ou périmé) : rien n'a été modifié."
            )
        return None

    @blueprint.after_request
    def save(response: Response) -> Response:
        if g.get("portal_skip"):
            return response
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        current, name = g.get("portal_session"), g.get("portal_cookie")
        settings = portal()
        if current is not None and name:
            settings.sessions.save(name, current)
            response.set_cookie(
                COOKIE_NAME,
                name,
                path=settings.cookie_path,
                secure=settings.secure_cookie,
                httponly=True,
                samesite="Lax",
            )
        elif g.get("portal_clear") or g.get("portal_expired"):
            response.delete_cookie(COOKIE_NAME, path=settings.cookie_path, secure=settings.secure_cookie, httponly=True)
        return response

    @blueprint.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return page("error.html", exc.code or 400, message=exc.description or exc.name)

    @blueprint.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        log.exception("unhandled error in the portal")
        return page("error.html", 500, message="Une erreur interne est survenue. Réessayez plus tard.")


def refused(message: str, status: int = 403) -> tuple[str, int]:
    return page("error.html", status, message=message)


def register_blueprint(app: Flask, blueprint: Blueprint, settings: Portal) -> None:
    app.extensions["portal"] = settings
    install(blueprint)
    app.register_blueprint(blueprint)
