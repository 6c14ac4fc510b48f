"""The store interface every backend implements, and what it returns.

The store knows FHIR resources, versions and search indexes; it knows nothing of HTTP, tokens
or DMP rules. It executes the filter it is given (see :mod:`storage.query`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from storage.query import AccessScope, Query, Watermark


class StoreError(Exception):
    """Base of the errors a store raises about the data (never about its own failures)."""


class NotFound(StoreError):
    pass


class Gone(StoreError):
    """The resource existed and was deleted."""

    def __init__(self, resource_type: str, resource_id: str, version: int):
        super().__init__(f"{resource_type}/{resource_id} was deleted")
        self.version = version


class VersionConflict(StoreError):
    """The caller's expected version is not the current one (``If-Match``)."""


class AlreadyExists(StoreError):
    pass


@dataclass(frozen=True)
class Stored:
    """One version of a resource as kept by the store."""

    pk: int  # creation sequence of the resource (stable across versions)
    seq: int | None  # sequence of this version in the whole history (None: read as the current one)
    resource_type: str
    id: str
    version: int
    last_updated: str
    method: str | None  # POST, PUT, PATCH or DELETE: what produced it (None: read as the current one)
    content: bytes | None  # JSON, None for a deletion

    @property
    def deleted(self) -> bool:
        return self.content is None

    def json(self) -> dict[str, Any]:
        if self.content is None:
            raise ValueError("a deleted version has no content")
        return orjson.loads(self.content)


class Queued(NamedTuple):
    """A message of the outbox not yet acknowledged."""

    id: int
    payload: bytes
    attempts: int  # failed deliveries so far (see :meth:`Store.defer`)


@dataclass(frozen=True)
class SearchResult:
    matches: list[Stored]
    included: list[Stored]
    total: int | None
    watermark: Watermark


@dataclass(frozen=True)
class HistoryPage:
    entries: list[Stored]
    total: int
    watermark: Watermark


