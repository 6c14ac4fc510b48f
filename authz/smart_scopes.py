"""A token's SMART scopes as a store filter, beside the DMP rules' own.

Checking the scope letter of the interaction asked for (:data:`authz.scopes.INTERACTION_PERMISSION`)
is not enough: an ``_include``, a ``_revinclude``, ``$everything``, ``$dmp-export``, a history or a
Bundle reach types the request never named. So, like the DMP rules, the scopes become a predicate
the store adds inside every query, per type — what lies outside them is neither returned nor
counted, and paging stays right:

- a type no scope grants (for the letters that fit the request) gets ``NOTHING``;
- a type a plain scope grants gets ``EVERYTHING`` (the DMP rules' filter alone then decides);
- a type granted only by granular scopes (SMART 2.x ``patient/DocumentReference.rs?category=...``)
  gets the OR of their queries, each turned into a condition as a search would turn it. A query
  the server cannot turn into one grants nothing (deny by default), never everything.

Which letters fit a request: ``r`` for an instance-level read (read, vread, history of one
resource), ``s`` for a search or a type/system history, ``r`` or ``s`` for an operation that reads
(``$everything``, ``$dmp-export``). A write — and an operation that writes, such as
``$generate-metadata`` — gets no scope filter: its own look-ups (the current version, a
conditional match, the patient a reference names, the content it describes) return nothing to
the caller, and the write itself needs its letter. A Bundle's entries share one guard, which each
entry's check sets to what that entry does.
"""

from __future__ import annotations

from collections.abc import Callable

from authz.scopes import Scopes
from storage.query import EVERYTHING, NOTHING, Expr, any_of

#: Turns a search's parameters on a type into the store's condition (the FHIR search parser's).
Criteria = Callable[[str, list[tuple[str, str]]], Expr]

#: The letters whose grants the filter follows, per interaction (others: any letter).
_READING = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "search-system": "s",
    "history-type": "s",
    "history-system": "s",
}
#: The letters of an operation that reads the record (``$everything``, ``$dmp-export``).
READING_OPERATION = "rs"


def letters_for(interaction: str) -> str | None:
    """The scope letters whose grants decide what a request of this interaction sees; None for
    one that writes (its look-ups — the current version, a conditional match, the patient a
    reference names — return nothing to the caller, and the write itself needs its letter)."""
    return _READING.get(interaction)


def scope_condition(scopes: Scopes, resource_type: str, letters: str, criteria: Criteria | None) -> Expr:
    """What of ``resource_type`` the token's scopes let it see, for a request needing ``letters``."""
    grants = scopes.granting(resource_type, letters)
    if not grants:
        return NOTHING
    if any(not grant.query for grant in grants):
        return EVERYTHING
    if criteria is None:
        return NOTHING
    return any_of(*(criteria(resource_type, list(grant.query)) for grant in grants))
