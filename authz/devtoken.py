"""Tokens signed by the server's own key, for development, tests and demonstrations.

Without an external identity provider nobody could call the API; ``dmp-server token`` mints a
token with the IHE IUA claims of CONTRACT §2 for any actor, signed by the key the server already
trusts (issuer ``{base_url}/auth``). It is an operator's tool: whoever can run it can read the
server's private key anyway.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable
from typing import Any

from authz.keys import ServerKey, load_or_create_server_key
from authz.terms import (
    ADMINISTRATION,
    BREAK_THE_GLASS,
    LEGAL_REPRESENTATIVE,
    NORMAL,
    PATIENT,
    PROFESSION_SYSTEM,
    PROFESSIONAL,
    PURPOSE_SYSTEM,
    REGULATION_CENTRE,
    ROLE_SYSTEM,
    SPECIALTY_SYSTEM,
    STAFF,
    SYSTEM,
)
from authz.tokens import own_issuer
from fhir_server.config import Config

ROLES = (PATIENT, LEGAL_REPRESENTATIVE, PROFESSIONAL, STAFF, SYSTEM, ADMINISTRATION)
PURPOSES = (NORMAL, BREAK_THE_GLASS, REGULATION_CENTRE)
INS_NIR_OID = "1.2.250.1.213.1.4.8"
#: The idNatPs of CONTRACT §2's example, used by the command when an HCP token names none.
DEV_IDNATPS = "810002673899"


def person_id_cx(ins: str) -> str:
    """A bare INS value in the HL7 v2 CX form IUA uses (``value^^^&OID&ISO``, INS-NIR). Values
    already in CX form, or in the ``system|value`` form CONTRACT §2 also accepts (the only way to
    name another INS system, such as the test INS ``.10`` of the ANS examples), pass unchanged."""
    return ins if "^" in ins or "|" in ins else f"{ins}^^^&{INS_NIR_OID}&ISO"


def iua_claims(
    *,
    role: str,
    profession: str | None = None,
    specialty: str | None = None,
    person_id: str | None = None,
    organization: str | None = None,
    purpose: str = NORMAL,
    name: str | None = None,
    idnatps: str | None = None,
) -> dict[str, Any]:
    """The ``extensions.ihe_iua`` object; absent facts are left out rather than sent empty."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    roles = [{"system": ROLE_SYSTEM, "code": role}]
    if profession:
        roles.append({"system": PROFESSION_SYSTEM, "code": profession})
    if specialty:
        roles.append({"system": SPECIALTY_SYSTEM, "code": specialty})
    optional = {
        "subject_name": name,
        "subject_organization_id": organization,
        "national_provider_identifier": idnatps,
        "person_id": person_id_cx(person_id) if person_id else None,
    }
    iua: dict[str, Any] = {"subject_role": roles, "purpose_of_use": [{"system": PURPOSE_SYSTEM, "code": purpose}]}
    iua.update({key: value for key, value in optional.items() if value})
    return iua


def make_dev_token(
    server_key: ServerKey,
    *,
    issuer: str,
    audience: str,
    role: str,
    sub: str,
    profession: str | None = None,
    specialty: str | None = None,
    person_id: str | None = None,
    organization: str | None = None,
    purpose: str = NORMAL,
    name: str | None = None,
    idnatps: str | None = None,
    scope: str = "user/*.cruds",
    lifetime_seconds: int = 3600,
    clock: Callable[[], float] = time.time,
) -> str:
    """A signed access token with the claims CONTRACT §2 requires and the IUA actor description."""
    if lifetime_seconds <= 0:
        raise ValueError("lifetime_seconds must be positive")
    now = int(clock())
    claims = {
        "iss": issuer,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_seconds,
        "jti": secrets.token_urlsafe(16),
        "scope": scope,
        "extensions": {
            "ihe_iua": iua_claims(
                role=role,
                profession=profession,
                specialty=specialty,
                person_id=person_id,
                organization=organization,
                purpose=purpose,
                name=name,
                idnatps=idnatps,
            )
        },
    }
    return server_key.sign(claims)


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
