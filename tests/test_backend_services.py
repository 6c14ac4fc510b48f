"""SMART Backend Services against the server's own authorisation server, over real HTTP.

Everything is real: RSA-3072 and EC P-384 keys generated here, assertions signed with them, the
app with the DMP gatekeeper through the Flask test client, a JWKS served over HTTP on 127.0.0.1
for ``jwks_uri`` clients. Each refusal differs from a request that succeeds (the ``valid`` case)
by one thing, and must come back with its exact OAuth error code. Time is the authorisation
server's clock, moved by hand; it starts at the real time because the gatekeeper that later
checks the issued tokens reads the real clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt
from werkzeug.test import TestResponse

from authz.authserver.apps import AppRegistry, new_app
from authz.authserver.assertions import ASSERTION_TYPE, LEEWAY_SECONDS
from authz.authserver.clients import ClientError, granted_scope, new_client
from authz.authserver.clients import ScopeRefused as ScopeRefusedError
from authz.authserver.issuer import Grant
from authz.authserver.server import AuthorizationServer
from authz.authserver.token_endpoint import OAuthError, TokenRequest
from authz.devtoken import iua_claims
from authz.keys import load_or_create_server_key
from authz.terms import ACCESS, IDNATPS_SYSTEM
from authz.tokens import InvalidToken, TokenVerifier, TrustedIssuer
from fhir_server.app import JOBS, create_app
from fhir_server.cli import main
from fhir_server.dmp.accounts.http import account_endpoints
from fhir_server.dmp.jobs import JobContext, run_jobs
from fhir_server.runtime.config import Config
from fhir_server.runtime.mail import DisabledMailer
from tests.dmp import FINESS, INS_SYSTEM, As, World
from tests.jwks_server import JwksServer
from tests.test_tokens import b64, b64_json, pem, public_jwk, public_pem

TOKEN = "/fhir/auth/token"
TOKEN_URL = "http://127.0.0.1:8080/fhir/auth/token"
BASE_URL = "http://127.0.0.1:8080/fhir"
INS_A = "180017512345660"
INS_B = "285037512345787"
CNAM = f"{FINESS}|CNAM"
DR = "810000000001"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


# -- keys and assertions -----------------------------------------------------------------------


class Keys(NamedTuple):
    rs384: rsa.RSAPrivateKey
    es384: ec.EllipticCurvePrivateKey
    stranger: rsa.RSAPrivateKey  # another client's, or a forger's


@pytest.fixture(scope="module")
def keys() -> Keys:
    """The keys a SMART client signs its assertions with: RSA-3072 and EC P-384."""
    return Keys(
        rsa.generate_private_key(public_exponent=65537, key_size=3072),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=3072),
    )


def claims_for(client_id: str, now: float, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": int(now) + 240,
        "iat": int(now),
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(key: PrivateKey, alg: str, kid: str | None, claims: dict[str, Any], **header: str) -> str:
    headers = {"typ": "JWT", **({"kid": kid} if kid is not None else {}), **header}
    token: str = jwt.encode(claims, pem(key), algorithm=alg, headers=headers)
    return token


def hs256_with_public_key(key: PrivateKey, kid: str, claims: dict[str, Any]) -> str:
    """The classic forgery: an HMAC "signature" keyed with the client's public key PEM."""
    signing_input = f"{b64_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64_json(claims)}"
    mac = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(kid: str, claims: dict[str, Any]) -> str:
    return f"{b64_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64_json(claims)}.{b64(b'x')}"


# -- the world ---------------------------------------------------------------------------------


