"""SMART App Launch of a patient app (standalone, public client, PKCE S256), token introspection
(RFC 7662) and revocation (RFC 7009), over real HTTP: the real app with the DMP rules, the login
pages driven as a browser drives them (cookie, forms, CSRF token), the one-time code read from a
real SMTP server on loopback, real signed tokens, and a clock the tests move instead of sleeping."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz.authserver.apps import AppRegistry, new_app
from authz.authserver.assertions import ASSERTION_TYPE
from authz.authserver.authorize import CODE_LIFETIME, s256
from authz.authserver.clients import ClientError, new_client
from authz.authserver.server import AuthorizationServer
from authz.keys import load_or_create_server_key
from authz.terms import REPRESENTATIVE
from fhir_server.app import create_app
from fhir_server.cli import main as cli
from tests.dmp import INS_SYSTEM, EpochClock, World
from tests.smtp_sink import SmtpSink
from tests.test_accounts import (
    COST,
    EMAIL,
    INS_A,
    INS_MINOR,
    INS_NEW,
    INS_REP,
    PASSWORD,
    Mailbox,
    new_account,
    ready_account,
    stored_about,
)
from tests.test_backend_services import claims_for, sign
from tests.test_tokens import public_jwk

BASE_URL = "http://127.0.0.1:8080/fhir"
AUTHORIZE = "/fhir/auth/authorize"
TOKEN = "/fhir/auth/token"
APP = "carnet-sante"
REDIRECT = "https://app.example.org/callback?from=dmp"
SCOPE = "launch/patient patient/*.rs offline_access"


@pytest.fixture
def clock() -> EpochClock:
    """The authorisation server's clock (codes, sessions and tokens expire on it)."""
    return EpochClock()


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[World]:
    """The DMP world, mailing its one-time codes to the SMTP sink."""
    with closing(World(tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, password_kdf_cost=COST)) as w:
        yield w


@pytest.fixture
def client(world: World, clock: EpochClock) -> FlaskClient:
    """The server on ``clock``, with the patient app APP registered."""
    registered = new_app(APP, name="Carnet de santé", redirect_uris=[REDIRECT], scope=SCOPE)
    AppRegistry(world.store).register(registered)
    return create_app(service=world.service, clock=clock).test_client()


@pytest.fixture
def mailbox(smtp_sink: SmtpSink) -> Mailbox:
    """The patients' mail."""
    return Mailbox(smtp_sink)


@pytest.fixture
def pid(client: FlaskClient, world: World, mailbox: Mailbox) -> str:
    """Patient A's DMP and account (PASSWORD set); the Patient id."""
    pid = world.seed_patient(INS_A)
    ready_account(client, world, mailbox)
    return pid


class Launch:
    """One app's authorisation, as the app and the person's browser make it."""

    def __init__(self, http: FlaskClient, **params: str | None):
        self.http = http
        self.verifier = secrets.token_urlsafe(48)
        self.state = secrets.token_urlsafe(12)
        base = {
            "response_type": "code",
            "client_id": APP,
            "redirect_uri": REDIRECT,
            "scope": SCOPE,
            "state": self.state,
            "aud": BASE_URL,
            "code_challenge": s256(self.verifier),
            "code_challenge_method": "S256",
        }
        self.params = {name: value for name, value in {**base, **params}.items() if value is not None}
        self.csrf = ""

    def start(self) -> TestResponse:
        return self.page(self.http.get(f"{AUTHORIZE}?{urlencode(self.params)}"))

    def page(self, response: TestResponse) -> TestResponse:
        found = re.search(r'name="csrf" value="([^"]+)"', response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, step: str, **form: str) -> TestResponse:
        return self.page(self.http.post(f"{AUTHORIZE}/{step}", data={"csrf": self.csrf, **form}))

    def sign_in(self, mailbox: Mailbox, ins: str = INS_A, address: str = EMAIL, **form: str) -> TestResponse:
        """Identifier, password, one-time code: the page that follows (consent, or a new password)."""
        html(self.start())
        html(self.post("login", identifier=ins, password=form.pop("password", PASSWORD), **form))
        return self.post("code", code=mailbox.code(address))

    def approve(self, mailbox: Mailbox, **form: str) -> dict[str, list[str]]:
        """The whole flow up to the app's redirect; its query."""
        html(self.sign_in(mailbox, **form))
        return redirected(self.post("consent", decision="approve"))

    def exchange(self, code: str, **overrides: str | None) -> TestResponse:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": APP,
            "code_verifier": self.verifier,
            **overrides,
        }
        return self.http.post(TOKEN, data={k: v for k, v in data.items() if v is not None})

    def tokens(self, mailbox: Mailbox, **form: str) -> dict[str, Any]:
        query = self.approve(mailbox, **form)
        return ok(self.exchange(query["code"][0]))


