"""SMART App Launch scopes (v2, with the v1 forms mapped) as a coarse gate.

A scope says which resource types and which kinds of interaction a client may attempt at all;
the DMP rules then decide what it actually reaches. ``patient/``, ``user/`` and ``system/``
contexts are treated alike here: the patient binding comes from the token's ``person_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: SMART v2 permission letters, in their canonical order.
PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)(\?.*)?$")


@dataclass(frozen=True)
class Scopes:
    """The resource-level grants of a token: resource type (or ``*``) → permission letters."""

    grants: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, scope: str) -> Scopes:
        """Keep the resource scopes of a space-separated list; others (openid, launch...) are ignored.

        SMART v2 letters must be in ``cruds`` order; a v2 scope with query parameters
        (``?category=...``) is ignored rather than widened, since its narrowing is not enforced here.
        """
        grants = []
        for item in scope.split():
            parsed = parse_scope(item)
            if parsed is not None:
                grants.append(parsed[1:])
        return cls(tuple(grants))

    def allows(self, resource_type: str, permission: str) -> bool:
        return any(rtype in ("*", resource_type) and permission in perms for rtype, perms in self.grants)


def parse_scope(item: str) -> tuple[str, str, str] | None:
    """One resource scope as (context, resource type or ``*``, SMART v2 letters), v1 forms mapped;
    None for anything else (``openid``, ``launch``, letters out of order, query parameters)."""
    m = _SCOPE_RE.match(item)
    if not m or m.group(4):
        return None
    context, rtype, perms = m.group(1), m.group(2), m.group(3)
    if perms in _V1:
        perms = _V1[perms]
    elif not _in_order(perms):
        return None
    return context, rtype, perms


def _in_order(perms: str) -> bool:
    positions = [PERMISSIONS.index(p) for p in perms]
    return positions == sorted(set(positions))


#: The SMART permission each FHIR interaction needs.
INTERACTION_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "search": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}