class Backend:
    """The DMP world plus its authorisation server on a clock the test moves."""

    def __init__(self, world: World):
        self.world = world
        self.http = world.client
        self.auth: AuthorizationServer = world.client.application.extensions["auth_server"]
        self.clock = Clock()
        self.auth.clock = self.clock

    def register(self, client_id: str, **fields: Any) -> None:
        fields.setdefault("role", "TCU")
        if fields["role"] == "TCU":
            fields.setdefault("organization", CNAM)
        fields.setdefault("scope", "system/DocumentReference.c system/Binary.c")
        self.auth.clients.register(new_client(client_id, **fields))

    def assertion(self, key: PrivateKey, client_id: str, kid: str = "k1", alg: str = "RS384", **claims: Any) -> str:
        return sign(key, alg, kid, claims_for(client_id, self.clock.now, **claims))

    def token_request(self, assertion: str | None, **params: str) -> TestResponse:
        data = {"grant_type": "client_credentials", "scope": "system/DocumentReference.c", **params}
        if assertion is not None:
            data.update(client_assertion_type=ASSERTION_TYPE, client_assertion=assertion)
        return self.http.post(TOKEN, data={k: v for k, v in data.items() if v is not None})

    def token(self, key: PrivateKey, client_id: str, kid: str = "k1", alg: str = "RS384", **params: str) -> str:
        response = self.token_request(self.assertion(key, client_id, kid, alg), **params)
        assert response.status_code == 200, response.get_data(as_text=True)
        token: str = response.get_json()["access_token"]
        return token


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    world = World(tmp_path)
    yield Backend(world)
    world.close()


def oauth_error(response: TestResponse, status: int, error: str) -> str:
    """Check an RFC 6749 §5.2 error answer; returns its description."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert body["error"] == error, body
    if status == 401:
        assert f'error="{error}"' in response.headers["WWW-Authenticate"]
    description: str = body["error_description"]
    return description


def reimbursement(pid: str) -> dict[str, Any]:
    """A document as a feed submits it (R15: TCU adds documents without authorisation)."""
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": TRE_A05, "code": "REMB"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"hello").decode()}}],
    }


# -- the happy paths ---------------------------------------------------------------------------


def test_a_feed_gets_a_token_and_feeds_a_record_under_the_dmp_rules(backend: Backend, keys: Keys) -> None:
    backend.register("cnam-feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    pid = backend.world.seed_patient(INS_A)
    backend.world.seed_patient(INS_B)
    both = "system/DocumentReference.c system/Binary.c"  # inline content is kept as a Binary
    response = backend.token_request(backend.assertion(keys.rs384, "cnam-feed"), person_id=INS_A, scope=both)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == both and "refresh_token" not in body
    feed = As(backend.http, body["access_token"])
    created = feed.post("DocumentReference", reimbursement(pid))
    assert created.status_code == 201, created.get_data(as_text=True)
    assert feed.get(f"DocumentReference/{created.get_json()['id']}").status_code == 403  # R9: feeds never read
    narrow = As(backend.http, backend.token(keys.rs384, "cnam-feed", person_id=INS_A))  # DocumentReference.c only
    assert "scopes" in narrow.post("DocumentReference", reimbursement(pid)).get_json()["issue"][0]["diagnostics"]
    other = As(backend.http, backend.token(keys.rs384, "cnam-feed", person_id=f"{INS_SYSTEM}|{INS_B}", scope=both))
    assert other.post("DocumentReference", reimbursement(pid)).status_code == 403  # R1: bound to patient B
    unbound = As(backend.http, backend.token(keys.rs384, "cnam-feed", scope=both))
    assert unbound.post("DocumentReference", reimbursement(pid)).status_code == 403  # no person_id, no record


def register_clinic_app(backend: Backend, keys: Keys, **fields: str) -> None:
    """An establishment's software registered as acting for one doctor (ES384 key ``ec-1``)."""
    jwks = {"keys": [public_jwk(keys.es384, "ec-1")]}
    fields |= {"role": "HCP", "idnatps": DR, "profession": "10", "scope": "system/DocumentReference.rs"}
    backend.register("clinic-app", jwks=jwks, **fields)


