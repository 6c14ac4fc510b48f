"""What every request must be before an interaction reads it, however it came in (HTTP, a DMP
created through the account endpoints, a bulk import).

Why here, once: the interactions, the validator and the Bundle code walk client JSON recursively
and copy it into SQL parameters, messages and the trail. Bounding nesting, parameter counts and
lengths, and refusing the characters FHIR R4 forbids at the door keeps every one of them safe
without each re-checking: a RecursionError, an SQL statement too large, or an AuditEvent that
cannot be served as XML are no longer possible downstream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhirmodel.characters import forbidden_character
from fhirmodel.errors import FhirError, bad_request

#: JSON nesting (objects and arrays) a body may have. Real resources stay far below (the validator
#: refuses objects nested deeper than 64 inside a resource); it bounds the recursion of everything
#: that walks a body on hostile input.
MAX_DEPTH = 200


def check_parameters(params: Iterable[tuple[str, str]], max_parameters: int, max_length: int) -> None:
    """A request's parameters (URL query, form, a Bundle entry's URL): at most ``max_parameters``
    of them, ``max_length`` characters in all, no forbidden character (400)."""
    count = length = 0
    for name, value in params:
        count += 1
        length += len(name) + len(value)
        bad = forbidden_character(name) or forbidden_character(value)
        if bad:
            raise bad_request(f"a parameter holds the control character {bad}, which FHIR forbids")
    if count > max_parameters:
        raise FhirError(400, f"a request takes at most {max_parameters} parameters ({count} sent)", "too-costly")
    if length > max_length:
        raise FhirError(
            400, f"the parameters of a request hold at most {max_length} characters ({length} sent)", "too-costly"
        )


def check_path(path: str) -> None:
    """A request's path (relative to the FHIR base): no forbidden character (400)."""
    bad = forbidden_character(path)
    if bad:
        raise bad_request(f"the URL holds the control character {bad}, which FHIR forbids")


def check_body(body: Any, root: str = "the body") -> None:
    """A parsed body: nested at most :data:`MAX_DEPTH` levels, and no string (nor property name)
    holding a character FHIR forbids (400, naming where). Iterative, so any depth is safe to check;
    where a node is is kept as a chain of (parent, step) and spelled out only for the message."""
    stack: list[tuple[Any, int, _Trail]] = [(body, 0, None)]
    while stack:
        node, depth, trail = stack.pop()
        if isinstance(node, str):
            bad = forbidden_character(node)
            if bad:
                where = _spelled(body, root, trail)
                raise bad_request(f"{where}: the control character {bad} is not allowed in FHIR", expression=[where])
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_DEPTH:
            where = _spelled(body, root, trail)
            raise bad_request(f"{where}: nested deeper than {MAX_DEPTH} levels", code="structure")
        if isinstance(node, dict):
            for key, value in node.items():
                bad = forbidden_character(key)
                if bad:
                    where = _spelled(body, root, trail)
                    raise bad_request(f"{where}: a property name holds the control character {bad}")
                stack.append((value, depth + 1, (trail, key)))
        else:
            stack.extend((value, depth + 1, (trail, index)) for index, value in enumerate(node))


#: Where a node is: None for the body itself, else (where its parent is, its key or index).
_Trail = tuple[Any, str | int] | None


def _spelled(body: Any, root: str, trail: _Trail) -> str:
    """A node's place as a FHIRPath-like expression (``Patient.name[0].family``), from the
    resource type of a resource body, else ``root``."""
    steps: list[str | int] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    kind = body.get("resourceType") if isinstance(body, dict) else None
    path = kind if isinstance(kind, str) and kind.isalpha() else root
    for step in reversed(steps):
        path += f"[{step}]" if isinstance(step, int) else f".{step}"
    return path
