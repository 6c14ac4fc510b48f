"""The verifier's memory of tokens it already verified: what it saves, and what it never skips.

A token seen before is not verified again (its signature is what costs), but its times, its
revocation and its issuer's current keys are checked at every use as for a new one. Real keys and
signatures (the helpers of ``tests/test_tokens.py``), a clock moved by hand, a JWKS served over
real HTTP for rotations. Whether a signature was checked is observed by counting the calls to
python-jose's ``jwt.decode``, the call that checks it (the real function still runs).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import authz.gate
import authz.tokens
from authz.devtoken import iua_claims
from authz.gate import Actors, caller
from authz.lru import Lru
from authz.terms import PROFESSIONAL
from authz.tokens import InvalidToken, TokenVerifier, TrustedIssuer
from fhirmodel.errors import FhirError
from tests.jwks_server import JwksServer
from tests.test_tokens import BASE, ISS, LEEWAY, NOW, Clock, claims, public_jwk, sign

#: The issuer's key, and another one (a forger's, or the issuer's next).
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Revocations:
    """A deny-list the test fills, read at each verification like the store's."""

    def __init__(self) -> None:
        self.jtis: set[str] = set()

    def __call__(self, verified: dict[str, Any]) -> bool:
        return verified["jti"] in self.jtis


@pytest.fixture
def revoked() -> Revocations:
    return Revocations()


@pytest.fixture
def verifier(clock: Clock, revoked: Revocations) -> TokenVerifier:
    jwks = {"keys": [public_jwk(KEY, "k1")]}
    return TokenVerifier([TrustedIssuer(iss=ISS, jwks=jwks)], BASE, leeway_seconds=LEEWAY, clock=clock, revoked=revoked)


def test_a_token_s_signature_is_checked_once(verifier: TokenVerifier, signatures: list[str]) -> None:
    token = sign(KEY, "ES256", "k1", claims())
    first, second = verifier.verify(token), verifier.verify(token)
    assert first == second and first["sub"] == "user-1"
    assert signatures == [token]
    first["sub"] = "someone-else"  # what a caller does with its copy changes nothing remembered
    assert verifier.verify(token)["sub"] == "user-1"


def test_each_use_gets_claims_of_its_own_nested_ones_too(verifier: TokenVerifier) -> None:
    token = sign(KEY, "ES256", "k1", claims(extensions={"ihe_iua": {"person_id": "p"}}))
    verifier.verify(token)["extensions"]["ihe_iua"]["person_id"] = "someone-else"
    assert verifier.verify(token)["extensions"] == {"ihe_iua": {"person_id": "p"}}


def test_a_remembered_token_still_expires(verifier: TokenVerifier, clock: Clock, signatures: list[str]) -> None:
    token = sign(KEY, "ES256", "k1", claims(exp=int(NOW) + 100))
    assert verifier.verify(token)
    clock.now = NOW + 100 + LEEWAY - 1
    assert verifier.verify(token)
    clock.now = NOW + 100 + LEEWAY
    with pytest.raises(InvalidToken, match="token expired"):
        verifier.verify(token)
    with pytest.raises(InvalidToken, match="token expired"):
        verifier.verify(token)
    assert len(signatures) == 2  # forgotten once expired: the last attempt was verified again, and failed


def test_a_token_not_yet_valid_becomes_valid_at_its_nbf(verifier: TokenVerifier, clock: Clock) -> None:
    token = sign(KEY, "ES256", "k1", claims(nbf=int(NOW) + 500, exp=int(NOW) + 1000))
    with pytest.raises(InvalidToken, match="not yet valid"):
        verifier.verify(token)
    clock.now = NOW + 500 - LEEWAY
    assert verifier.verify(token)["jti"] == "jti-1"


def test_a_remembered_token_revoked_fails_at_the_next_use(
    verifier: TokenVerifier, revoked: Revocations, signatures: list[str]
) -> None:
    token = sign(KEY, "ES256", "k1", claims(jti="to-revoke"))
    assert verifier.verify(token)
    revoked.jtis.add("to-revoke")
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)
    assert len(signatures) == 1  # refused although remembered


@pytest.mark.parametrize("part", [1, 2])
def test_a_tampered_token_is_not_taken_for_the_one_remembered(verifier: TokenVerifier, part: int) -> None:
    """Same header, other claims or other signature: another token, verified in full."""
    token = sign(KEY, "ES256", "k1", claims())
    assert verifier.verify(token)
    parts = token.split(".")
    if part == 1:
        parts[1] = sign(KEY, "ES256", "k1", claims(sub="admin")).split(".")[1]  # claims of another token
    else:
        parts[2] = sign(OTHER_KEY, "ES256", "k1", claims()).split(".")[2]  # same claims, another signer
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(".".join(parts))
    assert verifier.verify(token)["sub"] == "user-1"