def test_the_token_carries_exactly_the_registered_iua_claims(backend: Backend, keys: Keys) -> None:
    register_clinic_app(backend, keys, organization=f"{FINESS}|330780038", name="Logiciel clinique")
    token = backend.token(keys.es384, "clinic-app", kid="ec-1", alg="ES384", scope="system/DocumentReference.s")
    published = backend.http.get("/fhir/auth/jwks").get_json()
    verifier = TokenVerifier([TrustedIssuer(iss=f"{BASE_URL}/auth", jwks=published)], BASE_URL, clock=backend.clock)
    claims = verifier.verify(token)
    assert (claims["sub"], claims["client_id"], claims["scope"]) == (
        "clinic-app",
        "clinic-app",
        "system/DocumentReference.s",
    )
    assert claims["exp"] - claims["iat"] == 300
    assert claims["extensions"]["ihe_iua"] == {
        **iua_claims(
            role="HCP", profession="10", idnatps=DR, organization=f"{FINESS}|330780038", name="Logiciel clinique"
        )
    }
    with_patient = verifier.verify(
        backend.token(
            keys.es384, "clinic-app", kid="ec-1", alg="ES384", person_id=INS_A, scope="system/DocumentReference.r"
        )
    )
    assert with_patient["extensions"]["ihe_iua"]["person_id"] == f"{INS_A}^^^&1.2.250.1.213.1.4.8&ISO"


def test_software_acting_for_a_doctor_reads_what_the_doctor_may(backend: Backend, keys: Keys) -> None:
    register_clinic_app(backend, keys)
    pid_a, pid_b = backend.world.seed_patient(INS_A), backend.world.seed_patient(INS_B)
    doc = backend.world.seed_document(pid_a)
    backend.world.seed_document(pid_b)
    backend.world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
    params = {"scope": "system/DocumentReference.rs"}
    for_a = As(
        backend.http, backend.token(keys.es384, "clinic-app", kid="ec-1", alg="ES384", person_id=INS_A, **params)
    )
    assert for_a.ids(f"DocumentReference?patient={pid_a}") == {doc}
    for_b = As(
        backend.http, backend.token(keys.es384, "clinic-app", kid="ec-1", alg="ES384", person_id=INS_B, **params)
    )
    assert for_b.get(f"DocumentReference?patient={pid_b}").status_code == 403  # R3: no grant from patient B


# -- every refusal -----------------------------------------------------------------------------

Case = Callable[[Backend, Any, Any], TestResponse]


def _with(assertion: Callable[[Backend, Any, Any], str], **params: str) -> Case:
    return lambda b, key, other: b.token_request(assertion(b, key, other), **params)


def _claims(**claims: Any) -> Case:
    return _with(lambda b, key, other: b.assertion(key, "feed", **claims))


def _in(**seconds: int) -> Case:
    """Time claims this many seconds from the authorisation server's now."""
    return _with(
        lambda b, key, other: b.assertion(key, "feed", **{k: int(b.clock.now) + v for k, v in seconds.items()})
    )


def _params(**params: str) -> Case:
    return _with(lambda b, key, other: b.assertion(key, "feed"), **params)


def _headed(kid: str | None = "k1", **header: str) -> Case:
    """An RS384 assertion with these header members."""
    return _with(lambda b, key, other: sign(key, "RS384", kid, claims_for("feed", b.clock.now), **header))


def _raw(data: dict[str, str], **kwargs: Any) -> Case:
    def send(b: Backend, key: Any, other: Any) -> TestResponse:
        full = {
            "grant_type": "client_credentials",
            "scope": "system/DocumentReference.c",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": b.assertion(key, "feed"),
            **data,
        }
        return b.http.post(TOKEN, data={k: v for k, v in full.items() if v}, **kwargs)

    return send


