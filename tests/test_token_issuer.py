"""Tokens the server issues itself: verifiable like any issuer's, refresh tokens rotated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.authserver.issuer import Grant, RefreshRefused, TokenIssuer
from authz.devtoken import iua_claims
from authz.keys import ServerKey
from authz.tokens import InvalidToken, TokenVerifier, own_issuer
from fhir_server.app import create_service
from fhir_server.runtime.config import Config
from tests.dmp import EpochClock as Clock

BASE = "http://127.0.0.1:8080/fhir"


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
def issuer(tmp_path: Path, clock: Clock) -> Iterator[TokenIssuer]:
    service = create_service(Config(data_dir=tmp_path))
    yield TokenIssuer(ServerKey.generate(), own_issuer(BASE), BASE, service.store, clock=clock)
    service.store.close()


def _grant(sub: str = "180017512345660") -> Grant:
    return Grant(sub, "patient/*.rs", iua_claims(role="PAT", person_id=sub))


def test_issued_access_tokens_verify_with_the_contract_claims(issuer: TokenIssuer, clock: Clock) -> None:
    response = issuer.issue(_grant(), refresh=False)
    assert response["token_type"] == "Bearer" and "refresh_token" not in response
    verifier = TokenVerifier.with_server_key(issuer.key, issuer.issuer, [], BASE, clock=clock)
    claims = verifier.verify(response["access_token"])
    assert claims["sub"] == "180017512345660" and claims["scope"] == "patient/*.rs"
    assert claims["exp"] - claims["iat"] == response["expires_in"] and claims["jti"]
    assert claims["extensions"]["ihe_iua"]["subject_role"][0]["code"] == "PAT"
    clock.now += issuer.access_lifetime + 61
    with pytest.raises(InvalidToken):
        verifier.verify(response["access_token"])


def test_a_refresh_token_is_used_once(issuer: TokenIssuer) -> None:
    first = issuer.issue(_grant(), refresh=True)
    second = issuer.refresh(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    with pytest.raises(RefreshRefused):
        issuer.refresh(first["refresh_token"])  # replayed
    assert issuer.refresh(second["refresh_token"])["scope"] == "patient/*.rs"


def test_refresh_tokens_expire_and_are_revoked_per_subject(issuer: TokenIssuer, clock: Clock) -> None:
    old = issuer.issue(_grant(), refresh=True)
    clock.now += issuer.refresh_lifetime
    with pytest.raises(RefreshRefused):
        issuer.refresh(old["refresh_token"])
    mine, other = issuer.issue(_grant(), refresh=True), issuer.issue(_grant("290017512345605"), refresh=True)
    assert issuer.revoke_refresh_tokens("180017512345660") == 1
    with pytest.raises(RefreshRefused):
        issuer.refresh(mine["refresh_token"])
    assert issuer.refresh(other["refresh_token"])["access_token"]


def test_only_digests_of_refresh_tokens_are_kept(issuer: TokenIssuer, tmp_path: Path) -> None:
    token = issuer.issue(_grant(), refresh=True)["refresh_token"]
    issuer.store.close()
    assert not any(token.encode() in path.read_bytes() for path in tmp_path.glob("dmp.sqlite3*"))