def html(response: TestResponse, status: int = 200) -> str:
    """A page of the flow, with the headers every one of them carries."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script" not in csp
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert '<html lang="fr">' in text and "<script" not in text and "style=" not in text
    return text


def redirected(response: TestResponse) -> dict[str, list[str]]:
    """The app's redirect URI, reached with its own query kept; the query of the redirect."""
    assert response.status_code == 302, response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT.partition("?")[0]
    query = parse_qs(location.query)
    assert query["from"] == ["dmp"]
    return query


def ok(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    return body


def oauth_error(response: TestResponse, error: str, status: int = 400) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error, body
    return str(body["error_description"])


def fhir(client: FlaskClient, path: str, token: str) -> TestResponse:
    return client.get(f"/fhir/{path}", headers={"Authorization": f"Bearer {token}"})


# -- the whole launch ----------------------------------------------------------------------------


def test_a_patient_app_gets_a_token_for_the_patient_through_login_code_and_consent(
    client: FlaskClient, world: World, mailbox: Mailbox, pid: str
) -> None:
    launch = Launch(client)
    start = launch.start()
    assert "Carnet de santé" in html(start)
    cookie = start.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and f"Path={AUTHORIZE}" in cookie
    sent = html(launch.post("login", identifier=INS_A, password=PASSWORD))
    assert "p***@example.org" in sent
    consent = launch.post("code", code=mailbox.code(EMAIL))
    page = html(consent)
    assert "patient/*.rs" in page and "lire, rechercher" in page and "Autoriser" in page
    assert "https://app.example.org" in consent.headers["Content-Security-Policy"]  # form-action of the redirect
    approved = launch.post("consent", decision="approve")
    assert "dmp_authorize=;" in approved.headers["Set-Cookie"]  # the session's cookie is cleared
    query = redirected(approved)
    assert query["state"] == [launch.state]

    tokens = ok(launch.exchange(query["code"][0]))
    assert tokens["token_type"] == "Bearer" and tokens["patient"] == pid
    assert tokens["scope"] == SCOPE and tokens["refresh_token"]
    assert fhir(client, f"Patient/{pid}", tokens["access_token"]).status_code == 200
    assert fhir(client, "DocumentReference", tokens["access_token"]).status_code == 400  # the DMP rules still hold
    deleted = client.delete(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert deleted.status_code == 403 and "scopes" in deleted.get_data(as_text=True)  # patient/*.rs: no delete

    # The refresh token works once at the token endpoint and keeps the patient context.
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": APP}
    renewed = ok(client.post(TOKEN, data=refresh))
    assert renewed["patient"] == pid and renewed["scope"] == SCOPE
    oauth_error(client.post(TOKEN, data=refresh), "invalid_grant")

    # The login and the authorisation are in the patient's trail.
    trail = [e.get("outcomeDesc", "") for e in stored_about(world, "AuditEvent", INS_A)]
    assert any("login by email code" in d for d in trail)
    assert any(f"({APP}) authorised: {SCOPE}" in d for d in trail)


def test_the_authorisation_request_may_be_a_form_post(client: FlaskClient, mailbox: Mailbox, pid: str) -> None:
    launch = Launch(client)
    assert "Carnet de santé" in html(launch.page(client.post(AUTHORIZE, data=launch.params)))
    html(launch.post("login", identifier=INS_A, password=PASSWORD))
    html(launch.post("code", code=mailbox.code(EMAIL)))
    assert ok(launch.exchange(redirected(launch.post("consent", decision="approve"))["code"][0]))["patient"] == pid


def test_the_code_is_single_use_and_a_replay_revokes_what_it_gave(
    client: FlaskClient, mailbox: Mailbox, pid: str
) -> None:
    launch = Launch(client)
    code = launch.approve(mailbox)["code"][0]
    tokens = ok(launch.exchange(code))
    assert fhir(client, f"Patient/{pid}", tokens["access_token"]).status_code == 200
    assert "already used" in oauth_error(launch.exchange(code), "invalid_grant")
    refused = fhir(client, f"Patient/{pid}", tokens["access_token"])
    assert refused.status_code == 401 and "revoked" in refused.headers["WWW-Authenticate"]
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    oauth_error(client.post(TOKEN, data=refresh), "invalid_grant")
    oauth_error(launch.exchange(code), "invalid_grant")


def test_the_code_is_bound_to_the_client_the_redirect_uri_the_verifier_and_a_minute(
    client: FlaskClient, clock: EpochClock, mailbox: Mailbox, pid: str
) -> None:
    for wrong, expected in (
        ({"code_verifier": secrets.token_urlsafe(48)}, "code_verifier"),
        ({"code_verifier": "short"}, "code_verifier"),
        ({"redirect_uri": "https://app.example.org/callback"}, "redirect_uri"),
        ({"client_id": "another-app"}, "another client"),
    ):
        launch = Launch(client)
        code = launch.approve(mailbox)["code"][0]
        assert expected in oauth_error(launch.exchange(code, **wrong), "invalid_grant")
        oauth_error(launch.exchange(code), "invalid_grant")  # a code is burnt by any presentation

    launch = Launch(client)
    code = launch.approve(mailbox)["code"][0]
    oauth_error(launch.exchange(code, code_verifier=None), "invalid_request")
    clock.now += CODE_LIFETIME + 1
    assert "expired" in oauth_error(launch.exchange(code), "invalid_grant")


def test_faults_in_the_request_go_back_to_the_app_once_its_redirect_uri_is_known_good(
    client: FlaskClient, pid: str
) -> None:
    def refused(error: str, **params: str | None) -> str:
        launch = Launch(client, **params)
        query = redirected(launch.start())
        assert query["error"] == [error], query
        assert query.get("state") == ([launch.state] if "state" not in params else None)
        return query["error_description"][0]

    assert "PKCE" in refused("invalid_request", code_challenge_method=None)
    assert "plain" in refused("invalid_request", code_challenge_method="plain")
    assert "code_challenge" in refused("invalid_request", code_challenge=None)
    assert "aud" in refused("invalid_request", aud="https://elsewhere.example.org/fhir")
    assert "aud" in refused("invalid_request", aud=None)
    assert "state" in refused("invalid_request", state=None)
    refused("unsupported_response_type", response_type="token")
    refused("invalid_scope", scope="user/*.rs openid fhirUser")
    refused("invalid_request", launch="xyz")
    twice = Launch(client)
    query = redirected(client.get(f"{AUTHORIZE}?{urlencode(twice.params)}&code_challenge_method=plain"))
    assert query["error"] == ["invalid_request"] and "repeated" in query["error_description"][0]

    # No trustworthy redirect URI: a page, never a redirect (RFC 6749 §4.1.2.1).
    for params in (
        {"redirect_uri": "https://evil.example.org/callback"},
        {"redirect_uri": "https://app.example.org/callback"},  # a prefix of the registered one
        {"redirect_uri": None},
        {"client_id": "unknown-app"},
    ):
        response = Launch(client, **params).start()
        assert "Location" not in response.headers
        assert "Demande refusée" in html(response, 400)


def test_scopes_are_narrowed_to_the_registration_and_the_refusal_goes_back_with_state(
    client: FlaskClient, mailbox: Mailbox, pid: str
) -> None:
    launch = Launch(client, scope="launch/patient patient/*.cruds patient/Patient.r openid fhirUser")
    tokens = launch.tokens(mailbox)
    assert tokens["scope"] == "launch/patient patient/Patient.r"
    assert "refresh_token" not in tokens  # no offline_access asked

    launch = Launch(client)
    html(launch.sign_in(mailbox))
    query = redirected(launch.post("consent", decision="deny"))
    assert query["error"] == ["access_denied"] and query["state"] == [launch.state]
    assert "expiré" in html(launch.post("consent", decision="approve"), 400)  # the session has ended


def test_forms_need_the_session_cookie_and_its_csrf_token(client: FlaskClient, mailbox: Mailbox, pid: str) -> None:
    launch = Launch(client)
    html(launch.start())
    good = launch.csrf
    launch.csrf = "forged"
    assert "ne vient pas" in html(launch.post("login", identifier=INS_A, password=PASSWORD), 400)
    launch.csrf = good
    html(launch.post("code", code="123456"), 400)  # steps in order only
    client.delete_cookie("dmp_authorize", path=AUTHORIZE)
    assert "expiré" in html(launch.post("login", identifier=INS_A, password=PASSWORD), 400)
    assert mailbox.unread(EMAIL) == 0
    assert client.put(AUTHORIZE).status_code == 405


def test_the_login_rules_hold_on_the_pages(client: FlaskClient, world: World, mailbox: Mailbox, pid: str) -> None:
    launch = Launch(client)
    html(launch.start())
    assert "non reconnu" in html(launch.post("login", identifier=INS_A, password="pas le bon mot de passe"), 401)
    html(launch.post("login", identifier=INS_A, password=PASSWORD))
    mailbox.code(EMAIL)
    assert 'name="code"' in html(launch.post("code", code="000000"), 401)  # another try
    # With the wrong password, the third failure locks the account (R21): the challenge is spent, start over.
    assert 'name="password"' in html(launch.post("code", code="000000"), 401)
    refused = launch.post("login", identifier=INS_A, password=PASSWORD)
    assert "non reconnu" in html(refused, 401)  # locked, even with the right password
    assert mailbox.unread(EMAIL) == 0


def test_a_temporary_password_is_changed_before_consent(client: FlaskClient, world: World, mailbox: Mailbox) -> None:
    world.seed_patient(INS_A)
    temporary = new_account(client, world)
    launch = Launch(client)
    assert 'name="new_password"' in html(launch.sign_in(mailbox, password=temporary))
    assert "Demande refusée" in html(launch.post("password", new_password="court"), 400)
    html(launch.post("password", new_password=PASSWORD))
    query = redirected(launch.post("consent", decision="approve"))
    assert ok(launch.exchange(query["code"][0]))["access_token"]
    again = Launch(client)
    html(again.start())
    html(again.post("login", identifier=INS_A, password=temporary), 401)  # the temporary one is gone


def test_a_legal_representative_opens_the_minors_record(client: FlaskClient, world: World, mailbox: Mailbox) -> None:
    minor = world.seed_patient(INS_MINOR, birth_date="2016-01-01")
    world.seed_consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, INS_REP))
    address = "parent@example.org"
    temporary = new_account(client, world, INS_REP, role="LEGREP", email=address)
    launch = Launch(client)
    html(launch.start())
    whose = html(launch.post("login", identifier=INS_REP, password=temporary), 400)
    assert "names the patient they act for" in whose and mailbox.unread(address) == 0
    html(launch.post("login", identifier=INS_REP, password=temporary, patient=INS_MINOR))
    html(launch.post("code", code=mailbox.code(address)))
    html(launch.post("password", new_password=PASSWORD))
    tokens = ok(launch.exchange(redirected(launch.post("consent", decision="approve"))["code"][0]))
    assert tokens["patient"] == minor
    assert fhir(client, f"Patient/{minor}", tokens["access_token"]).status_code == 200

    # Another record, with or without a DMP: the same refusal, and no Patient id given away (R8).
    world.seed_patient(INS_A)
    for other in (INS_A, INS_NEW):
        launch = Launch(client)
        html(launch.sign_in(mailbox, INS_REP, address, patient=other))
        query = redirected(launch.post("consent", decision="approve"))
        assert query["error"] == ["access_denied"] and "does not reach" in query["error_description"][0]