CASES: dict[str, tuple[Case, int, str | None]] = {
    "valid": (_params(), 200, None),
    "bad signature": (_with(lambda b, key, other: b.assertion(other, "feed")), 401, "invalid_client"),
    "HS256 keyed with the public key": (
        _with(lambda b, key, other: hs256_with_public_key(key, "k1", claims_for("feed", b.clock.now))),
        401,
        "invalid_client",
    ),
    "alg none": (_with(lambda b, key, other: unsigned("k1", claims_for("feed", b.clock.now))), 401, "invalid_client"),
    "RS256": (_with(lambda b, key, other: b.assertion(key, "feed", alg="RS256")), 401, "invalid_client"),
    "typ of an access token": (_headed(typ="at+jwt"), 401, "invalid_client"),
    "aud is the FHIR base": (_claims(aud=BASE_URL), 401, "invalid_client"),
    "aud is another server's": (_claims(aud="https://other.example/auth/token"), 401, "invalid_client"),
    "exp more than 5 min ahead": (_in(exp=300 + LEEWAY_SECONDS + 1), 401, "invalid_client"),
    "expired": (_in(exp=-LEEWAY_SECONDS), 401, "invalid_client"),
    "no exp": (_claims(exp=None), 401, "invalid_client"),
    "no jti": (_claims(jti=None), 401, "invalid_client"),
    "iat in the future": (_in(iat=LEEWAY_SECONDS + 1), 401, "invalid_client"),
    "iss is not sub": (_claims(sub="someone-else"), 401, "invalid_client"),
    "unknown client": (_with(lambda b, key, other: b.assertion(key, "nobody")), 401, "invalid_client"),
    "unknown kid": (_with(lambda b, key, other: b.assertion(key, "feed", kid="k9")), 401, "invalid_client"),
    "no kid": (_headed(kid=None), 401, "invalid_client"),
    "jku elsewhere": (_headed(jku="https://evil.example/jwks"), 401, "invalid_client"),
    "client_id of another client": (_params(client_id="other-feed"), 401, "invalid_client"),
    "wrong client_assertion_type": (
        _raw({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}),
        401,
        "invalid_client",
    ),
    "no client_assertion": (_raw({"client_assertion": ""}), 401, "invalid_client"),
    "no client authentication": (_raw({"client_assertion": "", "client_assertion_type": ""}), 401, "invalid_client"),
    "client secret too": (_params(client_secret="s3cret"), 401, "invalid_client"),
    "HTTP Basic": (_raw({}, headers={"Authorization": "Basic ZmVlZDpzM2NyZXQ="}), 401, "invalid_client"),
    "scope beyond registration": (_params(scope="system/DocumentReference.cr"), 400, "invalid_scope"),
    "scope of another type": (_params(scope="system/Consent.c"), 400, "invalid_scope"),
    "wildcard scope": (_params(scope="system/*.c"), 400, "invalid_scope"),
    "patient scope": (_params(scope="patient/DocumentReference.c"), 400, "invalid_scope"),
    "no scope": (_raw({"scope": ""}), 400, "invalid_scope"),
    "no grant_type": (_raw({"grant_type": ""}), 400, "invalid_request"),
    "grant_type password": (_raw({"grant_type": "password"}), 400, "unsupported_grant_type"),
    "grant_type implicit": (_raw({"grant_type": "implicit"}), 400, "unsupported_grant_type"),
    "authorization_code by a backend client": (_raw({"grant_type": "authorization_code"}), 400, "unauthorized_client"),
    "person_id not an INS": (_params(person_id="1.2.3^^^&1.2.3&ISO"), 400, "invalid_request"),
    "resource of another server": (_params(resource="https://other.example/fhir"), 400, "invalid_target"),
    "SAML token asked": (
        _params(requested_token_type="urn:ietf:params:oauth:token-type:saml2"),
        400,
        "invalid_request",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_token_requests_are_refused_with_the_exact_oauth_error(backend: Backend, keys: Keys, case: str) -> None:
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    backend.register("other-feed", jwks={"keys": [public_jwk(keys.stranger, "k1")]})
    send, status, error = CASES[case]
    response = send(backend, keys.rs384, keys.stranger)
    if error is None:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.get_json()["access_token"]
    else:
        assert oauth_error(response, status, error)


def test_malformed_token_requests_are_refused(backend: Backend, keys: Keys) -> None:
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    form = {
        "grant_type": "client_credentials",
        "scope": "system/DocumentReference.c",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": backend.assertion(keys.rs384, "feed"),
    }
    oauth_error(backend.http.post(TOKEN, json=form), 400, "invalid_request")  # not a form
    oauth_error(backend.http.post(f"{TOKEN}?scope=system/Binary.c", data=form), 400, "invalid_request")
    repeated = "&".join(f"{k}={v}" for k, v in form.items()) + "&scope=system/Binary.c"
    response = backend.http.post(TOKEN, data=repeated, content_type="application/x-www-form-urlencoded")
    assert "repeated" in oauth_error(response, 400, "invalid_request")
    oauth_error(backend.http.post(TOKEN, data={"grant_type": "x" * 70_000}), 413, "invalid_request")
    for method in ("GET", "PUT", "DELETE"):
        response = backend.http.open(TOKEN, method=method)
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
    # The form above was never used: it still gets its token.
    assert backend.http.post(TOKEN, data=form).status_code == 200


def test_a_client_assertion_is_used_once(backend: Backend, keys: Keys) -> None:
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    backend.register("lab", jwks={"keys": [public_jwk(keys.es384, "k1")]})
    assertion = backend.assertion(keys.rs384, "feed", jti="jti-1")
    assert backend.token_request(assertion).status_code == 200
    assert "already used" in oauth_error(backend.token_request(assertion), 401, "invalid_client")
    # Same jti in a freshly signed assertion: still a replay for this client.
    fresh = backend.assertion(keys.rs384, "feed", jti="jti-1", exp=int(backend.clock.now) + 100)
    assert "already used" in oauth_error(backend.token_request(fresh), 401, "invalid_client")
    # jtis are per client (SMART: "for the given iss").
    assert backend.token_request(backend.assertion(keys.es384, "lab", alg="ES384", jti="jti-1")).status_code == 200


def test_assertion_times_follow_the_clock(backend: Backend, keys: Keys) -> None:
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    start = backend.clock.now
    assertion = backend.assertion(keys.rs384, "feed", exp=int(start) + 60)
    backend.clock.now = start + 60 + LEEWAY_SECONDS - 1  # within the leeway: accepted
    assert backend.token_request(assertion).status_code == 200
    backend.clock.now = start + 60 + LEEWAY_SECONDS  # over: refused as expired, not as a replay
    assert "expired" in oauth_error(backend.token_request(assertion), 401, "invalid_client")
    backend.clock.now = start
    far = backend.assertion(keys.rs384, "feed", exp=int(start) + 300 + LEEWAY_SECONDS + 1)
    assert "five minutes" in oauth_error(backend.token_request(far), 401, "invalid_client")
    backend.clock.now = start + 2  # the same assertion, two seconds later, is within five minutes
    assert backend.token_request(far).status_code == 200
    # The used jtis are forgotten once their assertions could not be replayed anyway.
    later = datetime.fromtimestamp(start + 3600, UTC)
    context = JobContext(backend.world.service, DisabledMailer(), clock=lambda: later)
    assert run_jobs(context, JOBS, ["purge-records"]) == {"purge-records": 2}


# -- clients whose keys are at a jwks_uri ---------------------------------------------------------


def test_jwks_uri_clients_keys_are_fetched_cached_and_rotated(
    backend: Backend, jwks_server: JwksServer, keys: Keys
) -> None:
    jwks_server.serve(public_jwk(keys.rs384, "2024"))
    backend.register("lab", jwks_uri=jwks_server.url)
    for _ in range(3):
        assert backend.token_request(backend.assertion(keys.rs384, "lab", kid="2024")).status_code == 200
    assert jwks_server.hits == 1
    backend.clock.now += 31  # past the refetch interval: a new kid is looked up once
    jwks_server.serve(public_jwk(keys.rs384, "2024"), public_jwk(keys.es384, "2025"))
    assert backend.token_request(backend.assertion(keys.es384, "lab", kid="2025", alg="ES384")).status_code == 200
    assert jwks_server.hits == 2
    forged = backend.assertion(keys.rs384, "lab", kid="2025", alg="RS384")  # an RSA signature naming the EC key
    assert "does not match" in oauth_error(backend.token_request(forged), 401, "invalid_client")
    matching_jku = sign(keys.rs384, "RS384", "2024", claims_for("lab", backend.clock.now), jku=jwks_server.url)
    assert backend.token_request(matching_jku).status_code == 200


def test_an_unreachable_jwks_uri_refuses_the_client(backend: Backend, jwks_server: JwksServer, keys: Keys) -> None:
    jwks_server.status, jwks_server.body = 503, b"{}"
    backend.register("lab", jwks_uri=jwks_server.url)
    description = oauth_error(backend.token_request(backend.assertion(keys.rs384, "lab")), 401, "invalid_client")
    assert "keys unavailable" in description
    backend.clock.now += 31
    jwks_server.serve(public_jwk(keys.rs384, "k1"))
    assert backend.token_request(backend.assertion(keys.rs384, "lab")).status_code == 200


# -- refresh tokens ----------------------------------------------------------------------------


def refresh(backend: Backend, token: str, **params: str) -> TestResponse:
    return backend.http.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token, **params})


