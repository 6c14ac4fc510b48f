"""The token layer of ``authz``: key handling, bearer-token verification, developer tokens.

Everything runs with real keys (RSA 2048, EC P-256 generated here), real python-jose signatures
and, for ``jwks_uri`` issuers, a real HTTP server on 127.0.0.1. Time is a controllable clock, so
the leeway boundaries are tested exactly and no test depends on how fast it runs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jose import jwt

from authz.devtoken import DEV_IDNATPS, make_dev_token
from authz.keys import ServerKey, load_or_create_server_key, server_key_path
from authz.tokens import (
    MAX_TOKEN_LENGTH,
    REQUIRED_CLAIMS,
    InvalidToken,
    MissingToken,
    TokenVerifier,
    TrustedIssuer,
    bearer_token,
    fetch_json,
    load_trusted_issuers,
    own_issuer,
)
from fhir_server.cli.token import add_token_command
from storage.secretfile import write_secret_file
from tests.jwks_server import JwksServer

BASE = "https://dmp.test/fhir"
ISS = "https://idp.test"
NOW = 1_700_000_000.0
LEEWAY = 60

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- helpers ---------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def int_b64(value: int, length: int | None = None) -> str:
    return b64(value.to_bytes(length or (value.bit_length() + 7) // 8, "big"))


def public_jwk(key: PrivateKey, kid: str | None, **extra: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_numbers = key.public_key().public_numbers()
        jwk: dict[str, Any] = {"kty": "RSA", "n": int_b64(rsa_numbers.n), "e": int_b64(rsa_numbers.e)}
    else:
        ec_numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        jwk = {"kty": "EC", "crv": crv, "x": int_b64(ec_numbers.x, size), "y": int_b64(ec_numbers.y, size)}
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


def pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "user-1",
        "aud": BASE,
        "exp": int(NOW) + 600,
        "iat": int(NOW) - 10,
        "jti": "jti-1",
        "scope": "user/*.rs",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: PrivateKey, alg: str, kid: str | None, payload: dict[str, Any]) -> str:
    headers = {"kid": kid} if kid is not None else None
    token: str = jwt.encode(payload, pem(key), algorithm=alg, headers=headers)
    return token


def hand_made(header: dict[str, Any], payload: dict[str, Any], signing: Any = None) -> str:
    """A compact JWS built without jose, to forge what jose would refuse to produce."""
    signing_input = f"{b64_json(header)}.{b64_json(payload)}"
    signature = signing(signing_input.encode()) if signing else b"not-a-signature"
    return f"{signing_input}.{b64(signature)}"


def reasons(excinfo: pytest.ExceptionInfo[InvalidToken]) -> str:
    return str(excinfo.value)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_key2() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mixed_jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(rsa_key, "rsa-1"), public_jwk(ec_key, "ec-1")]}


@pytest.fixture
def verifier(mixed_jwks: dict[str, Any], clock: Clock) -> TokenVerifier:
    return TokenVerifier([TrustedIssuer(iss=ISS, jwks=mixed_jwks)], BASE, leeway_seconds=LEEWAY, clock=clock)


# --- accepted tokens -------------------------------------------------------------------------


def test_rs256_token_is_accepted(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    result = verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims()))
    assert result["sub"] == "user-1"
    assert result["scope"] == "user/*.rs"


def test_es256_token_is_accepted(verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert verifier.verify(sign(ec_key, "ES256", "ec-1", claims(jti="e")))["jti"] == "e"


def test_mixed_jwks_picks_the_key_by_kid(
    mixed_jwks: dict[str, Any], clock: Clock, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # EC first, then RSA: the order of the set must not matter either.
    jwks = {"keys": list(reversed(mixed_jwks["keys"]))}
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks=jwks)], BASE, clock=clock)
    assert verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims()))["iss"] == ISS
    assert verifier.verify(sign(ec_key, "ES256", "ec-1", claims()))["iss"] == ISS


def test_several_issuers_each_with_their_keys(
    clock: Clock, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    issuers = [
        TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(rsa_key, "k")]}),
        TrustedIssuer(iss="https://other.test", jwks={"keys": [public_jwk(ec_key, "k")]}),
    ]
    verifier = TokenVerifier(issuers, BASE, clock=clock)
    assert verifier.verify(sign(ec_key, "ES256", "k", claims(iss="https://other.test")))
    # The other issuer's key does not sign for this one, even under the same kid.
    with pytest.raises(InvalidToken):
        verifier.verify(sign(ec_key, "ES256", "k", claims()))


def test_token_without_kid_uses_the_single_key_of_that_type(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    assert verifier.verify(sign(rsa_key, "RS256", None, claims()))
    assert verifier.verify(sign(ec_key, "ES256", None, claims()))


def test_token_without_kid_is_refused_when_the_key_is_ambiguous(
    clock: Clock, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    jwks = {"keys": [public_jwk(rsa_key, "a"), public_jwk(rsa_key2, "b")]}
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks=jwks)], BASE, clock=clock)
    with pytest.raises(InvalidToken, match="no kid"):
        verifier.verify(sign(rsa_key, "RS256", None, claims()))


def test_audience_array_containing_the_base_is_accepted(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign(rsa_key, "RS256", "rsa-1", claims(aud=["https://elsewhere.test", BASE]))
    assert verifier.verify(token)["aud"] == ["https://elsewhere.test", BASE]


# --- algorithms ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(verifier: TokenVerifier, alg: str) -> None:
    payload = claims()
    with pytest.raises(InvalidToken, match="malformed token"):  # an unsigned JWS has an empty third part
        verifier.verify(f"{b64_json({'alg': alg, 'kid': 'rsa-1'})}.{b64_json(payload)}.")
    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(hand_made({"alg": alg, "kid": "rsa-1"}, payload))


def test_hs256_forged_with_the_rsa_public_key_is_refused(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, mixed_jwks: dict[str, Any]
) -> None:
    """The classic key-confusion attack: the public key, which anybody has, used as an HMAC secret."""
    for secret in (public_pem(rsa_key), json.dumps(mixed_jwks["keys"][0]).encode()):
        forged = hand_made(
            {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"},
            claims(sub="attacker"),
            lambda data, secret=secret: hmac.new(secret, data, hashlib.sha256).digest(),
        )
        with pytest.raises(InvalidToken, match="unsupported algorithm"):
            verifier.verify(forged)


def test_ps256_token_is_refused_even_with_a_valid_signature(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    def pss(data: bytes) -> bytes:
        return rsa_key.sign(
            data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256()
        )

    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(hand_made({"alg": "PS256", "kid": "rsa-1"}, claims(), pss))


def test_hs256_signed_by_jose_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), "a-shared-secret", algorithm="HS256", headers={"kid": "rsa-1"})
    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(token)


@pytest.mark.parametrize("alg", ["HS512", "RS384", "RS512", "ES384", "ES512", "EdDSA", "rs256", "", None, 256])
def test_other_algorithms_are_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, alg: Any) -> None:
    genuine = sign(rsa_key, "RS256", "rsa-1", claims())
    _, payload, signature = genuine.split(".")
    with pytest.raises(InvalidToken, match="unsupported algorithm"):
        verifier.verify(f"{b64_json({'alg': alg, 'kid': 'rsa-1'})}.{payload}.{signature}")


def test_critical_header_extensions_are_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), pem(rsa_key), algorithm="RS256", headers={"kid": "rsa-1", "crit": ["exp"]})
    with pytest.raises(InvalidToken, match="critical"):
        verifier.verify(token)


# --- keys ------------------------------------------------------------------------------------


def test_unknown_kid_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-2", claims()))


def test_signature_by_another_key_under_a_known_kid_is_refused(
    verifier: TokenVerifier, rsa_key2: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(sign(rsa_key2, "RS256", "rsa-1", claims()))


def test_alg_naming_the_other_key_type_is_refused(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # ES256 header pointing at the RSA key, and RS256 pointing at the EC key.
    with pytest.raises(InvalidToken, match="key type does not match algorithm"):
        verifier.verify(sign(ec_key, "ES256", "rsa-1", claims()))
    with pytest.raises(InvalidToken, match="key type does not match algorithm"):
        verifier.verify(sign(rsa_key, "RS256", "ec-1", claims()))


def test_jwk_alg_or_use_contradicting_the_token_is_refused(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> None:
    for extra in ({"alg": "RS512"}, {"use": "enc"}):
        jwks = {"keys": [public_jwk(rsa_key, "k", **extra)]}
        verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks=jwks)], BASE, clock=clock)
        with pytest.raises(InvalidToken, match="key type does not match algorithm"):
            verifier.verify(sign(rsa_key, "RS256", "k", claims()))


def test_es256_needs_a_p256_key(clock: Clock) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(p384, "k")]})], BASE, clock=clock)
    with pytest.raises(InvalidToken, match="key type does not match algorithm"):
        verifier.verify(hand_made({"alg": "ES256", "kid": "k"}, claims()))


def test_weak_rsa_issuer_key_is_refused(clock: Clock) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(weak, "k")]})], BASE, clock=clock)
    with pytest.raises(InvalidToken, match="too weak"):
        verifier.verify(sign(weak, "RS256", "k", claims()))


def test_jwk_with_private_members_is_used_as_a_public_key(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = public_jwk(rsa_key, "k", d=int_b64(rsa_key.private_numbers().d))
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks={"keys": [jwk]})], BASE, clock=clock)
    assert verifier.verify(sign(rsa_key, "RS256", "k", claims()))


# --- claims ----------------------------------------------------------------------------------


def test_untrusted_issuer_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidToken, match="untrusted issuer"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims(iss="https://evil.test")))


@pytest.mark.parametrize("name", REQUIRED_CLAIMS)
def test_each_required_claim_is_required(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, name: str) -> None:
    payload = claims()
    del payload[name]
    expected = "untrusted issuer" if name == "iss" else f"missing claim: {name}"
    with pytest.raises(InvalidToken, match=expected):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", payload))


@pytest.mark.parametrize(
    ("name", "value"),
    [("sub", ""), ("sub", 12), ("jti", ["x"]), ("scope", 3), ("exp", "soon"), ("iat", True), ("nbf", "now")],
)
def test_claims_of_the_wrong_type_are_refused(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, name: str, value: Any
) -> None:
    with pytest.raises(InvalidToken, match=f"invalid claim: {name}"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims(**{name: value})))


@pytest.mark.parametrize("aud", ["https://dmp.test/fhir/", "https://other.test/fhir", ["https://other.test"], []])
def test_wrong_audience_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, aud: Any) -> None:
    with pytest.raises(InvalidToken, match="invalid audience"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims(aud=aud)))


@pytest.mark.parametrize("aud", [42, {"aud": BASE}, [BASE, 3]])
def test_malformed_audience_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, aud: Any) -> None:
    with pytest.raises(InvalidToken, match="invalid claim: aud"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims(aud=aud)))


def test_expiry_respects_the_leeway(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    token = sign(rsa_key, "RS256", "rsa-1", claims(exp=int(NOW), iat=int(NOW) - 100))
    clock.now = NOW + LEEWAY - 1
    assert verifier.verify(token)
    clock.now = NOW + LEEWAY + 1
    with pytest.raises(InvalidToken, match="token expired"):
        verifier.verify(token)


def test_not_before_respects_the_leeway(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    token = sign(rsa_key, "RS256", "rsa-1", claims(nbf=int(NOW), iat=int(NOW) - 100))
    clock.now = NOW - LEEWAY + 1
    assert verifier.verify(token)
    clock.now = NOW - LEEWAY - 1
    with pytest.raises(InvalidToken, match="token not yet valid"):
        verifier.verify(token)


def test_issued_at_in_the_future_respects_the_leeway(
    verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token = sign(rsa_key, "RS256", "rsa-1", claims(iat=int(NOW), exp=int(NOW) + 3600))
    clock.now = NOW - LEEWAY + 1
    assert verifier.verify(token)
    clock.now = NOW - LEEWAY - 1
    with pytest.raises(InvalidToken, match="issued in the future"):
        verifier.verify(token)


def test_leeway_is_configurable(mixed_jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    strict = TokenVerifier([TrustedIssuer(iss=ISS, jwks=mixed_jwks)], BASE, leeway_seconds=0, clock=clock)
    token = sign(rsa_key, "RS256", "rsa-1", claims(exp=int(NOW), iat=int(NOW) - 100))
    clock.now = NOW + 1
    with pytest.raises(InvalidToken, match="token expired"):
        strict.verify(token)


# --- tampering and malformed input -----------------------------------------------------------


def test_tampered_payload_is_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(rsa_key, "RS256", "rsa-1", claims()).split(".")
    forged_payload = b64_json(claims(sub="somebody-else", scope="user/*.cruds"))
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(f"{header}.{forged_payload}.{signature}")


def test_tampered_signature_is_refused(verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey) -> None:
    header, payload, signature = sign(ec_key, "ES256", "ec-1", claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[5] ^= 0x01
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(f"{header}.{payload}.{b64(bytes(raw))}")


def test_an_ecdsa_signature_in_der_rather_than_jws_form_is_refused(
    verifier: TokenVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """RFC 7518 §3.4: an ES256 signature is R and S, 32 bytes each; the DER form OpenSSL makes
    checks with the same key and the same message, and must not pass here."""
    der = {"signing": lambda data: ec_key.sign(data, ec.ECDSA(hashes.SHA256()))}
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(hand_made({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}, claims(), **der))


@pytest.mark.parametrize("signature", ["A", "AAAAA"])
def test_a_signature_that_is_not_base64url_is_refused(verifier: TokenVerifier, signature: str) -> None:
    header, payload, _ = hand_made({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}, claims()).split(".")
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a..c",
        "a.b.c ",
        "eyJ+.eyJ/.sig",
        f"{b64(b'not json')}.{b64_json({})}.c2ln",
        f"{b64_json(['alg'])}.{b64_json({})}.c2ln",
        f"{b64_json({'alg': 'RS256'})}.{b64_json('claims')}.c2ln",
        b64(bytes([0xFF, 0xFE])) + "." + b64_json({}) + ".c2ln",
        f"{b64_json({'alg': 'RS256', 'kid': 7})}.{b64_json(claims())}.c2ln",
    ],
)
def test_malformed_tokens_are_refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(InvalidToken, match="malformed token"):
        verifier.verify(token)


def test_oversized_and_non_string_tokens_are_refused(verifier: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    padded = sign(rsa_key, "RS256", "rsa-1", claims(pad="x" * MAX_TOKEN_LENGTH))
    with pytest.raises(InvalidToken, match="malformed token"):
        verifier.verify(padded)
    with pytest.raises(InvalidToken, match="malformed token"):
        verifier.verify(sign(rsa_key, "RS256", "rsa-1", claims()).encode())  # type: ignore[arg-type]


# --- bearer header ---------------------------------------------------------------------------


def test_bearer_token_extraction() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc.def.ghi  ") == "abc.def.ghi"
    for absent in (None, "", "   "):
        with pytest.raises(MissingToken):
            bearer_token(absent)
    for wrong in ("Basic dXNlcjpwYXNz", "Token abc", "abc.def.ghi"):
        with pytest.raises(InvalidToken, match="scheme") as excinfo:
            bearer_token(wrong)
        assert not isinstance(excinfo.value, MissingToken)
    with pytest.raises(InvalidToken, match="malformed") as excinfo:
        bearer_token("Bearer ")
    assert not isinstance(excinfo.value, MissingToken)


# --- jwks_uri over real HTTP -----------------------------------------------------------------


@pytest.fixture
def remote_verifier(jwks_server: JwksServer, clock: Clock) -> TokenVerifier:
    return TokenVerifier([TrustedIssuer(iss=ISS, jwks_uri=jwks_server.url)], BASE, clock=clock, jwks_ttl_seconds=300)


def test_jwks_uri_keys_are_fetched_and_cached(
    jwks_server: JwksServer, remote_verifier: TokenVerifier, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(public_jwk(rsa_key, "a"))
    for index in range(3):
        assert remote_verifier.verify(sign(rsa_key, "RS256", "a", claims(jti=f"j{index}")))
    assert jwks_server.hits == 1
    clock.now = NOW + 299
    assert remote_verifier.verify(sign(rsa_key, "RS256", "a", claims(exp=int(NOW) + 1000)))
    assert jwks_server.hits == 1
    clock.now = NOW + 300  # the TTL is over: fetched again
    assert remote_verifier.verify(sign(rsa_key, "RS256", "a", claims(exp=int(NOW) + 1000)))
    assert jwks_server.hits == 2


def test_unknown_kid_triggers_one_refetch_after_rotation(
    jwks_server: JwksServer,
    remote_verifier: TokenVerifier,
    clock: Clock,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks_server.serve(public_jwk(rsa_key, "old"))
    assert remote_verifier.verify(sign(rsa_key, "RS256", "old", claims()))
    assert jwks_server.hits == 1
    clock.now = NOW + 31
    jwks_server.serve(public_jwk(ec_key, "new"))  # the issuer rotated to a new (EC) key
    assert remote_verifier.verify(sign(ec_key, "ES256", "new", claims(exp=int(NOW) + 1000)))
    assert jwks_server.hits == 2
    # The old key is gone now.
    with pytest.raises(InvalidToken, match="unknown signing key"):
        remote_verifier.verify(sign(rsa_key, "RS256", "old", claims(exp=int(NOW) + 1000)))


def test_refetch_on_unknown_kid_is_rate_limited(
    jwks_server: JwksServer, remote_verifier: TokenVerifier, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(public_jwk(rsa_key, "a"))
    assert remote_verifier.verify(sign(rsa_key, "RS256", "a", claims()))
    assert jwks_server.hits == 1
    clock.now = NOW + 10
    for kid in ("made-up-1", "made-up-2", "made-up-3"):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            remote_verifier.verify(sign(rsa_key, "RS256", kid, claims()))
    assert jwks_server.hits == 1  # within 30 s of the last fetch: no fetch at all
    clock.now = NOW + 40
    for kid in ("made-up-4", "made-up-5"):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            remote_verifier.verify(sign(rsa_key, "RS256", kid, claims()))
    assert jwks_server.hits == 2  # one refetch, then rate-limited again


def test_rotation_refetch_finds_a_key_published_late(
    jwks_server: JwksServer, remote_verifier: TokenVerifier, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(public_jwk(rsa_key, "a"))
    remote_verifier.verify(sign(rsa_key, "RS256", "a", claims()))
    clock.now = NOW + 10
    jwks_server.serve(public_jwk(rsa_key, "a"), public_jwk(rsa_key, "b"))
    with pytest.raises(InvalidToken):  # too soon after the last fetch
        remote_verifier.verify(sign(rsa_key, "RS256", "b", claims()))
    clock.now = NOW + 30
    assert remote_verifier.verify(sign(rsa_key, "RS256", "b", claims()))
    assert jwks_server.hits == 2


def test_unreachable_or_broken_jwks_uri_refuses_tokens(
    jwks_server: JwksServer, remote_verifier: TokenVerifier, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "RS256", "a", claims(exp=int(NOW) + 10_000))
    for status, body in ((500, b"{}"), (200, b"not json"), (200, b'{"keys": "nope"}')):
        jwks_server.status, jwks_server.body = status, body
        with pytest.raises(InvalidToken, match="issuer keys unavailable"):
            remote_verifier.verify(token)
        clock.now += 30
    jwks_server.serve(public_jwk(rsa_key, "a"))
    assert remote_verifier.verify(token)


def test_failed_refresh_keeps_the_cached_keys(
    jwks_server: JwksServer, remote_verifier: TokenVerifier, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(public_jwk(rsa_key, "a"))
    token = sign(rsa_key, "RS256", "a", claims(exp=int(NOW) + 10_000))
    assert remote_verifier.verify(token)
    jwks_server.status = 503
    clock.now = NOW + 400
    assert remote_verifier.verify(token)
    assert remote_verifier.verify(token)
    assert jwks_server.hits == 2  # the failed refresh is not retried on every request


def test_fetch_json_is_size_bounded_and_http_only(jwks_server: JwksServer, tmp_path: Path) -> None:
    jwks_server.body = b'{"keys": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
    with pytest.raises(ValueError, match="larger than"):
        fetch_json(jwks_server.url)
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    with pytest.raises(ValueError, match="http"):
        fetch_json((tmp_path / "jwks.json").as_uri())


def test_injected_fetch_is_used(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return {"keys": [public_jwk(rsa_key, "a")]}

    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks_uri="https://idp.test/jwks")], BASE, clock=clock, fetch=fetch)
    assert verifier.verify(sign(rsa_key, "RS256", "a", claims()))
    assert fetched == ["https://idp.test/jwks"]


# --- trusted issuers file --------------------------------------------------------------------


def test_load_trusted_issuers(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks = {"keys": [public_jwk(rsa_key, "a")]}
    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps(
            {"issuers": [{"iss": ISS, "jwks": jwks}, {"iss": "https://b.test", "jwks_uri": "https://b.test/jwks"}]}
        )
    )
    assert load_trusted_issuers(path) == [
        TrustedIssuer(iss=ISS, jwks=jwks),
        TrustedIssuer(iss="https://b.test", jwks_uri="https://b.test/jwks"),
    ]
    assert load_trusted_issuers(None) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ("[]", "'issuers' array"),
        ('{"issuers": {}}', "'issuers' array"),
        ('{"issuers": ["x"]}', r"issuers\[0\] must be an object"),
        ('{"issuers": [{"jwks_uri": "https://a.test/j"}]}', "'iss'"),
        ('{"issuers": [{"iss": "", "jwks_uri": "https://a.test/j"}]}', "'iss'"),
        ('{"issuers": [{"iss": 5, "jwks_uri": "https://a.test/j"}]}', "'iss'"),
        ('{"issuers": [{"iss": "a"}]}', "exactly one"),
        ('{"issuers": [{"iss": "a", "jwks": {"keys": []}, "jwks_uri": "https://a.test/j"}]}', "exactly one"),
        ('{"issuers": [{"iss": "a", "jwks": {"kty": "RSA"}}]}', "JWK Set"),
        ('{"issuers": [{"iss": "a", "jwks": {"keys": [{"n": "x"}]}}]}', "kty"),
        ('{"issuers": [{"iss": "a", "jwks_uri": "file:///etc/passwd"}]}', "http"),
        ('{"issuers": [{"iss": "a", "jwks_uri": 3}]}', "http"),
        ('{"issuers": [{"iss": "a", "jwks_url": "https://a.test/j"}]}', "unknown member"),
        (
            '{"issuers": [{"iss": "a", "jwks_uri": "https://a/j"}, {"iss": "a", "jwks_uri": "https://a/k"}]}',
            "twice",
        ),
    ],
)
def test_malformed_trusted_issuers_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as excinfo:
        load_trusted_issuers(path)
    assert str(path) in str(excinfo.value)


def test_missing_trusted_issuers_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DMP_TRUSTED_ISSUERS"):
        load_trusted_issuers(tmp_path / "absent.json")


# --- the server key --------------------------------------------------------------------------


def test_server_key_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_server_key(data_dir)
    path = server_key_path(data_dir)
    assert path == data_dir / "keys" / "server-signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == first.private_pem
    assert "BEGIN PRIVATE KEY" in first.private_pem  # PKCS#8
    assert [p.name for p in path.parent.iterdir()] == ["server-signing-key.pem"]  # no temporary left behind
    second = load_or_create_server_key(data_dir)
    assert second.kid == first.kid
    assert second.private_pem == first.private_pem


def test_existing_server_key_is_never_overwritten(tmp_path: Path) -> None:
    existing = ServerKey.generate()
    path = server_key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(existing.private_pem)
    assert load_or_create_server_key(tmp_path).kid == existing.kid
    # The writer used on first start refuses to replace a key another process wrote meanwhile.
    assert write_secret_file(path, b"another key", replace=False) is False
    assert path.read_text() == existing.private_pem


def test_server_key_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    key = load_or_create_server_key(tmp_path)
    private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    numbers = private.public_key().public_numbers()
    x, y = int_b64(numbers.x, 32), int_b64(numbers.y, 32)
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    assert key.kid == b64(hashlib.sha256(canonical.encode()).digest())
    assert key.public_jwk() == {
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": key.kid,
        "alg": "ES256",
        "use": "sig",
    }
    assert key.jwks() == {"keys": [key.public_jwk()]}
    assert key.alg == "ES256"
    assert "PRIVATE" not in repr(key)


def test_server_key_signs_verifiable_es256_tokens(tmp_path: Path, clock: Clock) -> None:
    key = load_or_create_server_key(tmp_path)
    token = key.sign(claims(iss=own_issuer(BASE)))
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    verifier = TokenVerifier.with_server_key(key, own_issuer(BASE), [], BASE, clock=clock)
    assert verifier.verify(token)["iss"] == "https://dmp.test/fhir/auth"


def test_own_issuer_cannot_be_listed_twice(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    key = ServerKey.generate()
    duplicate = TrustedIssuer(iss=own_issuer(BASE), jwks={"keys": [public_jwk(rsa_key, "a")]})
    with pytest.raises(ValueError, match="twice"):
        TokenVerifier.with_server_key(key, own_issuer(BASE), [duplicate], BASE)


# --- developer tokens ------------------------------------------------------------------------


def test_dev_token_carries_the_iua_claims_and_verifies(
    tmp_path: Path, clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = load_or_create_server_key(tmp_path)
    token = make_dev_token(
        key,
        issuer=own_issuer(BASE),
        audience=BASE,
        role="HCP",
        sub="810002673899",
        profession="10",
        specialty="SM54",
        person_id="180017512345660",
        organization="urn:oid:1.2.250.1.71.4.2.2|330780038",
        name="Dr Marie Martin",
        idnatps="810002673899",
        clock=clock,
    )
    external = TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(rsa_key, "a")]})
    verified = TokenVerifier.with_server_key(key, own_issuer(BASE), [external], BASE, clock=clock).verify(token)
    assert verified["iss"] == own_issuer(BASE)
    assert verified["aud"] == BASE
    assert verified["iat"] == int(NOW)
    assert verified["exp"] == int(NOW) + 3600
    assert verified["scope"] == "user/*.cruds"
    assert isinstance(verified["jti"], str) and len(verified["jti"]) >= 16
    assert verified["extensions"] == {
        "ihe_iua": {
            "subject_name": "Dr Marie Martin",
            "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|330780038",
            "subject_role": [
                {"system": "https://dmp.example.org/fhir/CodeSystem/dmp-user-role", "code": "HCP"},
                {
                    "system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante",
                    "code": "10",
                },
                {
                    "system": "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale",
                    "code": "SM54",
                },
            ],
            "purpose_of_use": [
                {
                    "system": "https://mos.esante.gouv.fr/NOS/TRE_R248-ModeAcces/FHIR/TRE-R248-ModeAcces",
                    "code": "normal",
                }
            ],
            "national_provider_identifier": "810002673899",
            "person_id": "180017512345660^^^&1.2.250.1.213.1.4.8&ISO",
        }
    }


def test_dev_tokens_are_unique_and_expire(tmp_path: Path, clock: Clock) -> None:
    key = ServerKey.generate()
    common: dict[str, Any] = {"issuer": own_issuer(BASE), "audience": BASE, "role": "PAT", "sub": "p", "clock": clock}
    first = make_dev_token(key, lifetime_seconds=120, **common)
    second = make_dev_token(key, lifetime_seconds=120, **common)
    verifier = TokenVerifier.with_server_key(key, own_issuer(BASE), [], BASE, clock=clock)
    assert verifier.verify(first)["jti"] != verifier.verify(second)["jti"]
    assert verifier.verify(first)["extensions"]["ihe_iua"] == {
        "subject_role": [{"system": "https://dmp.example.org/fhir/CodeSystem/dmp-user-role", "code": "PAT"}],
        "purpose_of_use": [
            {"system": "https://mos.esante.gouv.fr/NOS/TRE_R248-ModeAcces/FHIR/TRE-R248-ModeAcces", "code": "normal"}
        ],
    }
    clock.now = NOW + 120 + LEEWAY + 1
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(first)


def test_dev_token_from_another_server_key_is_refused(clock: Clock) -> None:
    ours, theirs = ServerKey.generate(), ServerKey.generate()
    token = make_dev_token(theirs, issuer=own_issuer(BASE), audience=BASE, role="ADM", sub="a", clock=clock)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        TokenVerifier.with_server_key(ours, own_issuer(BASE), [], BASE, clock=clock).verify(token)


@pytest.mark.parametrize(("field", "value"), [("role", "DOCTOR"), ("purpose", "urgence"), ("lifetime_seconds", 0)])
def test_dev_token_refuses_unknown_codes(field: str, value: Any) -> None:
    arguments: dict[str, Any] = {"issuer": own_issuer(BASE), "audience": BASE, "role": "HCP", "sub": "s"}
    arguments[field] = value
    with pytest.raises(ValueError, match=field.split("_")[0]):
        make_dev_token(ServerKey.generate(), **arguments)


def _run_token_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="dmp-server")
    add_token_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["token", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out.strip()


def test_token_command_prints_a_verifiable_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DMP_BASE_URL", BASE)
    token = _run_token_command(
        ["--role", "HCP", "--profession", "10", "--person-id", "180017512345660", "--purpose", "bris_de_glace"], capsys
    )
    key = load_or_create_server_key(tmp_path / "data")  # the command created it; this loads it
    verified = TokenVerifier.with_server_key(key, own_issuer(BASE), [], BASE).verify(token)
    iua = verified["extensions"]["ihe_iua"]
    assert verified["sub"] == DEV_IDNATPS
    assert iua["national_provider_identifier"] == DEV_IDNATPS
    assert iua["person_id"] == "180017512345660^^^&1.2.250.1.213.1.4.8&ISO"
    assert [c["code"] for c in iua["subject_role"]] == ["HCP", "10"]
    assert iua["purpose_of_use"][0]["code"] == "bris_de_glace"
    assert verified["exp"] - verified["iat"] == 3600


def test_token_command_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DMP_BASE_URL", raising=False)
    token = _run_token_command(
        [
            "--role", "TCU", "--sub", "feed-1", "--organization", "urn:oid:1.2.250.1.71.4.2.2|CNAM",
            "--scope", "system/DocumentReference.c", "--lifetime", "60", "--name", "Flux CNAM",
        ],
        capsys,
    )  # fmt: skip
    base = "http://127.0.0.1:8080/fhir"
    key = load_or_create_server_key(tmp_path)
    verified = TokenVerifier.with_server_key(key, own_issuer(base), [], base).verify(token)
    assert verified["sub"] == "feed-1"
    assert verified["iss"] == "http://127.0.0.1:8080/fhir/auth"
    assert verified["scope"] == "system/DocumentReference.c"
    assert verified["exp"] - verified["iat"] == 60
    iua = verified["extensions"]["ihe_iua"]
    assert iua["subject_organization_id"] == "urn:oid:1.2.250.1.71.4.2.2|CNAM"
    assert iua["subject_name"] == "Flux CNAM"
    assert "national_provider_identifier" not in iua and "person_id" not in iua


def test_token_command_patient_subject_defaults_to_the_ins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DMP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DMP_BASE_URL", BASE)
    token = _run_token_command(["--role", "PAT", "--person-id", "290017512345605"], capsys)
    verified = TokenVerifier.with_server_key(load_or_create_server_key(tmp_path), own_issuer(BASE), [], BASE).verify(
        token
    )
    assert verified["sub"] == "290017512345605"
    assert os.path.exists(server_key_path(tmp_path))