#: Told of one write of a watched type, inside its transaction: the resource type, and its content
#: before and after the write (None: absent, deleted or expunged).
WriteObserver = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class Store(ABC):
    """A FHIR resource store. Writes happen inside :meth:`transaction`; reads may too, and then
    see the transaction's own writes."""

    _observers: tuple[tuple[frozenset[str], WriteObserver], ...] = ()

    def observe(self, resource_types: frozenset[str], observer: WriteObserver) -> None:
        """Have ``observer`` called on every write (create, update, delete, expunge) of these types,
        after the write and inside its transaction, so that what it writes in turn commits or
        rolls back with it. What a layer above derives from these resources (a cache of them)
        can so be invalidated by every writer, whatever path the write came by."""
        self._observers = (*self._observers, (resource_types, observer))

    def watched(self, resource_type: str) -> bool:
        """Whether a write of this type is to be observed: only then is its content before read."""
        return any(resource_type in types for types, _ in self._observers)

    def _observed(self, resource_type: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """Backends call this after each write of a :meth:`watched` type, in its transaction."""
        for types, observer in self._observers:
            if resource_type in types:
                observer(resource_type, before, after)

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside land together or not at all."""

    @abstractmethod
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction` (its writes land with it)."""

    @abstractmethod
    def create(self, resource: dict[str, Any], *, method: str = "POST") -> Stored:
        """Store a new resource. ``resource['id']`` must be set by the caller."""

    def log(self, resources: list[dict[str, Any]]) -> None:
        """Create new resources that many requests write and few read (the trail's AuditEvents):
        all of them or, on an error, none; durable when this returns, and seen by every read that
        starts after it, but possibly written into the store's indexes later, in batches. A
        backend without a cheaper way creates them in one transaction."""
        with self.transaction():
            for resource in resources:
                self.create(resource)

    @abstractmethod
    def update(self, resource: dict[str, Any], *, expected_version: int | None = None, method: str = "PUT") -> Stored:
        """Store a new version of an existing (possibly deleted) resource."""

    @abstractmethod
    def delete(self, resource_type: str, resource_id: str, *, expected_version: int | None = None) -> Stored:
        """Mark a resource deleted (a new, empty version); returns that version."""

    @abstractmethod
    def expunge(self, resource_type: str, resource_id: str) -> int:
        """Forget a resource entirely: every version and every index value, as if it had never
        been stored (a purge of a DMP past its retention, R20). Unlike :meth:`delete`, nothing is
        left to tell that it existed, and its id may be used again. Returns how many versions were
        removed (0 when nothing is held under that id).

        What a backend frees may still hold the data until it is overwritten: call
        :meth:`compact` once the expunges are done.
        """

    @abstractmethod
    def compact(self) -> str:
        """Make the storage freed by expunges hold none of their data any more, and give it back
        (SQLite: ``VACUUM``, then the write-ahead log truncated). Slow on a large store: for an
        operator's purge, not for a request. Returns a short report for the operator, saying
        when part of it could not be done now (another process reading)."""

    @abstractmethod
    def read(self, resource_type: str, resource_id: str, scope: AccessScope) -> Stored:
        """The current version; :class:`NotFound` if absent or outside ``scope``, :class:`Gone` if
        deleted."""

    @abstractmethod
    def vread(self, resource_type: str, resource_id: str, version: int, scope: AccessScope) -> Stored:
        """One version (a deletion is returned as a version with no content)."""

    @abstractmethod
    def search(self, query: Query, scope: AccessScope) -> SearchResult:
        """Matches of ``query AND scope``, a page of them, and their includes (also scoped)."""

    @abstractmethod
    def history(
        self,
        scope: AccessScope,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: str | None = None,
        offset: int = 0,
        count: int = 20,
        watermark: Watermark | None = None,
        at: tuple[str, str] | None = None,
    ) -> HistoryPage:
        """Versions, newest first, of one resource, one type or everything, within ``scope``.

        ``since``: versions written at or after that instant. ``at`` (R4 ``_at``), a period
        ``[start, end)`` of instants: the versions that were current at some moment of it — written
        before ``end``, and not replaced (by a later version within the watermark) at or before
        ``start``. Instants are the store's fixed-width UTC text, so they compare as text.
        """

    @abstractmethod
    def exists(self, resource_type: str, resource_id: str) -> int | None:
        """The current version number, or None when the id was never used (deleted counts)."""

    @abstractmethod
    def reindex(self, resource_type: str | None = None) -> int:
        """Recompute the search index of every current resource (of one type, or all): needed
        after SearchParameters in ``ig/`` change. Returns how many resources were reindexed."""

    @abstractmethod
    def save_session(self, data: bytes, ttl_seconds: int) -> str:
        """Keep an opaque paging state; returns an unguessable key for it."""

    @abstractmethod
    def load_session(self, key: str) -> bytes | None:
        """The paging state saved under ``key``, or None when unknown or expired."""

    @abstractmethod
    def enqueue(self, topic: str, payload: bytes) -> int:
        """Queue a message (an alert to deliver...) durably, inside the current transaction."""

    @abstractmethod
    def pending(self, topic: str, limit: int = 100, *, now: int | None = None) -> list[Queued]:
        """Queued messages of ``topic`` not yet acknowledged, oldest first; with ``now`` (epoch
        seconds), only those due by then (a deferred message waits until its time)."""

    @abstractmethod
    def acknowledge(self, message_id: int) -> None:
        """Forget a queued message once delivered (or given up): it is never returned again, and
        its payload — about a patient — is not kept once it served."""

    @abstractmethod
    def defer(self, message_id: int, until: int, attempts: int) -> None:
        """After a failed delivery: keep the message, not due before ``until`` (epoch seconds),
        with ``attempts`` failures so far. The sender's clock decides, so retries follow it."""

    # -- private records: the authorisation server's state (accounts, one-time codes, clients) --

    @abstractmethod
    def put_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None) -> None:
        """Keep a small private record under ``(kind, key)``, replacing any; sealed like resources.

        ``expires`` (epoch seconds) lets :meth:`add_record` and :meth:`purge_records` treat the
        record as gone; readers that care about time compare it with their own clock.
        """

    @abstractmethod
    def add_record(self, kind: str, key: str, value: bytes, *, expires: int | None = None, now: int) -> bool:
        """Keep a record only if none is held under ``(kind, key)`` (or the one held expired by
        ``now``): True when added. Atomic, so it can refuse a replayed assertion id or a code."""

    @abstractmethod
    def get_record(self, kind: str, key: str) -> tuple[bytes, int | None] | None:
        """A record's value and expiry, expired or not, or None."""

    @abstractmethod
    def record_mark(self, kind: str, key: str) -> bytes | None:
        """A digest of the record's value as stored (sealed), or None: there is no record. Each
        write seals the value anew (a new nonce), so the mark changes with every write (without
        encryption, with every new value): a reader that kept what it decoded from a value can
        tell it still holds without opening it again."""

    @abstractmethod
    def delete_record(self, kind: str, key: str) -> bool:
        """Forget a record; True if there was one."""

    @abstractmethod
    def record_keys(self, kind: str) -> list[str]:
        """The keys held under ``kind`` (for listings and jobs), in key order."""

    @abstractmethod
    def purge_records(self, now: int) -> int:
        """Forget every record expired by ``now``; returns how many."""

    @abstractmethod
    def rewrap_all(self, batch: int = 500) -> int:
        """Re-wrap every stored data key under the active master key (after a rotation), in
        transactions of ``batch`` rows; contents are not re-encrypted. Returns how many blobs were
        re-wrapped (those already under the active key are left alone)."""

    @abstractmethod
    def key_ids_in_use(self) -> set[str]:
        """The ids of the master keys still wrapping stored data: only the others may be retired."""

    @abstractmethod
    def start_upkeep(self) -> None:
        """Start what the store does on its own while this process serves requests (the SQLite
        store checkpoints its log, and moves the trail's journal in, on a thread); stopped by
        :meth:`close`."""

    @abstractmethod
    def close(self) -> None: ...
