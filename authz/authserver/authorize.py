"""SMART App Launch 2.2, standalone launch of a patient app: the authorization-code flow (RFC 6749
§4.1) with PKCE (RFC 7636, S256 only), on top of the patient login.

1. The app sends the browser to ``{base}/auth/authorize`` (:meth:`AppAuthorization.begin`). Until
   the client and its exact redirect URI are known good, a fault is shown on a page, never
   redirected (RFC 6749 §4.1.2.1: an open redirector otherwise); after that, faults go back to the
   app as ``error=`` with its ``state``. PKCE is required and ``plain`` refused (SMART: "SHALL NOT
   support plain"); ``aud`` must be the FHIR base URL (SMART: the server "SHALL reject" another).
2. The person signs in with the login they already have (:mod:`authz.authserver.login`):
   identifier, password (and, for a legal representative, the minor they act for), then the
   one-time code; a temporary password is changed on the spot. Lock-out, the trail and the
   uniform refusals are the login's own.
3. They approve the scopes (those the app asked for *and* was registered for); the app gets a
   one-time code, valid :data:`CODE_LIFETIME` seconds, bound to the client, the redirect URI and
   the PKCE challenge, and exchanges it at the token endpoint (:func:`authorization_code`).

Between steps the pending authorisation lives in the store's private records (kind
``authorize-session``), named by a random id the browser keeps in a cookie; each form carries a
CSRF token that must match the one stored with it. A code presented twice is refused and what the
first presentation obtained is revoked (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from jose import jwt as jose_jwt

from authz.authserver import otp
from authz.authserver.accounts import Ident, subject_of
from authz.authserver.apps import CONTEXT_SCOPES, REFRESH_SCOPES, AppRegistry, PatientApp
from authz.authserver.discovery import launch_endpoints
from authz.authserver.errors import AuthError
from authz.authserver.issuer import Grant
from authz.authserver.login import CHALLENGE_KIND, Login
from authz.authserver.revocation import DenyList
from authz.authserver.token_endpoint import INVALID_GRANT, OAuthError, TokenRequest
from authz.devtoken import iua_claims
from authz.scopes import parse_scope
from authz.state import load_state
from authz.terms import LEGAL_REPRESENTATIVE
from storage.interface import Store

if TYPE_CHECKING:
    from authz.authserver.server import AuthorizationServer

SESSION_KIND = "authorize-session"
CODE_KIND = "authorization-code"
#: Time a person has to sign in and approve (the one-time code itself lives 5 minutes).
SESSION_LIFETIME = 15 * 60
#: RFC 6749 §4.1.2: "a maximum authorization code lifetime of 10 minutes is RECOMMENDED"; an app
#: exchanges its code at once, so one minute.
CODE_LIFETIME = 60
LAUNCH_PATIENT = "launch/patient"
#: RFC 7636 §4.1: 43 to 128 unreserved characters; §4.2: S256 gives 43 base64url characters.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
#: The parameters of an authorisation request, each at most once (RFC 6749 §3.1).
_SINGLE = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
)
MAX_STATE = 1000


class PageError(Exception):
    """A fault shown to the person on a page: no trustworthy redirect URI to send it to."""


@dataclass
class RedirectError(Exception):
    """A fault returned to the app (RFC 6749 §4.1.2.1) at its registered redirect URI."""

    redirect_uri: str
    error: str
    description: str
    state: str | None

    def __post_init__(self) -> None:
        super().__init__(self.description)

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        return with_query(self.redirect_uri, params)


def with_query(uri: str, params: Mapping[str, str]) -> str:
    """``uri`` with ``params`` added to its query, which is kept (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return urlunsplit(parts._replace(query=query))


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Pending:
    """An authorisation under way: what the app asked, and how far the person got.

    ``stage``: ``login`` (identifier and password), ``code`` (the one-time code), ``password``
    (a temporary password to replace), ``consent`` (approve or refuse)."""

    client_id: str
    redirect_uri: str
    state: str
    scope: tuple[str, ...]
    challenge: str
    csrf: str
    stage: str = "login"
    login_challenge: str = ""
    sent_to: str = ""
    change_token: str = ""
    person: list[str] = field(default_factory=list)  # the account's INS once the code passed
    role: str = ""
    acting_for: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, raw: bytes) -> Pending:
        data = orjson.loads(raw)
        return cls(**{**data, "scope": tuple(data["scope"])})

    def refused(self, error: str, description: str) -> RedirectError:
        return RedirectError(self.redirect_uri, error, description, self.state)


