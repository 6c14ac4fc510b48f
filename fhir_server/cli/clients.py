"""``dmp-server client``: register, list and remove the clients of SMART Backend Services.

Registration is an operator's act (SMART lets it happen out of band): whoever runs this command
decides which software may get tokens, with which scopes and which IUA claims. The clients are
kept in the store of ``DMP_DATA_DIR`` / ``DMP_STORE``, so a running server sees them at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from authz.authserver.clients import CLIENT_ROLES, Client, ClientError, ClientRegistry, new_client
from fhir_server.runtime.config import Config


def add_client_command(subparsers: Any) -> None:
    """Register ``dmp-server client`` and its actions on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("client", help="manage the clients of SMART Backend Services")
    actions = parser.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="register a client (its public keys, scopes and IUA claims)")
    register.add_argument("--client-id", required=True, help="the client's id (iss and sub of its assertions)")
    keys = register.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", type=Path, metavar="FILE", help="a JSON file holding the client's public JWK Set")
    keys.add_argument("--jwks-uri", metavar="URL", help="where the client publishes its JWK Set (https)")
    register.add_argument("--role", required=True, choices=CLIENT_ROLES, help="the user role its tokens carry")
    register.add_argument("--organization", help="FINESS as system|value, e.g. urn:oid:1.2.250.1.71.4.2.2|330780038")
    register.add_argument("--profession", help="TRE_G15 profession code (HCP only)")
    register.add_argument("--specialty", help="TRE_R38 specialty code (HCP only)")
    register.add_argument("--idnatps", help="idNatPs of the professional the software acts for (HCP only)")
    register.add_argument("--name", help="display name (subject_name)")
    register.add_argument("--scope", required=True, help="system/ scopes it may ask for, space-separated")
    register.add_argument("--replace", action="store_true", help="replace a client already registered (new keys)")
    register.set_defaults(func=_register)
    listing = actions.add_parser("list", help="list the registered clients")
    listing.set_defaults(func=_list)
    remove = actions.add_parser("remove", help="remove a client: it gets no new token")
    remove.add_argument("--client-id", required=True)
    remove.set_defaults(func=_remove)


def _registry() -> tuple[ClientRegistry, Any]:
    from fhir_server.app import create_service

    service = create_service(Config.from_env())
    return ClientRegistry(service.store), service.store


def _read_jwks(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"cannot read {path} as JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ClientError(f"{path} must hold a JWK Set (an object with a 'keys' array)")
    return document


def _register(args: argparse.Namespace) -> int:
    try:
        client = new_client(
            args.client_id,
            scope=args.scope,
            role=args.role,
            jwks=_read_jwks(args.jwks) if args.jwks else None,
            jwks_uri=args.jwks_uri,
            organization=args.organization,
            profession=args.profession,
            specialty=args.specialty,
            idnatps=args.idnatps,
            name=args.name,
            registered_at=int(time.time()),
        )
    except ClientError as exc:
        print(f"dmp-server client register: {exc}", file=sys.stderr)
        return 2
    registry, store = _registry()
    try:
        registry.register(client, replace=args.replace)
    except ClientError as exc:
        print(f"dmp-server client register: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"registered client {client.client_id} ({client.role}): {client.scope}")
    return 0


def _describe(client: Client) -> str:
    """One line: id, role, who it acts as, its keys, its scopes (tab-separated, for grep and cut)."""
    iua = client.iua
    acting = iua.get("national_provider_identifier") or iua.get("subject_organization_id") or "-"
    kids = [str(key.get("kid")) for key in (client.jwks or {}).get("keys", [])]
    keys = client.jwks_uri or f"jwks kid={','.join(kids)}"
    return "\t".join((client.client_id, client.role, acting, keys, client.scope))


def _list(args: argparse.Namespace) -> int:
    registry, store = _registry()
    try:
        clients = registry.all()
    finally:
        store.close()
    for client in clients:
        print(_describe(client))
    return 0


def _remove(args: argparse.Namespace) -> int:
    registry, store = _registry()
    try:
        removed = registry.remove(args.client_id)
    finally:
        store.close()
    if not removed:
        print(f"dmp-server client remove: no client {args.client_id}", file=sys.stderr)
        return 1
    print(f"removed client {args.client_id}")
    return 0
