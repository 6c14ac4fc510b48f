"""Composite search parameters (R4 search.html §3.1.1.4.14, e.g. DocumentReference ``relationship``
= ``relation$relatedRef``): values of several components that must come from the same element.

Why a key: each element's combination of component values is indexed as one token whose code is
the components' values joined by ``$`` (as a search writes them), in every form a search may name
each value — a token as ``code`` and ``system|code``, a reference as ``Type/id`` and ``id`` (or its
URL). A search value then becomes one token equality, which every backend answers from its token
index without a new kind of query, and two components can never match from two different elements.
Components are compared by equality only: prefixes (date, number, quantity) are not supported in a
composite and such a value is refused.
"""

from __future__ import annotations

from fhirmodel.indexing import parse_reference

#: Component types a composite key can hold (equality makes sense for them).
KEYED_TYPES = frozenset({"token", "reference", "uri"})


def search_form(component_type: str, raw: str, base_url: str) -> str:
    """A searched component value in the form :func:`fhirmodel.indexing.component_keys` indexes
    it under (joined with the others by :func:`fhirmodel.indexing.composite_key`)."""
    if component_type == "reference":
        rtype, rid, url = parse_reference(raw, base_url)
        if url is not None:  # an absolute URL, or a bare id: indexed as they are
            return raw
        return f"{rtype}/{rid}" if rtype else str(rid)
    return raw
