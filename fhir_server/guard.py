"""What the FHIR layer asks of access control, per request.

The server core does not know the DMP rules; it knows that every request has a :class:`Guard`
— built by the :class:`Gatekeeper` from the request's credentials — that supplies the filter the
store adds to every query, refuses reads and writes the rules forbid, shapes what leaves the
server, and records the request in the trail. ``authz.gate`` implements it for the DMP.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from fhir_server.messages import FhirRequest, RawJson
from storage.interface import Stored
from storage.query import AccessScope, Expr


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
