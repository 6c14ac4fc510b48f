"""Patient apps: the SMART App Launch clients an operator registered by hand.

A patient app (a phone or browser app the patient or a legal representative uses) is a *public*
client (SMART ``client-public``): it holds no secret, so what proves it is the app is the exact
redirect URI the authorisation code is sent to, and PKCE binds the code to the instance that
asked for it. Registration fixes both: the exact redirect URIs (compared as strings, RFC 6749
§3.1.2.2 and OAuth 2.0 Security BCP §4.1.3: no prefix or wildcard matching) and the scopes the app
may be granted — ``patient/`` resource scopes, ``launch/patient``, ``offline_access`` and
``online_access``. ``openid`` and ``fhirUser`` are not offered: the server issues no id_token.

Apps are kept in the store's private records (kind ``smart-app``), apart from the backend clients
(which authenticate with keys): one id names one kind of client only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from authz.authserver.clients import CLIENT_RECORD, ClientError
from authz.scopes import Scopes, parse_scope
from storage.interface import Store

APP_RECORD = "smart-app"
#: Scopes without a resource a patient app may hold: the patient context of a standalone launch,
#: and the two kinds of refresh token (both are the login's: 30 days, rotated at each use).
CONTEXT_SCOPES = ("launch/patient", "offline_access", "online_access")
REFRESH_SCOPES = ("offline_access", "online_access")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,100}")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
#: A private-use scheme of a native app is a reversed domain name (RFC 8252 §7.1).
_PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+")
MAX_REDIRECT_URIS = 10


@dataclass(frozen=True)
class PatientApp:
    """A registered public app: its id, display name, exact redirect URIs and allowed scopes."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    scope: str
    registered_at: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({**self.__dict__, "redirect_uris": list(self.redirect_uris)})

    @classmethod
    def from_json(cls, data: bytes) -> PatientApp:
        raw = orjson.loads(data)
        return cls(**{**raw, "redirect_uris": tuple(raw["redirect_uris"])})

    def narrowed(self, requested: str) -> list[str]:
        """The requested scopes this app may be granted, in the order asked; the others are left
        out (RFC 6749 §3.3: the token response says what was granted). A resource scope is kept
        when every one of its letters is registered for its type (``*`` only under ``*``)."""
        allowed = Scopes.parse(self.scope)
        context = set(self.scope.split()) & set(CONTEXT_SCOPES)
        kept = []
        for item in dict.fromkeys(requested.split()):
            parsed = parse_scope(item)
            if item in context or (
                parsed is not None
                and parsed[0] == "patient"
                and all(allowed.allows(parsed[1], letter) for letter in parsed[2])
            ):
                kept.append(item)
        return kept


def new_app(client_id: str, *, name: str, redirect_uris: list[str], scope: str, registered_at: int = 0) -> PatientApp:
    """An app checked whole, or :class:`ClientError` naming the first thing wrong."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise ClientError("the client id must be 1 to 100 characters among letters, digits and ._~-")
    if not name.strip() or len(name) > 100:
        raise ClientError("the app needs a display name (at most 100 characters): patients see it")
    if not redirect_uris or len(redirect_uris) > MAX_REDIRECT_URIS:
        raise ClientError(f"give 1 to {MAX_REDIRECT_URIS} redirect URIs")
    for uri in redirect_uris:
        check_redirect_uri(uri)
    items = scope.split()
    if not any(parse_scope(item) for item in items):
        raise ClientError("an app needs at least one patient/ resource scope, e.g. patient/*.rs")
    for item in items:
        parsed = parse_scope(item)
        if item not in CONTEXT_SCOPES and (parsed is None or parsed[0] != "patient"):
            raise ClientError(
                f"{item}: a patient app may hold patient/ resource scopes and {', '.join(CONTEXT_SCOPES)}"
            )
    return PatientApp(client_id, name.strip(), tuple(dict.fromkeys(redirect_uris)), " ".join(items), registered_at)


def check_redirect_uri(uri: str) -> None:
    """An absolute URI without fragment (RFC 6749 §3.1.2): https; http only on the loopback and a
    private-use scheme for native apps (RFC 8252 §7)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ClientError(f"{uri!r} is not a URI") from None
    if parts.fragment or "#" in uri:
        raise ClientError(f"{uri}: a redirect URI has no fragment")
    if any(ch.isspace() for ch in uri) or len(uri) > 2000:
        raise ClientError(f"{uri!r}: a redirect URI has no spaces and at most 2000 characters")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    if _PRIVATE_SCHEME.fullmatch(parts.scheme) and parts.path:
        return
    raise ClientError(
        f"{uri}: use https, http on the loopback, or a native app's reversed-domain scheme (com.example.app:/cb)"
    )


class AppRegistry:
    """Registered patient apps, in the store's private records."""

    def __init__(self, store: Store):
        self.store = store

    def register(self, app: PatientApp, *, replace: bool = False, now: int = 0) -> None:
        """Keep ``app``; an id already taken (by an app or a backend client) is refused unless
        ``replace`` changes that same app."""
        if self.store.get_record(CLIENT_RECORD, app.client_id) is not None:
            raise ClientError(f"{app.client_id} is a backend services client: choose another id")
        if replace:
            self.store.put_record(APP_RECORD, app.client_id, app.to_json())
        elif not self.store.add_record(APP_RECORD, app.client_id, app.to_json(), now=now):
            raise ClientError(f"app {app.client_id} is already registered (use --replace to change it)")

    def get(self, client_id: str) -> PatientApp | None:
        held = self.store.get_record(APP_RECORD, client_id)
        return PatientApp.from_json(held[0]) if held is not None else None

    def all(self) -> list[PatientApp]:
        return [app for key in self.store.record_keys(APP_RECORD) if (app := self.get(key)) is not None]

    def remove(self, client_id: str) -> bool:
        return self.store.delete_record(APP_RECORD, client_id)