# -- introspection and revocation ----------------------------------------------------------------


class ResourceServer:
    """A registered backend client introspecting tokens with its signed assertion."""

    def __init__(self, http: FlaskClient, clock: EpochClock):
        self.http = http
        self.clock = clock
        self.key = ec.generate_private_key(ec.SECP384R1())
        auth: AuthorizationServer = http.application.extensions["auth_server"]
        jwks = {"keys": [public_jwk(self.key, "rs-1")]}
        auth.clients.register(new_client("resource-server", scope="system/*.rs", role="ADM", jwks=jwks))

    def introspect(self, token: str, **extra: str) -> TestResponse:
        assertion = sign(self.key, "ES384", "rs-1", claims_for("resource-server", self.clock.now))
        data = {"token": token, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **extra}
        return self.http.post("/fhir/auth/introspect", data=data)


def test_introspection_says_what_a_token_holds_until_it_expires_and_only_to_registered_clients(
    client: FlaskClient, clock: EpochClock, mailbox: Mailbox, pid: str
) -> None:
    tokens = Launch(client).tokens(mailbox)
    server = ResourceServer(client, clock)
    about = ok(server.introspect(tokens["access_token"]))
    assert about["active"] is True and about["scope"] == SCOPE and about["client_id"] == APP
    assert about["patient"] == pid and about["sub"] == INS_A and about["token_type"] == "Bearer"
    assert about["extensions"]["ihe_iua"]["subject_role"][0]["code"] == "PAT"
    assert about["exp"] == about["iat"] + tokens["expires_in"] and about["iss"] == f"{BASE_URL}/auth"
    refresh = ok(server.introspect(tokens["refresh_token"], token_type_hint="refresh_token"))
    assert refresh["active"] is True and refresh["client_id"] == APP and refresh["patient"] == pid

    assert ok(server.introspect("not-a-token")) == {"active": False}
    stranger = client.post("/fhir/auth/introspect", data={"token": tokens["access_token"]})
    oauth_error(stranger, "invalid_client", 401)
    public = client.post("/fhir/auth/introspect", data={"token": tokens["access_token"], "client_id": APP})
    oauth_error(public, "invalid_client", 401)

    clock.now += tokens["expires_in"] + 1
    assert ok(server.introspect(tokens["access_token"])) == {"active": False}