def test_a_patient_refresh_token_is_used_over_http_once(backend: Backend) -> None:
    pid = backend.world.seed_patient(INS_A)
    app = new_app("patient-app", name="App", redirect_uris=["https://app.example.org/cb"], scope="patient/*.rs")
    AppRegistry(backend.world.store).register(app)  # a public client (test_app_launch.py)
    grant = Grant(INS_A, "patient/*.rs", iua_claims(role="PAT", person_id=INS_A), client_id="patient-app")
    first = backend.auth.issuer.issue(grant, refresh=True)
    response = refresh(backend, first["refresh_token"], client_id="patient-app")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    second = response.get_json()
    assert second["refresh_token"] != first["refresh_token"] and second["scope"] == "patient/*.rs"
    patient = As(backend.http, second["access_token"])
    assert patient.ids(f"Patient?identifier={INS_SYSTEM}|{INS_A}") == {pid}
    assert "already used" in oauth_error(refresh(backend, first["refresh_token"]), 400, "invalid_grant")
    oauth_error(refresh(backend, second["refresh_token"], client_id="another-app"), 400, "invalid_grant")
    oauth_error(refresh(backend, second["refresh_token"], scope="patient/*.cruds"), 400, "invalid_scope")
    oauth_error(backend.http.post(TOKEN, data={"grant_type": "refresh_token"}), 400, "invalid_request")
    # None of the refused attempts used the token up.
    assert refresh(backend, second["refresh_token"], scope="patient/*.rs").status_code == 200


