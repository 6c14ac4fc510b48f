"""A FHIR request and response, independent of HTTP, and the access control that guards it.

The HTTP layer builds a :class:`FhirRequest` from Flask's request, and a batch or transaction
builds one from each Bundle entry, so every interaction has exactly one implementation.

The server core does not know the DMP rules; it knows that every request has a :class:`Guard`
— built by the :class:`Gatekeeper` from the request's credentials — that supplies the filter the
store adds to every query, refuses reads and writes the rules forbid, shapes what leaves the
server, and records the request in the trail. ``authz.gate`` implements it for the DMP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fhirmodel.rawjson import RawJson
from storage.interface import Stored
from storage.query import CLOSED_SCOPE, AccessScope, Expr


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
    #: The body was validated against R4 as it is now, by the transaction that carries it (an
    #: ITI-65 checks every resource before its store transaction): a create or update need not
    #: walk it again. Never set from HTTP.
    validated: bool = False

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


class Guard(Protocol):
    @property
    def principal(self) -> str:
        """A stable key for the caller: paging sessions are bound to it."""

    @property
    def scope(self) -> AccessScope:
        """The per-type filter the store adds inside every query."""

    def check_read(self, resource_type: str, interaction: str) -> None:
        """Raise FhirError (403) when the caller may not read this type here at all."""

    def check_operation(self, resource_type: str, name: str, reads: tuple[str, ...]) -> None:
        """Raise FhirError (403) when the caller may not invoke ``$name`` here at all; ``reads``
        are the types the operation will read (each within :attr:`scope`)."""

    @property
    def requester(self) -> dict[str, Any]:
        """Who is asking, as files made for them name them: ``{"role": code, "who": Reference}``."""

    def check_search(self, resource_type: str, params: list[tuple[str, str]]) -> None:
        """Raise FhirError (400) when a search lacks a parameter the server requires, (403) when
        it is about someone the caller may not ask about."""

    def check_write(
        self, method: str, resource_type: str, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        """Raise FhirError (403/404/422) when the rules forbid this change."""

    def after_write(self, method: str, stored: Stored, old: dict[str, Any] | None) -> None:
        """What a change entails, in the same transaction (e.g. the consents a new DMP starts with)."""

    def finish(self) -> None:
        """Checks that only hold for the request as a whole, before its transaction commits."""

    def present(self, stored: Stored) -> RawJson | dict[str, Any]:
        """A stored resource as this caller may see it (parts hidden from them removed)."""

    def record(self, req: FhirRequest, interaction: str, status: int, reason: str | None) -> None:
        """Trace the request (inside the caller's transaction when it writes)."""


class Gatekeeper(Protocol):
    def guard(self, req: FhirRequest, interaction: str) -> Guard:
        """The guard of one request; FhirError 401 for missing or bad credentials, 403 for an
        identified caller refused outright (the refusal is recorded before it is raised)."""

    def use_criteria(self, criteria: Callable[[str, list[tuple[str, str]]], Expr]) -> None:
        """How search parameters on a type become a store condition: the server's search parser,
        handed over once built (access may be granted as searches: SMART granular scopes)."""

    def subscriber_scope(self, subscription_id: str, moment: datetime) -> AccessScope | None:
        """What the person who set up a Subscription may see at ``moment``, as a store filter; None
        when they see nothing any more. A notification never names what its recipient could not
        read."""
