"""SMART App Launch 2.2 on the authorisation server's side: authorization codes with PKCE (RFC 7636,
S256 only), the ``authorization_code`` grant of the token endpoint (RFC 6749 §4.1.3) and what the
discovery document says of the flow.

The pages that lead a person to a code (sign-in, one-time code, approval) are the patient
accounts' (:mod:`fhir_server.dmp.accounts.launch`); they call :func:`issue_code` once the person
approved. A code is valid :data:`CODE_LIFETIME` seconds, bound to the client, the redirect URI and
the PKCE challenge, and kept (as a digest) in the store's private records (kind
``authorization-code``). Any presentation uses it up; one presented twice is refused and what the
first presentation obtained is revoked (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from jose import jwt as jose_jwt

from authz.authserver import otp
from authz.authserver.apps import CONTEXT_SCOPES, REFRESH_SCOPES
from authz.authserver.discovery import launch_endpoints
from authz.authserver.issuer import Grant
from authz.authserver.revocation import DenyList
from authz.authserver.token_endpoint import INVALID_GRANT, OAuthError, TokenRequest
from storage.interface import Store

if TYPE_CHECKING:
    from authz.authserver.server import AuthorizationServer

CODE_KIND = "authorization-code"
#: RFC 6749 §4.1.2: "a maximum authorization code lifetime of 10 minutes is RECOMMENDED"; an app
#: exchanges its code at once, so one minute.
CODE_LIFETIME = 60
LAUNCH_PATIENT = "launch/patient"
#: RFC 7636 §4.1: 43 to 128 unreserved characters; §4.2: S256 gives 43 base64url characters.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def issue_code(
    store: Store, clock: Callable[[], float], *, client_id: str, redirect_uri: str, challenge: str, grant: Grant
) -> str:
    """A new authorization code for ``grant``, bound to the client, redirect URI and challenge."""
    code = otp.ticket()
    held = {"client_id": client_id, "redirect_uri": redirect_uri, "challenge": challenge}
    value = orjson.dumps({**held, "grant": orjson.loads(grant.to_json())})
    store.put_record(CODE_KIND, otp.digest(code), value, expires=int(clock()) + CODE_LIFETIME)
    return code


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
