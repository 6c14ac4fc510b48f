"""Tokens signed by the server's own key, for development, tests and demonstrations.

Without an external identity provider nobody could call the API; ``dmp-server token`` mints a
token with the IHE IUA claims of CONTRACT §2 for any actor, signed by the key the server already
trusts (issuer ``{base_url}/auth``). It is an operator's tool: whoever can run it can read the
server's private key anyway.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from authz.keys import ServerKey
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
