"""Token introspection (RFC 7662) and revocation (RFC 7009) of the tokens issued here.

**Access tokens are JWTs** the FHIR API verifies on its own, so revoking one cannot delete it:
its issuer and ``jti`` go into a deny-list (the store's private records, kind
``revoked-access-token``) that the resource server's :class:`~authz.tokens.TokenVerifier` checks
after the signature, until the token's ``exp`` (plus the verifier's leeway) makes the entry moot.
**Refresh tokens** are records: revoking one deletes it.

**Who may introspect**: a registered backend services client, authenticated exactly as at the
token endpoint (``private_key_jwt``, assertion ``aud`` = the token endpoint). RFC 7662 §2.1
requires the caller to be authorised; the resource servers that need the answer are such clients,
and a patient app has no credential to present. Only tokens issued here can be active: another
issuer's are ``{"active": false}``, as are expired, revoked, unknown and malformed ones.

**Who may revoke** (RFC 7009 §2.1): the client a token was issued to — a backend client with its
assertion, a public app naming its ``client_id`` (public clients have no credential) — and anyone
holding a token issued to no client (the patient login's own tokens). Unknown, expired or foreign
tokens are answered 200 like revoked ones (§2.2), since the client's aim is reached either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.authserver.token_endpoint import INVALID_CLIENT, OAuthError, TokenRequest
from authz.tokens import InvalidToken, TokenVerifier
from storage.interface import Store

if TYPE_CHECKING:
    from authz.authserver.server import AuthorizationServer

REVOKED_KIND = "revoked-access-token"
#: The resource server accepts a token this long after its ``exp`` (the verifier's leeway): the
#: deny-list keeps an entry that much longer.
VERIFIER_LEEWAY = 60
#: Longest token looked at: the JWTs issued here are a few kilobytes; anything larger is not one.
MAX_TOKEN_LENGTH = 16 * 1024
#: RFC 7009 §2.2.1's error for a token the client may not revoke (RFC 6749 §5.2).
UNAUTHORIZED_CLIENT = "unauthorized_client"
INACTIVE: dict[str, Any] = {"active": False}


class DenyList:
    """Access tokens revoked before their expiry, by issuer and ``jti`` (a digest of both)."""

    def __init__(self, store: Store):
        self.store = store

    def revoke(self, claims: dict[str, Any]) -> None:
        self.store.put_record(REVOKED_KIND, _key(claims), b"", expires=int(claims["exp"]) + VERIFIER_LEEWAY)

    def revoked(self, claims: dict[str, Any]) -> bool:
        return self.store.get_record(REVOKED_KIND, _key(claims)) is not None


def _key(claims: dict[str, Any]) -> str:
    return hashlib.sha256(f"{claims['iss']}\n{claims['jti']}".encode()).hexdigest()


@dataclass
class TokenStatus:
    """Introspection and revocation for one authorisation server."""

    server: AuthorizationServer
    deny: DenyList
    verifier: TokenVerifier

    @classmethod
    def of(cls, server: AuthorizationServer, clock: Callable[[], float]) -> TokenStatus:
        """Verifies only the server's own tokens, with no leeway: expired means inactive."""
        issuer = server.issuer
        deny = DenyList(server.store)
        verifier = TokenVerifier.with_server_key(
            issuer.key, issuer.issuer, [], issuer.audience, leeway_seconds=0, clock=clock, revoked=deny.revoked
        )
        return cls(server, deny, verifier)

    def _access_claims(self, token: str) -> dict[str, Any] | None:
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            return self.verifier.verify(token)
        except InvalidToken:
            return None

    def introspect(self, request: TokenRequest) -> dict[str, Any]:
        """RFC 7662 §2.2 with SMART's fields (scope, client_id, exp; the launch context)."""
        self.server.authenticate_client(request)
        token = request.require("token")
        live = self.server.issuer.live_refresh(token)
        if live is not None:
            grant, expires = live
            answer = {"active": True, "scope": grant.scope, "sub": grant.sub, "iss": self.server.issuer.issuer}
            answer.update({"token_type": "refresh_token", **grant.context})
            if grant.client_id:
                answer["client_id"] = grant.client_id
            if expires is not None:
                answer["exp"] = expires
            return answer
        claims = self._access_claims(token)
        if claims is None:
            return dict(INACTIVE)
        return {"active": True, "token_type": "Bearer", **claims}  # the IUA actor included (``extensions``)

    def revoke(self, request: TokenRequest) -> None:
        """RFC 7009 §2.1: end the token if the caller may; an unknown token is no error."""
        client = self.server.client_of(request)
        claimed = request.get("client_id")
        if client is None and claimed is not None and self.server.clients.get(claimed) is not None:
            raise OAuthError(INVALID_CLIENT, "this client is registered with keys: authenticate with private_key_jwt")
        caller = client.client_id if client is not None else claimed
        token = request.require("token")
        grant = self.server.issuer.grant_of(token)
        if grant is not None:
            _check_owner(grant.client_id, caller)
            self.server.issuer.revoke_refresh(token)
            return
        claims = self._access_claims(token)
        if claims is not None:
            _check_owner(claims.get("client_id"), caller)
            self.deny.revoke(claims)


def _check_owner(owner: str | None, caller: str | None) -> None:
    if owner is not None and owner != caller:
        raise OAuthError(UNAUTHORIZED_CLIENT, "this token was issued to another client")