def test_refresh_tokens_issued_to_no_client_work_until_they_expire(backend: Backend) -> None:
    grant = Grant(INS_A, "patient/*.rs", iua_claims(role="PAT", person_id=INS_A))
    first = backend.auth.issuer.issue(grant, refresh=True)
    second = refresh(backend, first["refresh_token"], client_id="patient-app")
    assert second.status_code == 200, second.get_data(as_text=True)
    backend.clock.now += backend.auth.issuer.refresh_lifetime
    oauth_error(refresh(backend, second.get_json()["refresh_token"]), 400, "invalid_grant")


def test_a_confidential_clients_refresh_token_needs_its_assertion(backend: Backend, keys: Keys) -> None:
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    backend.register("other-feed", jwks={"keys": [public_jwk(keys.stranger, "k1")]})
    grant = Grant("feed", "system/DocumentReference.c", iua_claims(role="TCU", organization=CNAM), client_id="feed")
    issued = backend.auth.issuer.issue(grant, refresh=True)
    oauth_error(refresh(backend, issued["refresh_token"]), 401, "invalid_client")
    oauth_error(refresh(backend, issued["refresh_token"], client_id="feed"), 401, "invalid_client")
    as_other = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": backend.assertion(keys.stranger, "other-feed"),
    }
    oauth_error(refresh(backend, issued["refresh_token"], **as_other), 400, "invalid_grant")
    as_feed = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": backend.assertion(keys.rs384, "feed")}
    assert refresh(backend, issued["refresh_token"], **as_feed).status_code == 200


# -- discovery, JWKS, metadata, extension points -------------------------------------------------


def test_discovery_document(backend: Backend) -> None:
    response = backend.http.get("/fhir/.well-known/smart-configuration", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"].startswith("public")
    document = response.get_json()
    assert document["issuer"] == f"{BASE_URL}/auth"
    assert document["token_endpoint"] == TOKEN_URL
    assert document["jwks_uri"] == f"{BASE_URL}/auth/jwks"
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]  # "none": patient apps
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert document["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token"]
    assert {"client-confidential-asymmetric", "permission-v2"} <= set(document["capabilities"])
    assert "system/*.cruds" in document["scopes_supported"]
    assert document["code_challenge_methods_supported"] == ["S256"]  # SMART App Launch (test_app_launch.py)
    assert document["dmp_endpoints"] == account_endpoints(BASE_URL)  # the patient login's
    assert backend.http.post("/fhir/.well-known/smart-configuration").status_code == 405


