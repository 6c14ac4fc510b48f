"""A stored resource's JSON bytes, carried as they are from the store to the response.

Reading a resource and sending it back is the common case: keeping its bytes (rather than parsing
and re-serialising them) makes a read cost what copying it costs. Only what must look inside (XML,
``_elements``) materialises it.
"""

from __future__ import annotations

from typing import Any

import orjson


class RawJson:
    """A resource's JSON exactly as stored: embedded in responses without re-serialising.

    Deliberately not a dataclass: orjson would serialise a dataclass field by field.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def load(self) -> dict[str, Any]:
        return orjson.loads(self.data)


def dumps(body: Any) -> bytes:
    """Serialise a response body; stored resources are spliced in as they are."""
    return orjson.dumps(body, default=_raw_fragment)


def _raw_fragment(obj: Any) -> Any:
    if isinstance(obj, RawJson):
        return orjson.Fragment(obj.data)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def materialize(body: Any) -> Any:
    """The same body with every :class:`RawJson` parsed: for XML and for ``_elements``."""
    if isinstance(body, RawJson):
        return body.load()
    if isinstance(body, dict):
        return {k: materialize(v) for k, v in body.items()}
    if isinstance(body, list):
        return [materialize(v) for v in body]
    return body