@dataclass
class AppAuthorization:
    """The authorisation endpoint's steps; the HTTP layer renders each answer as a page."""

    apps: AppRegistry
    login: Login
    store: Store
    base_url: str
    clock: Callable[[], float]

    # -- 1. the request --------------------------------------------------------------------------

    def begin(self, params: list[tuple[str, str]]) -> tuple[str, Pending, PatientApp]:
        """A checked authorisation request → the new session's id, what it holds, the app."""
        single: dict[str, str] = {}
        repeated = set()
        for name, value in params:
            if name in single:
                repeated.add(name)
            single[name] = value
        if repeated & {"client_id", "redirect_uri"}:
            raise PageError("client_id et redirect_uri ne peuvent figurer qu'une fois dans la demande.")
        app = self.apps.get(single.get("client_id", ""))
        if app is None:
            raise PageError("L'application qui vous a envoyé ici n'est pas enregistrée auprès du DMP.")
        redirect_uri = single.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            raise PageError("L'adresse de retour demandée n'est pas celle enregistrée pour cette application.")
        state = single.get("state")
        if state is not None and len(state) > MAX_STATE:
            state = None
        refuse = RedirectError(redirect_uri, "invalid_request", "", state)
        if repeated & set(_SINGLE):
            raise replace(refuse, description=f"repeated parameter: {', '.join(sorted(repeated & set(_SINGLE)))}")
        if single.get("response_type") != "code":
            raise replace(refuse, error="unsupported_response_type", description="response_type must be code")
        if not state:
            raise replace(refuse, description=f"state is required (at most {MAX_STATE} characters)")
        if single.get("aud", "").rstrip("/") != self.base_url:
            raise replace(refuse, description=f"aud must be the FHIR base URL {self.base_url}")
        if "launch" in single:
            raise replace(refuse, description="EHR launch is not offered here: standalone launch only")
        method = single.get("code_challenge_method")
        if method != "S256":
            said = "plain is refused" if method == "plain" else "PKCE is required"
            raise replace(refuse, description=f"code_challenge_method must be S256 ({said})")
        if not _CHALLENGE.fullmatch(single.get("code_challenge", "")):
            raise replace(refuse, description="code_challenge must be the 43-character S256 of a code_verifier")
        scope = app.narrowed(single.get("scope", ""))
        if not any(parse_scope(item) for item in scope):
            offered = f"none of the scopes asked for is offered to this app: {app.scope}"
            raise replace(refuse, error="invalid_scope", description=offered)
        session = otp.ticket()
        pending = Pending(app.client_id, redirect_uri, state, tuple(scope), single["code_challenge"], otp.ticket())
        self._save(session, pending, new=True)
        return session, pending, app

    # -- 2. the person signs in ------------------------------------------------------------------

    def pending(self, session: str | None, csrf: str | None = None, stage: str | None = None) -> Pending:
        """The session of the browser's cookie; with ``csrf``, the form must carry its token."""
        held = self.store.get_record(SESSION_KIND, otp.digest(session)) if session else None
        if held is None or (held[1] is not None and held[1] <= self.clock()):
            raise PageError("Cette demande d'autorisation a expiré ou n'existe pas : retournez dans l'application.")
        pending = Pending.from_json(held[0])
        if csrf is not None and not otp.same(csrf, pending.csrf):
            raise PageError("Le formulaire envoyé ne vient pas de cette page : recommencez depuis l'application.")
        if stage is not None and pending.stage != stage:
            raise PageError("Cette étape n'est pas la bonne : recommencez depuis l'application.")
        return pending

    def sign_in(self, session: str, csrf: str, form: Mapping[str, str]) -> Pending:
        """Identifier + password (+ the minor of a representative) → a code sent."""
        pending = self.pending(session, csrf, "login")
        body = {name: form[name] for name in ("identifier", "password", "patient", "channel") if form.get(name)}
        sent = self.login.start(body)
        pending = replace(pending, stage="code", login_challenge=sent["challenge"], sent_to=sent["sent_to"])
        self._save(session, pending)
        return pending

    def enter_code(self, session: str, csrf: str, code: str) -> Pending:
        """The one-time code → consent, or a password change first for a temporary password."""
        pending = self.pending(session, csrf, "code")
        try:
            account, challenge = self.login.passed({"challenge": pending.login_challenge, "code": code})
        except AuthError:
            self._restart_if_spent(session, pending)
            raise
        pending = replace(
            pending,
            stage="consent",
            person=list(account.ins),
            role=account.role,
            acting_for=list(challenge.acting_for),
        )
        if account.temporary:
            token = self.login.change_credential(account, self.clock())["password_change_token"]
            pending = replace(pending, stage="password", change_token=token)
        self._save(session, pending)
        return pending

    def _restart_if_spent(self, session: str, pending: Pending) -> None:
        """A challenge the login no longer holds (too many guesses, expired, locked) starts over."""
        if self.store.get_record(CHALLENGE_KIND, otp.digest(pending.login_challenge)) is None:
            self._save(session, replace(pending, stage="login", login_challenge="", sent_to=""))

    def set_password(self, session: str, csrf: str, new_password: str) -> Pending:
        pending = self.pending(session, csrf, "password")
        self.login.change_password({"password_change_token": pending.change_token, "new_password": new_password})
        pending = replace(pending, stage="consent", change_token="")
        self._save(session, pending)
        return pending

    # -- 3. the decision -------------------------------------------------------------------------

    def decide(self, session: str, csrf: str, approve: bool) -> str:
        """Approve → the redirect carrying a code; refuse → ``access_denied``. The session ends."""
        pending = self.pending(session, csrf, "consent")
        self.store.delete_record(SESSION_KIND, otp.digest(session))
        if not approve:
            raise pending.refused("access_denied", "the user refused the authorisation")
        acting_for: Ident = (pending.acting_for[0], pending.acting_for[1])
        person: Ident = (pending.person[0], pending.person[1])
        now = self.clock()
        state = load_state(self.store, acting_for)
        represents = state is not None and state.representative(person, int(now * 1_000_000))  # µs, as Consents
        if state is None or (pending.role == LEGAL_REPRESENTATIVE and not represents):
            # One answer for both: naming an INS must not tell a representative whether it has a DMP.
            raise pending.refused("access_denied", "the signed-in person does not reach this patient's record")
        context = {"patient": state.patient_ids[0]} if LAUNCH_PATIENT in pending.scope else {}
        grant = Grant(
            sub=subject_of(person),
            scope=" ".join(pending.scope),
            iua=iua_claims(role=pending.role, person_id=subject_of(acting_for)),
            client_id=pending.client_id,
            context=context,
        )
        code = otp.ticket()
        held = {"client_id": pending.client_id, "redirect_uri": pending.redirect_uri, "challenge": pending.challenge}
        value = orjson.dumps({**held, "grant": orjson.loads(grant.to_json())})
        self.store.put_record(CODE_KIND, otp.digest(code), value, expires=int(now) + CODE_LIFETIME)
        app = self.apps.get(pending.client_id)
        name = app.name if app is not None else pending.client_id
        who_ref = {"identifier": {"system": person[0], "value": person[1]}}
        self.login.trail.credentials(
            who_ref, pending.role, acting_for, f"app {name} ({pending.client_id}) authorised: {grant.scope}", now
        )
        return with_query(pending.redirect_uri, {"code": code, "state": pending.state})

    def app_of(self, pending: Pending) -> PatientApp | None:
        return self.apps.get(pending.client_id)

    def _save(self, session: str, pending: Pending, *, new: bool = False) -> None:
        key = otp.digest(session)
        if new:
            expires = int(self.clock()) + SESSION_LIFETIME
        else:
            held = self.store.get_record(SESSION_KIND, key)
            expires = held[1] if held is not None and held[1] is not None else int(self.clock())
        self.store.put_record(SESSION_KIND, key, pending.to_json(), expires=expires)