def test_the_jwks_verifies_what_the_token_endpoint_issues(backend: Backend, keys: Keys) -> None:
    response = backend.http.get("/fhir/auth/jwks")
    assert response.status_code == 200 and response.headers["Cache-Control"].startswith("public, max-age=")
    published = response.get_json()
    assert published == load_or_create_server_key(backend.world.config.data_dir).jwks()
    assert all(set(key) & {"d", "p", "q"} == set() for key in published["keys"])
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    token = backend.token(keys.rs384, "feed")
    discovery = backend.http.get("/fhir/.well-known/smart-configuration").get_json()
    verifier = TokenVerifier([TrustedIssuer(iss=discovery["issuer"], jwks=published)], BASE_URL)
    assert verifier.verify(token)["client_id"] == "feed"
    stranger = TokenVerifier(
        [TrustedIssuer(iss=discovery["issuer"], jwks={"keys": [public_jwk(keys.rs384, "x")]})], BASE_URL
    )
    with pytest.raises(InvalidToken):
        stranger.verify(token)


def test_metadata_announces_the_token_endpoint(backend: Backend, keys: Keys) -> None:
    security = backend.http.get("/fhir/metadata").get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    (uris,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    (token_uri,) = [e["valueUri"] for e in uris["extension"] if e["url"] == "token"]
    assert token_uri == backend.http.get("/fhir/.well-known/smart-configuration").get_json()["token_endpoint"]
    backend.register("feed", jwks={"keys": [public_jwk(keys.rs384, "k1")]})
    assert backend.token(keys.rs384, "feed")  # the announced endpoint is the one that answers


def test_other_grants_and_endpoints_plug_in(backend: Backend) -> None:
    def echo(server: AuthorizationServer, request: TokenRequest) -> dict[str, Any]:
        if request.get("word") is None:
            raise OAuthError("invalid_request", "say a word")
        return {"access_token": request.require("word"), "token_type": "Bearer"}

    backend.auth.register_grant("urn:example:echo", echo)
    with pytest.raises(ValueError, match="already registered"):
        backend.auth.register_grant("refresh_token", echo)
    backend.auth.publication.publish({"example": f"{BASE_URL}/example"}, capabilities=["permission-user"])
    document = backend.http.get("/fhir/.well-known/smart-configuration").get_json()
    assert "urn:example:echo" in document["grant_types_supported"]
    assert document["dmp_endpoints"] == {**account_endpoints(BASE_URL), "example": f"{BASE_URL}/example"}
    assert "permission-user" in document["capabilities"]
    answer = backend.http.post(TOKEN, data={"grant_type": "urn:example:echo", "word": "hello"})
    assert answer.status_code == 200 and answer.get_json()["access_token"] == "hello"
    oauth_error(backend.http.post(TOKEN, data={"grant_type": "urn:example:echo"}), 400, "invalid_request")


# -- registration rules ------------------------------------------------------------------------


def jwks_of(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


@pytest.fixture(scope="module")
def weak_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def test_registration_refuses_what_could_never_authenticate_safely(keys: Keys, weak_key: Any) -> None:
    good = jwks_of(public_jwk(keys.rs384, "k1"))
    base: dict[str, Any] = {"scope": "system/DocumentReference.c", "role": "TCU", "organization": CNAM}
    assert new_client("feed", jwks=good, **base).role == "TCU"
    private_numbers = keys.rs384.private_numbers()
    with_private = {**public_jwk(keys.rs384, "k1"), "d": b64(private_numbers.d.to_bytes(384, "big"))}
    refused: dict[str, dict[str, Any]] = {
        "private": {"jwks": jwks_of(with_private)},
        "at least 2048 bits": {"jwks": jwks_of(public_jwk(weak_key, "k1"))},
        "P-384": {"jwks": jwks_of(public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1"))},
        "needs a kid": {"jwks": jwks_of(public_jwk(keys.rs384, None))},
        "own kid": {"jwks": jwks_of(public_jwk(keys.rs384, "k1"), public_jwk(keys.es384, "k1"))},
        "for signing with RS384": {"jwks": jwks_of(public_jwk(keys.rs384, "k1", alg="RS256"))},
        "RSA (RS384) or EC": {"jwks": jwks_of({"kty": "oct", "kid": "k1", "x": "AA"})},
        "no key": {"jwks": jwks_of()},
        "https": {"jwks_uri": "http://keys.example/jwks.json"},
        "exactly one": {"jwks": good, "jwks_uri": "https://keys.example/jwks.json"},
        "organization": {"jwks": good, "organization": None},
        "idNatPs": {"jwks": good, "role": "HCP", "organization": None},
        "only for an HCP": {"jwks": good, "profession": "10"},
        "not 'PAT'": {"jwks": good, "role": "PAT"},
        "system/ resource scope": {"jwks": good, "scope": "patient/*.rs"},
        "at least one scope": {"jwks": good, "scope": " "},
    }
    for message, change in refused.items():
        with pytest.raises(ClientError, match=re.escape(message)):
            new_client("feed", **{**base, **change})
    with pytest.raises(ClientError, match="client id"):
        new_client("feed with spaces", jwks=good, **base)


def test_requested_scopes_narrow_the_registration() -> None:
    registered = "system/*.rs system/DocumentReference.c system/Binary.read"
    assert granted_scope("system/Patient.r system/DocumentReference.c", registered) == (
        "system/Patient.r system/DocumentReference.c"
    )
    assert granted_scope("system/*.s system/*.s", registered) == "system/*.s"
    assert granted_scope("system/Binary.rs", registered) == "system/Binary.rs"  # v1 read = rs
    for beyond in ("system/*.cruds", "system/Binary.c", "system/DocumentReference.u", "user/Patient.r", "openid"):
        with pytest.raises(ScopeRefusedError):
            granted_scope(beyond, registered)


# -- the command line --------------------------------------------------------------------------


def test_clients_are_registered_listed_and_removed_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keys: Keys
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DMP_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DMP_BASE_URL", raising=False)
    monkeypatch.delenv("DMP_STORE", raising=False)
    assert main(["client", "list"]) == 2  # no server has started on this data directory: refused
    load_or_create_server_key(data_dir)  # what the server's first start does
    jwks_file = tmp_path / "feed-jwks.json"
    jwks_file.write_text(json.dumps(jwks_of(public_jwk(keys.rs384, "k1"))))
    register = ["client", "register", "--client-id", "cnam-feed", "--jwks", str(jwks_file), "--role", "TCU"]
    register += ["--organization", CNAM, "--scope", "system/DocumentReference.c system/Binary.c"]
    assert main(register) == 0
    assert main(register) == 1  # taken
    assert "already registered" in capsys.readouterr().err
    assert main([*register, "--replace"]) == 0
    leaked = tmp_path / "leaked.json"
    leaked.write_text(json.dumps(jwks_of({**public_jwk(keys.rs384, "k2"), "d": "AQAB"})))
    bad = ["client", "register", "--client-id", "bad", "--jwks", str(leaked), "--role", "TCU", "--organization", CNAM]
    assert main([*bad, "--scope", "system/Binary.c"]) == 2
    assert "private key material" in capsys.readouterr().err
    assert main(["client", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing == [f"cnam-feed\tTCU\t{CNAM}\tjwks kid=k1\tsystem/DocumentReference.c system/Binary.c"]

    # A server on that data directory gives the registered client its tokens.
    app = create_app(Config(data_dir=data_dir))
    http = app.test_client()
    now = time.time()
    assertion = sign(keys.rs384, "RS384", "k1", claims_for("cnam-feed", now))
    form = {"grant_type": "client_credentials", "scope": "system/Binary.c"}
    form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    assert http.post(TOKEN, data=form).status_code == 200
    assert main(["client", "remove", "--client-id", "cnam-feed"]) == 0
    form["client_assertion"] = sign(keys.rs384, "RS384", "k1", claims_for("cnam-feed", now))
    assert "unknown client" in oauth_error(http.post(TOKEN, data=form), 401, "invalid_client")
    assert main(["client", "remove", "--client-id", "cnam-feed"]) == 1
    capsys.readouterr()
    assert main(["client", "list"]) == 0 and capsys.readouterr().out == ""
    app.extensions["fhir_service"].store.close()
