"""SMART App Launch scopes (v2, with the v1 forms mapped, and SMART 2.x granular scopes).

A scope says which resource types and which kinds of interaction a client may attempt at all;
the DMP rules then decide what it actually reaches. ``patient/``, ``user/`` and ``system/``
contexts are treated alike here: the patient binding comes from the token's ``person_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

#: SMART v2 permission letters, in their canonical order.
PERMISSIONS = "cruds"
#: Letters that change data: a granular scope's query narrows reads and searches only (below).
WRITES = "cud"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)(?:\?(.*))?$")


@dataclass(frozen=True)
class Grant:
    """One resource scope: a type (or ``*``), its SMART v2 letters, and — for a granular scope
    (``patient/DocumentReference.rs?category=...``, SMART 2.x) — the search parameters that
    narrow it."""

    resource_type: str
    permissions: str
    query: tuple[tuple[str, str], ...] = ()

    def covers(self, resource_type: str) -> bool:
        return self.resource_type in ("*", resource_type)


@dataclass(frozen=True)
class Scopes:
    """The resource-level grants of a token."""

    grants: tuple[Grant, ...]

    @classmethod
    def parse(cls, scope: str) -> Scopes:
        """Keep the resource scopes of a space-separated list; others (openid, launch...) are
        ignored, and so is a v2 scope whose letters are out of ``cruds`` order."""
        grants = []
        for item in scope.split():
            grant = parse_grant(item)
            if grant is not None:
                grants.append(grant)
        return cls(tuple(grants))

    def allows(self, resource_type: str, permission: str) -> bool:
        """Whether some scope lets the token attempt ``permission`` on ``resource_type``.

        A granular scope counts for ``r`` and ``s``, whose results its query then narrows (the
        store filter, :mod:`authz.smart_scopes`); not for ``c``, ``u``, ``d``: a write is not a
        query, and a scope whose narrowing the server would not hold grants nothing rather than
        everything.
        """
        return any(
            g.covers(resource_type) and permission in g.permissions and not (g.query and permission in WRITES)
            for g in self.grants
        )

    def granting(self, resource_type: str, letters: str) -> list[Grant]:
        """The scopes that grant any of ``letters`` on ``resource_type``."""
        return [g for g in self.grants if g.covers(resource_type) and set(g.permissions) & set(letters)]


def parse_grant(item: str) -> Grant | None:
    """One resource scope, v1 forms mapped to v2 letters; None for anything else (``openid``,
    ``launch``, letters out of order, an empty query)."""
    m = _SCOPE_RE.match(item)
    if not m:
        return None
    rtype, perms, query = m.group(2), m.group(3), m.group(4)
    if perms in _V1:
        perms = _V1[perms]
    elif not _in_order(perms):
        return None
    params = tuple(parse_qsl(query, keep_blank_values=False)) if query is not None else ()
    if query is not None and not params:
        return None
    return Grant(rtype, perms, params)


def parse_scope(item: str) -> tuple[str, str, str] | None:
    """One plain resource scope as (context, resource type or ``*``, SMART v2 letters), v1 forms
    mapped; None for anything else, granular scopes included (client registrations hold plain
    ``system/`` scopes)."""
    grant = parse_grant(item)
    if grant is None or grant.query:
        return None
    return item.split("/", 1)[0], grant.resource_type, grant.permissions


def _in_order(perms: str) -> bool:
    positions = [PERMISSIONS.index(p) for p in perms]
    return positions == sorted(set(positions))


#: The SMART permission each FHIR interaction needs (SMART App Launch 2.2, "Scopes for requesting
#: FHIR resources"): ``c`` type-level create; ``r`` instance-level read, vread and history; ``u``
#: instance-level update and patch (an update that creates, too); ``d`` instance-level delete;
#: ``s`` type-level search and history, system-level search and history.
INTERACTION_PERMISSION = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search-type": "s",
    "search-system": "s",
    "history-type": "s",
    "history-system": "s",
}