# --- the token endpoint's grant ------------------------------------------------------------------


def authorization_code(server: AuthorizationServer, request: TokenRequest) -> dict[str, Any]:
    """RFC 6749 §4.1.3 for a public app: code, redirect_uri, client_id and the PKCE code_verifier."""
    if server.client_of(request) is not None:
        raise OAuthError("unauthorized_client", "the authorization_code grant is for registered patient apps")
    code = request.require("code")
    redirect_uri = request.require("redirect_uri")
    client_id = request.require("client_id")
    verifier = request.require("code_verifier")
    key = otp.digest(code)
    with server.store.transaction():
        held = server.store.get_record(CODE_KIND, key)
        spent = held is not None and orjson.loads(held[0]).get("used", False)
        if held is not None and not spent:
            server.store.put_record(CODE_KIND, key, orjson.dumps({"used": True}), expires=held[1])
    if held is None or (held[1] is not None and held[1] <= server.clock()):
        raise OAuthError(INVALID_GRANT, "the authorization code is unknown or expired")
    record = orjson.loads(held[0])
    if spent:
        _revoke_issued(server, record)
        server.store.delete_record(CODE_KIND, key)
        raise OAuthError(INVALID_GRANT, "the authorization code was already used: what it gave is revoked")
    if record["client_id"] != client_id:
        raise OAuthError(INVALID_GRANT, "the authorization code was issued to another client")
    if record["redirect_uri"] != redirect_uri:
        raise OAuthError(INVALID_GRANT, "redirect_uri differs from the one of the authorization request")
    if not _VERIFIER.fullmatch(verifier) or not otp.same(s256(verifier), record["challenge"]):
        raise OAuthError(INVALID_GRANT, "code_verifier does not match the code_challenge (PKCE S256)")
    grant = Grant.from_json(orjson.dumps(record["grant"]))
    answer = server.issuer.issue(grant, refresh=bool(set(grant.scope.split()) & set(REFRESH_SCOPES)))
    claims = jose_jwt.get_unverified_claims(answer["access_token"])
    issued = {"iss": claims["iss"], "jti": claims["jti"], "exp": claims["exp"], "refresh": answer.get("refresh_token")}
    server.store.put_record(CODE_KIND, key, orjson.dumps({"used": True, "issued": issued}), expires=held[1])
    return answer


