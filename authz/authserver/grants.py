"""The grants of the token endpoint: SMART Backend Services and refresh tokens.

``client_credentials`` (RFC 6749 §4.4, SMART Backend Services): a registered client authenticated
by its signed assertion gets a short access token (5 minutes, as SMART recommends; no refresh
token, as SMART says) with the scopes it asked for within its registration and the IUA claims it
was registered with.

**The patient: the ``person_id`` parameter.** SMART backend tokens are not bound to a patient, yet
CONTRACT §2 needs ``person_id`` in every token used on a patient's record (R1 binds a token to one
patient). The client names the patient in an extra form parameter, ``person_id``, whose value is
the IUA claim itself: an INS in CX form (``180017512345660^^^&1.2.250.1.213.1.4.8&ISO``), or
``urn:oid:1.2.250.1.213.1.4.8|180017512345660``, or a bare INS-NIR. This is the form the Swiss
national extension of IHE IUA gives the same request (CH:EPR ITI-71: a ``client_credentials``
request with a client assertion and ``person_id=<EPR-SPID in CX form>``), so IUA clients already
speak it; RFC 8707's ``resource`` names a server, not a patient, and a scope such as
``patient/*.rs`` has no way to say *which* patient. Without ``person_id`` the token reaches no
record (the DMP rules refuse). The server does not check here that the client may act for that
patient: the DMP policy decides that on every request, exactly as for any other token.

``refresh_token`` (RFC 6749 §6): delegates to :meth:`TokenIssuer.refresh` (rotation: a refresh
token works once). A refresh token issued to a registered (confidential) client only works with
that client's assertion; one issued to a public client (the patient login's app) works for
whoever holds it, as for any public client, and a ``client_id`` sent with it must be the one it
was issued to (a refresh token issued to no client in particular accepts any). A patient app's
refresh token ends with the app's registration (``dmp-server app remove``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authz.actor import parse_ins
from authz.authserver.apps import AppRegistry
from authz.authserver.clients import ScopeRefused, granted_scope
from authz.authserver.discovery import JWT_TOKEN_TYPE
from authz.authserver.issuer import Grant, RefreshRefused
from authz.authserver.server import AuthorizationServer, GrantHandler
from authz.authserver.token_endpoint import (
    INVALID_CLIENT,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    OAuthError,
    TokenRequest,
)
from authz.devtoken import person_id_cx
from authz.keys import load_or_create_server_key
from storage.interface import Store

#: SMART Backend Services: "the expires_in value SHOULD NOT exceed 300".
BACKEND_TOKEN_LIFETIME = 300
#: RFC 8693 token types a client may ask for: both name the JWT access tokens issued here.
ACCEPTED_TOKEN_TYPES = (JWT_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:access-token")


def client_credentials(server: AuthorizationServer, request: TokenRequest) -> dict[str, Any]:
    """An access token for the authenticated client, for the patient named by ``person_id``."""
    client = server.authenticate_client(request)
    _check_token_type(request)
    _check_resource(server, request)
    try:
        scope = granted_scope(request.get("scope"), client.scope)
    except ScopeRefused as exc:
        raise OAuthError(INVALID_SCOPE, str(exc)) from None
    iua = dict(client.iua)
    person = request.get("person_id")
    if person is not None:
        iua["person_id"] = _person_id(person)
    grant = Grant(sub=client.client_id, scope=scope, iua=iua, client_id=client.client_id)
    return {
        "access_token": server.issuer.access_token(grant, lifetime=BACKEND_TOKEN_LIFETIME),
        "token_type": "Bearer",
        "expires_in": BACKEND_TOKEN_LIFETIME,
        "scope": scope,
    }


def _person_id(value: str) -> str:
    """The patient as the CX string CONTRACT §2 writes, or ``invalid_request``."""
    parsed = parse_ins(person_id_cx(value.strip()))
    if parsed is None:
        raise OAuthError(INVALID_REQUEST, "person_id must be an INS (value^^^&1.2.250.1.213.1.4.8&ISO or system|value)")
    system, ins = parsed
    return f"{ins}^^^&{system.removeprefix('urn:oid:')}&ISO"


def _check_token_type(request: TokenRequest) -> None:
    """IUA ITI-71's ``requested_token_type``: only JWT access tokens are issued here."""
    wanted = request.get("requested_token_type")
    if wanted is not None and wanted not in ACCEPTED_TOKEN_TYPES:
        raise OAuthError(INVALID_REQUEST, f"requested_token_type: only {JWT_TOKEN_TYPE} is issued")


def _check_resource(server: AuthorizationServer, request: TokenRequest) -> None:
    """RFC 8707: the one resource server these tokens are for is the FHIR base."""
    resource = request.get("resource")
    if resource is not None and resource.rstrip("/") != server.base_url:
        raise OAuthError(INVALID_TARGET, f"resource: tokens issued here are for {server.base_url} only")


def refresh_token(server: AuthorizationServer, request: TokenRequest) -> dict[str, Any]:
    """A new access token and a new refresh token for a refresh token, which is used up."""
    token = request.require("refresh_token")
    grant = server.issuer.grant_of(token)
    if grant is None:
        raise OAuthError(INVALID_GRANT, "the refresh token is unknown, expired or already used")
    client = server.client_of(request)
    if client is not None and client.client_id != grant.client_id:
        raise OAuthError(INVALID_GRANT, "the refresh token was issued to another client")
    if client is None and grant.client_id is not None and server.clients.get(grant.client_id) is not None:
        raise OAuthError(INVALID_CLIENT, "this refresh token belongs to a registered client: authenticate")
    if client is None and grant.client_id is not None and AppRegistry(server.store).get(grant.client_id) is None:
        raise OAuthError(INVALID_GRANT, "the app this refresh token was issued to is no longer registered")
    claimed = request.get("client_id")
    if client is None and None not in (claimed, grant.client_id) and claimed != grant.client_id:
        raise OAuthError(INVALID_GRANT, "the refresh token was issued to another client")
    scope = request.get("scope")
    if scope is not None and set(scope.split()) != set(grant.scope.split()):
        raise OAuthError(INVALID_SCOPE, "a refresh keeps the scope granted (omit scope, or repeat it)")
    try:
        return server.issuer.refresh(token)
    except RefreshRefused as exc:
        raise OAuthError(INVALID_GRANT, str(exc)) from None


#: The grants every authorisation server starts with; others are added with ``register_grant``.
DEFAULT_GRANTS: dict[str, GrantHandler] = {
    "client_credentials": client_credentials,
    "refresh_token": refresh_token,
}


def build_authorization_server(
    base_url: str, data_dir: Path, store: Store, *, clock: Callable[[], float] = time.time
) -> AuthorizationServer:
    """The authorisation server of the FHIR base ``base_url``, signing with the server's key in
    ``data_dir`` (created on first start)."""
    return AuthorizationServer(base_url, store, load_or_create_server_key(data_dir), grants=DEFAULT_GRANTS, clock=clock)
