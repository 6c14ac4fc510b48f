"""The pages' side of SMART App Launch for patient apps: from the authorisation request to the
code, through the patient login.

1. The app sends the browser to ``{base}/auth/authorize`` (:meth:`AppAuthorization.begin`). Until
   the client and its exact redirect URI are known good, a fault is shown on a page, never
   redirected (RFC 6749 §4.1.2.1: an open redirector otherwise); after that, faults go back to the
   app as ``error=`` with its ``state``. PKCE is required and ``plain`` refused (SMART: "SHALL NOT
   support plain"); ``aud`` must be the FHIR base URL (SMART: the server "SHALL reject" another).
2. The person signs in with the login they already have (:mod:`fhir_server.dmp.accounts.login`):
   identifier, password (and, for a legal representative, the minor they act for), then the
   one-time code; a temporary password is changed on the spot. Lock-out, the trail and the
   uniform refusals are the login's own.
3. They approve the scopes (those the app asked for *and* was registered for); the app gets a code
   (:func:`authz.authserver.authorize.issue_code`) to exchange at the token endpoint. A legal
   representative gets one only for a record they represent at that moment (R8).

Between steps the pending authorisation lives in the store's private records (kind
``authorize-session``), named by a random id the browser keeps in a cookie; each form carries a
CSRF token that must match the one stored with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from authz.authserver import otp
from authz.authserver.accounts import Ident, subject_of
from authz.authserver.apps import AppRegistry, PatientApp
from authz.authserver.authorize import CODE_CHALLENGE, LAUNCH_PATIENT, issue_code
from authz.authserver.errors import AuthError
from authz.authserver.issuer import Grant
from authz.devtoken import iua_claims
from authz.scopes import parse_scope
from authz.state import load_state
from authz.terms import LEGAL_REPRESENTATIVE
from fhir_server.dmp.accounts.login import CHALLENGE_KIND, Login
from storage.interface import Store

SESSION_KIND = "authorize-session"
#: Time a person has to sign in and approve (the one-time code itself lives 5 minutes).
SESSION_LIFETIME = 15 * 60
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
        if not CODE_CHALLENGE.fullmatch(single.get("code_challenge", "")):
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
        if not self.store.delete_record(SESSION_KIND, otp.digest(session)):
            raise PageError("Cette demande d'autorisation a déjà reçu une réponse.")  # two answers at once
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
        code = issue_code(
            self.store,
            self.clock,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            challenge=pending.challenge,
            grant=grant,
        )
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
