"""``dmp-server token``: print a token signed by the server's own key (see :mod:`authz.devtoken`).

It signs with the key of the same data directory as ``serve``, so the server accepts the token.
"""

from __future__ import annotations

import argparse
from typing import Any

from authz.devtoken import DEV_IDNATPS, PURPOSES, ROLES, make_dev_token
from authz.keys import load_or_create_server_key
from authz.terms import LEGAL_REPRESENTATIVE, NORMAL, PATIENT, PROFESSIONAL
from authz.tokens import own_issuer
from fhir_server.runtime.config import Config


def add_token_command(subparsers: Any) -> None:
    """Register ``dmp-server token`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("token", help="print an access token signed by the server's own key")
    parser.add_argument("--role", required=True, choices=ROLES, help="user role (dmp-user-role)")
    parser.add_argument("--sub", help="subject; default: the idNatPs (HCP), the INS (PAT/LEGREP), else dev-<role>")
    parser.add_argument("--profession", help="TRE_G15 profession code, e.g. 10 (médecin)")
    parser.add_argument("--specialty", help="TRE_R38 specialty code, e.g. SM54")
    parser.add_argument("--person-id", dest="person_id", help="INS of the patient concerned")
    parser.add_argument("--idnatps", help=f"idNatPs of a professional (HCP default: {DEV_IDNATPS})")
    parser.add_argument("--organization", help="FINESS as system|value, e.g. urn:oid:1.2.250.1.71.4.2.2|330780038")
    parser.add_argument("--purpose", default=NORMAL, choices=PURPOSES, help="TRE_R248 purpose of use")
    parser.add_argument("--name", help="display name of the user")
    parser.add_argument("--scope", default="user/*.cruds", help="SMART scopes, space-separated")
    parser.add_argument("--lifetime", type=int, default=3600, help="validity in seconds")
    parser.set_defaults(func=_token_command)


def _default_subject(args: argparse.Namespace, idnatps: str | None) -> str:
    """Who ``sub`` names by default follows CONTRACT §2's "identified by" column."""
    if args.sub:
        return str(args.sub)
    if idnatps:
        return idnatps
    if args.role in (PATIENT, LEGAL_REPRESENTATIVE) and args.person_id:
        return str(args.person_id)
    return f"dev-{args.role.lower()}"


def _token_command(args: argparse.Namespace) -> int:
    config = Config.from_env()
    key = load_or_create_server_key(config.data_dir)
    idnatps = args.idnatps or (DEV_IDNATPS if args.role == PROFESSIONAL else None)
    token = make_dev_token(
        key,
        issuer=own_issuer(config.base_url),
        audience=config.base_url,
        role=args.role,
        sub=_default_subject(args, idnatps),
        profession=args.profession,
        specialty=args.specialty,
        person_id=args.person_id,
        organization=args.organization,
        purpose=args.purpose,
        name=args.name,
        idnatps=idnatps,
        scope=args.scope,
        lifetime_seconds=args.lifetime,
    )
    print(token)
    return 0