def test_the_memory_is_bounded(clock: Clock, signatures: list[str]) -> None:
    jwks = {"keys": [public_jwk(KEY, "k1")]}
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks=jwks)], BASE, clock=clock, cache_size=3)
    tokens = [sign(KEY, "ES256", "k1", claims(jti=f"j{n}")) for n in range(5)]
    for token in tokens:
        verifier.verify(token)
    signatures.clear()
    verifier.verify(tokens[4])
    verifier.verify(tokens[2])
    assert signatures == []  # the three used last are remembered
    verifier.verify(tokens[0])
    assert signatures == [tokens[0]]  # the oldest were forgotten to stay within three


def test_the_issuer_key_is_built_once(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    fresh = ec.generate_private_key(ec.SECP256R1())
    built: list[dict[str, Any]] = []
    real = authz.tokens.jose_jwk.construct

    def counting(members: Any, algorithm: str) -> Any:
        if isinstance(members, dict):  # a JWK: verifying (signing here goes through it with a PEM)
            built.append(members)
        return real(members, algorithm=algorithm)

    monkeypatch.setattr(authz.tokens.jose_jwk, "construct", counting)
    verifier = TokenVerifier([TrustedIssuer(iss=ISS, jwks={"keys": [public_jwk(fresh, "f")]})], BASE, clock=clock)
    for n in range(3):
        assert verifier.verify(sign(fresh, "ES256", "f", claims(jti=f"n{n}")))
    assert len(built) == 1


def remote(jwks_server: JwksServer, clock: Clock) -> TokenVerifier:
    return TokenVerifier([TrustedIssuer(iss=ISS, jwks_uri=jwks_server.url)], BASE, clock=clock, jwks_ttl_seconds=300)


def test_a_key_withdrawn_by_the_issuer_stops_its_remembered_tokens(
    jwks_server: JwksServer,
    clock: Clock,
) -> None:
    """As long as the JWKS cache holds the old keys the token is honoured, as a new one would be;
    once the keys are fetched again without its KEY, it is refused though remembered."""
    verifier = remote(jwks_server, clock)
    jwks_server.serve(public_jwk(KEY, "old"))
    token = sign(KEY, "ES256", "old", claims(exp=int(NOW) + 3600))
    assert verifier.verify(token)
    jwks_server.serve(public_jwk(OTHER_KEY, "new"))  # the issuer rotated
    clock.now = NOW + 299
    assert verifier.verify(token)  # the cached keys still hold it
    clock.now = NOW + 300
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(token)


def test_a_kid_given_to_another_key_stops_the_remembered_tokens(
    jwks_server: JwksServer,
    clock: Clock,
) -> None:
    verifier = remote(jwks_server, clock)
    jwks_server.serve(public_jwk(KEY, "k"))
    token = sign(KEY, "ES256", "k", claims(exp=int(NOW) + 3600))
    assert verifier.verify(token)
    jwks_server.serve(public_jwk(OTHER_KEY, "k"))  # same kid, new key material
    clock.now = NOW + 300
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(token)


def test_the_gate_builds_a_token_s_actor_once_and_still_checks_the_token(
    verifier: TokenVerifier, revoked: Revocations, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``authz.gate.caller`` with the gatekeeper's memory of actors: the actor of a token seen
    before is the same object, but a revoked or expired token is refused all the same."""
    built: list[str] = []
    real = authz.gate.actor_from_claims

    def counting(verified: dict[str, Any], known: Any) -> Any:
        built.append(verified["jti"])
        return real(verified, known)

    monkeypatch.setattr(authz.gate, "actor_from_claims", counting)
    actors: Actors = Lru(8)
    iua = iua_claims(role=PROFESSIONAL, profession="10", idnatps="810100000001", person_id="180017512345660")
    token = sign(KEY, "ES256", "k1", claims(jti="a", exp=int(NOW) + 100, extensions={"ihe_iua": iua}))
    other = sign(KEY, "ES256", "k1", claims(jti="b", extensions={"ihe_iua": iua}))
    first = caller(verifier, lambda system, code: True, f"Bearer {token}", actors)
    assert caller(verifier, lambda system, code: True, f"Bearer {token}", actors) is first
    assert caller(verifier, lambda system, code: True, f"Bearer {other}", actors) is not first
    assert built == ["a", "b"]
    revoked.jtis.add("b")
    with pytest.raises(FhirError) as refused:
        caller(verifier, lambda system, code: True, f"Bearer {other}", actors)
    assert refused.value.status == 401
    clock.now = NOW + 100 + LEEWAY + 1
    with pytest.raises(FhirError) as expired:
        caller(verifier, lambda system, code: True, f"Bearer {token}", actors)
    assert expired.value.status == 401