def test_a_revoked_access_token_is_refused_by_the_fhir_api(
    client: FlaskClient, world: World, clock: EpochClock, mailbox: Mailbox, pid: str
) -> None:
    tokens = Launch(client).tokens(mailbox)
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    revoke = "/fhir/auth/revoke"
    oauth_error(client.post(revoke, data={"token": access, "client_id": "another-app"}), "unauthorized_client")
    oauth_error(client.post(revoke, data={"token": access}), "unauthorized_client")
    assert fhir(client, f"Patient/{pid}", access).status_code == 200

    assert ok(client.post(revoke, data={"token": access, "client_id": APP, "token_type_hint": "access_token"})) == {}
    refused = fhir(client, f"Patient/{pid}", access)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert ok(ResourceServer(client, clock).introspect(access)) == {"active": False}

    assert ok(client.post(revoke, data={"token": refresh, "client_id": APP})) == {}
    oauth_error(client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": refresh}), "invalid_grant")
    assert ok(client.post(revoke, data={"token": "unknown", "client_id": APP})) == {}  # RFC 7009 §2.2

    # Removing the app ends its refresh tokens.
    other = Launch(client).tokens(mailbox)["refresh_token"]
    AppRegistry(world.store).remove(APP)
    removed = client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": other})
    assert "no longer registered" in oauth_error(removed, "invalid_grant")
    assert client.get(revoke).status_code == 405
    oauth_error(client.post(revoke, json={"token": access}), "invalid_request")


# -- discovery, metadata, registration -----------------------------------------------------------


def test_discovery_and_metadata_announce_the_launch(client: FlaskClient) -> None:
    found = client.get("/fhir/.well-known/smart-configuration").get_json()
    assert found["authorization_endpoint"] == f"{BASE_URL}/auth/authorize"
    assert found["introspection_endpoint"] == f"{BASE_URL}/auth/introspect"
    assert found["revocation_endpoint"] == f"{BASE_URL}/auth/revoke"
    assert found["code_challenge_methods_supported"] == ["S256"]
    assert found["response_types_supported"] == ["code"]
    assert "authorization_code" in found["grant_types_supported"]
    assert "none" in found["token_endpoint_auth_methods_supported"]
    for capability in ("launch-standalone", "client-public", "context-standalone-patient", "permission-v2"):
        assert capability in found["capabilities"]
    assert "sso-openid-connect" not in found["capabilities"] and "openid" not in found["scopes_supported"]
    security = client.get("/fhir/metadata").get_json()["rest"][0]["security"]
    (uris,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    named = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert named["authorize"] == found["authorization_endpoint"] and named["revoke"] == found["revocation_endpoint"]
    assert named["introspect"] == found["introspection_endpoint"] and named["token"] == found["token_endpoint"]


def test_apps_are_registered_with_exact_redirect_uris_and_patient_scopes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("http://app.example.org/cb", "https://app.example.org/cb#frag", "/relative", "javascript:alert(1)"):
        with pytest.raises(ClientError):
            new_app("x", name="X", redirect_uris=[bad], scope="patient/*.rs")
    for scope in ("system/*.rs", "openid fhirUser patient/*.rs", "launch/patient"):
        with pytest.raises(ClientError):
            new_app("x", name="X", redirect_uris=["https://x.example.org/cb"], scope=scope)
    native = ["com.example.app:/cb", "http://127.0.0.1:5000/cb"]
    assert new_app("x", name="X", redirect_uris=native, scope="patient/*.rs").redirect_uris == tuple(native)

    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path / "data"))
    register = ["app", "register", "--client-id", APP, "--name", "Carnet", "--redirect-uri", REDIRECT]
    assert cli(register) == 2  # no server has started on this data directory: refused
    load_or_create_server_key(tmp_path / "data")  # what the server's first start does
    assert cli(register) == 0
    assert cli(register) == 2  # already registered
    assert cli([*register, "--replace", "--scope", "patient/Patient.r"]) == 0
    capsys.readouterr()
    assert cli(["app", "list"]) == 0
    assert capsys.readouterr().out == f"{APP}\tCarnet\t{REDIRECT}\tpatient/Patient.r\n"
    assert cli(["app", "remove", "--client-id", APP]) == 0
    assert cli(["app", "remove", "--client-id", APP]) == 1
