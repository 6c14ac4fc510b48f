"""A FHIR request and response, independent of HTTP.

The HTTP layer builds a :class:`FhirRequest` from Flask's request, and a batch or transaction
builds one from each Bundle entry, so every interaction has exactly one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from storage.query import CLOSED_SCOPE, AccessScope

if TYPE_CHECKING:
    from fhir_server.guard import Guard


class RawJson:
    """A resource's JSON exactly as stored: embedded in responses without re-serialising.

    Deliberately not a dataclass: orjson would serialise a dataclass field by field.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def load(self) -> dict[str, Any]:
        return orjson.loads(self.data)


@dataclass
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, without a leading slash: "Patient/1/_history/2"
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # the parsed resource, if any
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None  # the media type of the body as sent
    assigned_id: str | None = None  # a create inside a transaction: the id chosen beforehand
    guard: Guard | None = None  # access control of this request, set by FhirService.process
    client_address: str | None = None  # the network peer, for the trail
    interaction: str | None = None  # what FhirService.process routed it to (request log, metrics)
    #: Work an entry of a transaction Bundle leaves for when every entry has run (the Bundle runs
    #: it, in the same store transaction); None outside a transaction, where such work runs at once.
    completion: list[Callable[[], None]] | None = None

    @property
    def scope(self) -> AccessScope:
        """What the caller may see, as the store's filter; nothing before access control ran."""
        return self.guard.scope if self.guard is not None else CLOSED_SCOPE

    @property
    def principal(self) -> str:
        """Who is asking: paging sessions are bound to it."""
        return self.guard.principal if self.guard is not None else ""

    @property
    def checks(self) -> Guard:
        """The request's guard; a request that reached an interaction without one is a bug."""
        if self.guard is None:
            raise RuntimeError("a request reached an interaction without access control")
        return self.guard

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            value = self.headers.get(name.lower())
        return value

    @property
    def prefer(self) -> dict[str, str]:
        """``Prefer`` preferences (``return``, ``handling``), RFC 7240."""
        out: dict[str, str] = {}
        for part in (self.header("Prefer") or "").split(","):
            key, _, value = part.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"')
        return out

    @property
    def strict(self) -> bool:
        return self.prefer.get("handling") == "strict"


@dataclass(frozen=True)
class Download:
    """A body that is a file rather than a FHIR resource (a ZIP export), sent as it is produced.

    Why a type of its own: the HTTP layer renders FHIR bodies in the negotiated format, while a
    file goes out unchanged under its own media type; an operation returning one says so by the
    body's type, so no path is special-cased. ``chunks`` is consumed once, while the response is
    sent, so a large file is never held whole in memory.
    """

    media_type: str
    chunks: Iterable[bytes]
    filename: str  # offered to the client (Content-Disposition: attachment)


@dataclass
class FhirResponse:
    status: int
    body: dict[str, Any] | RawJson | Download | None = None
    headers: dict[str, str] = field(default_factory=dict)


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