def _revoke_issued(server: AuthorizationServer, record: dict[str, Any]) -> None:
    """RFC 6749 §4.1.2: a code used twice "SHOULD revoke (when possible) all tokens previously
    issued based on that authorization code": the access token and the first refresh token."""
    issued = record.get("issued")
    if not issued:
        return
    DenyList(server.store).revoke(issued)
    if issued.get("refresh"):
        server.issuer.revoke_refresh(issued["refresh"])


#: SMART 2.2 capabilities of what this module offers (§Capabilities): a standalone launch of a
#: public app, with the patient context, patient-level v2 (and v1) scopes and both refresh kinds,
#: the authorisation request also as a form POST.
LAUNCH_CAPABILITIES = (
    "launch-standalone",
    "authorize-post",
    "client-public",
    "context-standalone-patient",
    "permission-patient",
    "permission-offline",
    "permission-online",
    "permission-v2",
)


def enable_app_launch(server: AuthorizationServer) -> None:
    """The ``authorization_code`` grant at the token endpoint, and what the discovery document says
    of the flow, introspection and revocation (RFC 8414 member names)."""
    server.register_grant("authorization_code", authorization_code)
    endpoints = launch_endpoints(server.base_url)
    server.publication.publish(
        scopes=("patient/*.rs", "patient/*.cruds", *CONTEXT_SCOPES),
        capabilities=LAUNCH_CAPABILITIES,
        members={
            "authorization_endpoint": endpoints["authorize"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
            "introspection_endpoint": endpoints["introspect"],
            "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
            "revocation_endpoint": endpoints["revoke"],
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        },
    )
