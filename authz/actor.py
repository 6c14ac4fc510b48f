"""The actor: who is calling, as one immutable object built from verified token claims.

Claims follow IHE IUA as CONTRACT.md §2 fixes them. Anything the DMP rules do not recognise
(an unknown role, an unknown profession, a malformed patient identifier) leaves the actor without
the corresponding power — deny by default — rather than guessing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.scopes import Scopes
from authz.terms import (
    INS_SYSTEMS,
    NORMAL,
    PROFESSION_SYSTEM,
    PURPOSE_SYSTEM,
    PURPOSE_SYSTEMS,
    ROLE_SYSTEM,
    SPECIALTY_SYSTEM,
)
from fhirmodel.ins import ins_problem

#: Tells whether a code exists in a code system of ``ig/`` (roles, professions, purposes).
Known = Callable[[str, str], bool]


class ActorError(ValueError):
    """Claims that do not describe an actor the server can act for."""


@dataclass(frozen=True)
class Actor:
    role: str  # PAT, LEGREP, HCP, ASS, TCU, ADM
    issuer: str
    subject: str
    name: str | None
    idnatps: str | None  # national professional id (HCP)
    profession: str | None  # TRE_G15 code, only when the matrix knows it
    specialty: str | None
    organization: tuple[str, str] | None  # (system, value): the establishment acted in
    purpose: str  # normal, bris_de_glace, centre_15
    patient: tuple[str, str] | None  # (INS system, INS value) the request is about
    client_id: str | None
    scopes: Scopes
    token_id: str

    @property
    def principal(self) -> str:
        """A stable key for "the same caller" (paging sessions are bound to it)."""
        return f"{self.issuer}|{self.subject}|{self.role}"

    @property
    def emergency(self) -> bool:
        return self.purpose != NORMAL


def _codings(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [c for c in items if isinstance(c, dict)]


def parse_ins(value: str) -> tuple[str, str] | None:
    """An INS in CX form (``value^^^&1.2.250.1.213.1.4.8&ISO``) or ``system|value``; None for
    anything else, a malformed INS or one with a wrong key included (CONTRACT §3)."""
    value = value.strip()
    if "^" in value:
        parts = value.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else []
        system = f"urn:oid:{authority[1]}" if len(authority) > 1 else ""
        ins = parts[0]
    elif "|" in value:
        system, _, ins = value.partition("|")
    else:
        return None
    if system not in INS_SYSTEMS or ins_problem(ins):
        return None
    return system, ins


def _organization(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, str) or "|" not in value:
        return None
    system, _, ident = value.partition("|")
    return (system, ident) if system and ident else None


#: The grants of a scope string, shared (they are immutable) by the actors of every token that
#: carries it: a worker keeps thousands of actors (:class:`authz.gate.DmpGatekeeper`), few scopes.
_scopes = functools.lru_cache(maxsize=256)(Scopes.parse)


def actor_from_claims(claims: dict[str, Any], known: Known) -> Actor:
    """Build the actor from verified claims; :class:`ActorError` when the role is not usable.

    An unknown profession is dropped (the actor then reads no document under R10), an unknown
    role or purpose refuses the token outright.
    """
    extensions = claims.get("extensions")
    iua = extensions.get("ihe_iua") if isinstance(extensions, dict) else None
    if not isinstance(iua, dict):
        raise ActorError("the token has no extensions.ihe_iua claims")
    profession = specialty = None
    role_codes = []
    for coding in _codings(iua.get("subject_role")):
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(code, str):
            continue
        if system == ROLE_SYSTEM:
            role_codes.append(code)
        elif system == PROFESSION_SYSTEM and known(PROFESSION_SYSTEM, code):
            profession = code
        elif system == SPECIALTY_SYSTEM:
            specialty = code
    if len(role_codes) != 1 or not known(ROLE_SYSTEM, role_codes[0]):
        raise ActorError("subject_role must hold exactly one known DMP user role")
    purposes = [c.get("code") for c in _codings(iua.get("purpose_of_use")) if c.get("system") in PURPOSE_SYSTEMS]
    purpose = purposes[0] if purposes else NORMAL
    if not isinstance(purpose, str) or not known(PURPOSE_SYSTEM, purpose):
        raise ActorError(f"unknown purpose of use '{purpose}'")
    person = iua.get("person_id")
    patient = parse_ins(person) if isinstance(person, str) else None
    if isinstance(person, str) and patient is None:
        raise ActorError("person_id is not an INS")
    idnatps = iua.get("national_provider_identifier")
    return Actor(
        role=role_codes[0],
        issuer=sys.intern(str(claims["iss"])),
        subject=str(claims["sub"]),
        name=iua.get("subject_name") if isinstance(iua.get("subject_name"), str) else None,
        idnatps=idnatps if isinstance(idnatps, str) and idnatps else None,
        profession=profession,
        specialty=specialty,
        organization=_organization(iua.get("subject_organization_id")),
        purpose=purpose,
        patient=patient,
        client_id=str(claims.get("client_id") or claims.get("azp") or "") or None,
        scopes=_scopes(str(claims.get("scope", ""))),
        token_id=str(claims.get("jti", "")),
    )
