"""Clients of SMART Backend Services: clinical software an operator registered by hand.

A client authenticates with a JWT signed by its own private key (SMART
``client-confidential-asymmetric``); the server holds only its public keys, inline or at a
``jwks_uri``. Registration fixes everything the client's tokens may say: the ``system/`` scopes it
may ask for (a request may narrow them, never widen them) and the exact IHE IUA claims
(CONTRACT §2) its tokens carry — a feed is ``TCU`` with its organisation, an establishment's
software may be registered as acting for one professional (``HCP`` with an idNatPs). Nothing
about *who* the client is comes from the request itself; only the patient concerned does
(``person_id``, see grants.py), and the DMP rules then decide per request.

Clients are kept in the store's private records (kind ``oauth-client``, sealed like resources).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from jose import jwk as jose_jwk
from jose.exceptions import JOSEError

from authz.devtoken import iua_claims
from authz.scopes import parse_scope
from authz.terms import ADMINISTRATION, PROFESSIONAL, ROLE_SYSTEM, STAFF, SYSTEM
from authz.tokens import MIN_RSA_BITS, b64url_int_bits, check_http_url, check_jwks
from storage.interface import Store

CLIENT_RECORD = "oauth-client"
#: The roles software may act in. A patient or a legal representative logs in in person (the
#: patient login), so no machine is ever registered to speak as one.
CLIENT_ROLES = (SYSTEM, PROFESSIONAL, STAFF, ADMINISTRATION)
#: The one key type and curve of each signature algorithm a client assertion may use (SMART asks
#: servers for RS384 or ES384; a key that could serve no accepted algorithm is refused up front).
KEY_ALGORITHMS = {"RSA": "RS384", "EC": "ES384"}
ASSERTION_CURVE = "P-384"
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~:/@+-]{1,200}")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class ClientError(ValueError):
    """A registration that cannot be accepted; the message tells the operator what to fix."""


class ScopeRefused(Exception):
    """Requested scopes the client may not have (OAuth ``invalid_scope``)."""


@dataclass(frozen=True)
class Client:
    """A registered client: its keys (exactly one of ``jwks`` and ``jwks_uri``), the scopes it may
    ask for, and the IUA claims of its tokens."""

    client_id: str
    scope: str
    iua: dict[str, Any]
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    registered_at: int = 0

    @property
    def role(self) -> str:
        roles = self.iua.get("subject_role") or []
        return next((str(c["code"]) for c in roles if c.get("system") == ROLE_SYSTEM), "")

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "client_id": self.client_id,
                "scope": self.scope,
                "iua": self.iua,
                "jwks": self.jwks,
                "jwks_uri": self.jwks_uri,
                "registered_at": self.registered_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Client:
        raw = orjson.loads(data)
        keys = {"jwks": raw.get("jwks"), "jwks_uri": raw.get("jwks_uri")}
        return cls(raw["client_id"], raw["scope"], raw["iua"], **keys, registered_at=raw.get("registered_at", 0))


def new_client(
    client_id: str,
    *,
    scope: str,
    role: str,
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    organization: str | None = None,
    profession: str | None = None,
    specialty: str | None = None,
    idnatps: str | None = None,
    name: str | None = None,
    registered_at: int = 0,
) -> Client:
    """A client checked whole, or :class:`ClientError` naming the first thing wrong."""
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise ClientError("the client id must be 1 to 200 characters among letters, digits and ._~:/@+-")
    if (jwks is None) == (jwks_uri is None):
        raise ClientError("give exactly one of a JWK Set or a JWK Set URL")
    if jwks is not None:
        check_client_jwks(jwks)
    if jwks_uri is not None:
        check_jwks_uri(jwks_uri)
    check_registered_scope(scope)
    iua = _client_iua(role, organization, profession, specialty, idnatps, name)
    return Client(client_id, " ".join(scope.split()), iua, jwks, jwks_uri, registered_at)


def _client_iua(
    role: str,
    organization: str | None,
    profession: str | None,
    specialty: str | None,
    idnatps: str | None,
    name: str | None,
) -> dict[str, Any]:
    """The IUA claims of the client's tokens (CONTRACT §2's "identified by" column decides what
    each role needs); purpose of use is always ``normal``: software never breaks the glass."""
    if role not in CLIENT_ROLES:
        raise ClientError(f"a client acts as one of {', '.join(CLIENT_ROLES)}, not {role!r}")
    if organization is not None:
        system, _, value = organization.partition("|")
        if not system or not value:
            raise ClientError("the organization is system|value, e.g. urn:oid:1.2.250.1.71.4.2.2|330780038")
    if role == SYSTEM and organization is None:
        raise ClientError("a TCU client needs its organization (subject_organization_id)")
    if role == PROFESSIONAL and not idnatps:
        raise ClientError("an HCP client acts for one professional: give the idNatPs")
    if role != PROFESSIONAL and (profession or specialty or idnatps):
        raise ClientError("profession, specialty and idNatPs describe a professional: only for an HCP client")
    return iua_claims(
        role=role,
        profession=profession,
        specialty=specialty,
        organization=organization,
        idnatps=idnatps,
        name=name,
    )


def check_jwks_uri(uri: str) -> None:
    """http(s) only, and plain http only on the loopback (keys fetched in clear could be swapped)."""
    try:
        check_http_url(uri, "the JWK Set URL")
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    parts = urlsplit(uri)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ClientError("the JWK Set URL must use https (plain http only on the loopback)")


def check_client_jwks(jwks: Any) -> None:
    """Public signing keys only, each usable for RS384 or ES384 and named by a unique ``kid``.

    A JWK Set holding a private member means the client's secret has left it: refused, so that the
    operator notices rather than the server quietly keeping a private key.
    """
    try:
        check_jwks(jwks, "the JWK Set")
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    keys = jwks["keys"]
    if not keys:
        raise ClientError("the JWK Set holds no key")
    kids = [key.get("kid") for key in keys]
    for index, key in enumerate(keys):
        _check_public_key(key, f"keys[{index}]")
    if len(set(kids)) != len(kids):
        raise ClientError("each key needs its own kid")


def _check_public_key(key: dict[str, Any], where: str) -> None:
    private = [member for member in PRIVATE_MEMBERS if member in key]
    if private:
        raise ClientError(f"{where} holds private key material ({', '.join(private)}): register public keys only")
    if not isinstance(key.get("kid"), str) or not key["kid"]:
        raise ClientError(f"{where} needs a kid (the client names its key in each assertion)")
    alg = KEY_ALGORITHMS.get(str(key.get("kty")))
    if alg is None:
        raise ClientError(f"{where}: key type must be RSA (RS384) or EC (ES384)")
    if key.get("alg", alg) != alg or key.get("use", "sig") != "sig":
        raise ClientError(f"{where}: an {key['kty']} key here is for signing with {alg}")
    if "key_ops" in key and (not isinstance(key["key_ops"], list) or "verify" not in key["key_ops"]):
        raise ClientError(f"{where}: key_ops must allow verify")
    if key["kty"] == "RSA" and b64url_int_bits(key.get("n")) < MIN_RSA_BITS:
        raise ClientError(f"{where}: RSA keys must have at least {MIN_RSA_BITS} bits")
    if key["kty"] == "EC" and key.get("crv") != ASSERTION_CURVE:
        raise ClientError(f"{where}: EC keys must be on {ASSERTION_CURVE} (ES384)")
    members = ("kty", "n", "e") if key["kty"] == "RSA" else ("kty", "crv", "x", "y")
    try:
        jose_jwk.construct({name: key.get(name) for name in members}, algorithm=alg)
    except (JOSEError, ValueError, TypeError):
        raise ClientError(f"{where}: not a valid {key['kty']} public key") from None


# --- scopes ----------------------------------------------------------------------------------


def _system_scopes(scope: str) -> list[tuple[str, str, str]]:
    """Each item of ``scope`` as (item, type, letters); :class:`ValueError` on one that is not a
    plain ``system/`` resource scope (patient context comes from ``person_id``, not the scope)."""
    parsed = []
    for item in scope.split():
        found = parse_scope(item)
        if found is None or found[0] != "system":
            raise ValueError(f"{item} is not a system/ resource scope (e.g. system/DocumentReference.c)")
        parsed.append((item, found[1], found[2]))
    return parsed


def check_registered_scope(scope: str) -> None:
    try:
        if not _system_scopes(scope):
            raise ValueError("a client needs at least one scope")
    except ValueError as exc:
        raise ClientError(str(exc)) from None


def granted_scope(requested: str | None, registered: str) -> str:
    """The requested scopes if each is within the registration, else :class:`ScopeRefused`.

    SMART Backend Services: the server "SHALL mediate the request to assure that the scope
    requested is within the scope pre-authorized". A request may narrow (``system/Binary.c``
    under ``system/*.cruds``); every letter must be granted for that type, ``*`` only by ``*``.
    RFC 6749 §3.3 lets a server default an absent scope or fail: SMART makes it required, so fail.
    """
    if not requested or not requested.split():
        raise ScopeRefused("scope is required (system/ scopes within the client's registration)")
    try:
        asked = _system_scopes(requested)
    except ValueError as exc:
        raise ScopeRefused(str(exc)) from None
    allowed = [(rtype, perms) for _, rtype, perms in _system_scopes(registered)]
    for item, rtype, perms in asked:
        for letter in perms:
            if not any(letter in held and held_type in ("*", rtype) for held_type, held in allowed):
                raise ScopeRefused(f"{item} is beyond what this client is registered for")
    return " ".join(dict.fromkeys(item for item, _, _ in asked))


# --- the registry ----------------------------------------------------------------------------


class ClientRegistry:
    """Registered clients, in the store's private records."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    def register(self, client: Client, *, replace: bool = False) -> None:
        """Keep ``client``; an id already taken is refused unless ``replace`` (key rotation)."""
        if replace:
            self.store.put_record(CLIENT_RECORD, client.client_id, client.to_json())
        elif not self.store.add_record(CLIENT_RECORD, client.client_id, client.to_json(), now=int(self.clock())):
            raise ClientError(f"client {client.client_id} is already registered (use --replace to change it)")

    def get(self, client_id: str) -> Client | None:
        held = self.store.get_record(CLIENT_RECORD, client_id)
        return Client.from_json(held[0]) if held is not None else None

    def all(self) -> list[Client]:
        return [client for key in self.store.record_keys(CLIENT_RECORD) if (client := self.get(key)) is not None]

    def remove(self, client_id: str) -> bool:
        return self.store.delete_record(CLIENT_RECORD, client_id)
