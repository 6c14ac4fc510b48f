"""``_include`` and ``_revinclude`` rounds, the same for every backend.

Each backend finds what one include rule reaches from some resources (with the caller's scope
inside its query); following the rules round after round (``:iterate``), and keeping each resource
once, does not depend on the backend.
"""

from __future__ import annotations

from collections.abc import Callable

from storage.interface import Stored
from storage.query import Include

#: How many rounds ``:iterate`` follows: enough for a document, its author's role and organisation.
MAX_INCLUDE_ROUNDS = 4

#: What one rule reaches from some resources (``sources``), within the caller's scope.
IncludeOne = Callable[[list[Stored], Include], list[Stored]]


def follow_includes(matches: list[Stored], includes: tuple[Include, ...], include_one: IncludeOne) -> list[Stored]:
    """Everything the rules reach from ``matches``, matches excluded, each resource once."""
    seen = {m.pk for m in matches}
    included: list[Stored] = []
    frontier = matches
    for round_no in range(MAX_INCLUDE_ROUNDS):
        found: list[Stored] = []
        for inc in includes:
            if round_no > 0 and not inc.iterate:
                continue
            sources = [m for m in frontier if inc.reverse or m.resource_type == inc.source_type]
            if sources:
                found.extend(include_one(sources, inc))
        batch: list[Stored] = []
        for stored in found:
            if stored.pk not in seen:
                seen.add(stored.pk)
                batch.append(stored)
        included.extend(batch)
        frontier = batch
        if not frontier:
            break
    return included
