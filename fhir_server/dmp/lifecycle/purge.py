"""``dmp-server purge``: remove the DMPs closed longer ago than the retention period (R20).

A purge is an operator's decision, run from the command line (or the operator's cron), never a
periodic job of the server: removing records for good must stay a deliberate act someone answers
for, and its summary is for that person to read.

What goes, for each DMP due: the Patient and everything of the patient's record — documents
(DocumentReference) and the Binaries and Bundles they point at in any of their versions, submission
sets and folders (List), decisions (Consent), relatives (RelatedPerson), provenance, subscriptions
naming the patient, the trail about the patient (AuditEvent), and the server's private records
about them (majority notices) — every version and every index row (:meth:`Store.expunge`), deleted
resources included. The store is then compacted (:meth:`Store.compact`) so that no freed page
keeps a value. Content another patient's document also points at is kept (the rules forbid it;
should it happen, it is not this patient's to take away).

How a purge is remembered without keeping what it removed: one AuditEvent per DMP, written in the
same transaction as the removal, naming the Patient only by its server id (``Patient/<id>``) —
never the INS, a name or a birth date — with the operator, the closure day, and how many
resources of each type went (``entity.detail``); its subtype is the ISO 21089 lifecycle event
``destroy``. Nobody reads it over the API (no token names a DMP that is gone), the operator reads
it in the store. The server assigns Patient ids (UUIDs) on creation; a client that chose an id
containing the INS (update-as-create) would leave that id in this event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from authz.audit import patient_entity, server_event
from authz.authserver.accounts import ACCOUNT_KIND, AccountBook, ins_key
from authz.lifecycle import PURGED_EVENT, closure_day, retention_end
from authz.state import ins_of
from authz.subscribers import KIND as SUBSCRIBER_KIND
from authz.terms import PATIENT
from fhir_server.dmp.lifecycle.majority import NOTICE_KIND
from fhir_server.fhir.service import FhirService
from fhirmodel.dates import add_years, instant_now
from fhirmodel.indexing import normalize_string
from storage.interface import Gone, NotFound, Store, Stored
from storage.query import (
    OPEN_SCOPE,
    Expr,
    Query,
    Reference,
    ReferenceIdentifier,
    String,
    Token,
    any_of,
)

#: Resources fetched per query page while collecting a DMP.
PAGE = 500
#: Record types bound to the patient by one reference parameter: what a DMP holds.
_BY_PATIENT = (
    ("DocumentReference", "subject"),
    ("List", "subject"),
    ("Consent", "patient"),
    ("RelatedPerson", "patient"),
    ("Provenance", "patient"),
    ("AuditEvent", "patient"),
)
_CONTENT_TYPES = ("Binary", "Bundle")


@dataclass(frozen=True)
class DmpPurge:
    """One DMP due for purge and what it holds."""

    patient_id: str
    closed_on: date
    resources: tuple[tuple[str, str], ...]  # (type, id), the Patient last
    records: tuple[tuple[str, str], ...]  # the server's private records about the patient (kind, key)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(rtype for rtype, _ in self.resources).items()))


@dataclass
class PurgeReport:
    today: date
    years: int
    dry_run: bool
    dmps: list[DmpPurge] = field(default_factory=list)
    compaction: str | None = None

    def lines(self) -> Iterator[str]:
        verb = "would remove" if self.dry_run else "removed"
        cutoff = add_years(self.today, -self.years)
        yield f"DMPs closed before {cutoff} (retention {self.years} years): {len(self.dmps)}"
        totals: Counter[str] = Counter()
        for dmp in self.dmps:
            totals.update(dmp.counts)
            counts = ", ".join(f"{rtype} {n}" for rtype, n in dmp.counts.items())
            yield f"  Patient/{dmp.patient_id} closed on {dmp.closed_on}: {verb} {len(dmp.resources)} ({counts})"
        if self.dmps:
            yield f"total {verb}: " + ", ".join(f"{rtype} {n}" for rtype, n in sorted(totals.items()))
        if self.compaction:
            yield f"store: {self.compaction}"


def purge(service: FhirService, *, today: date, years: int, dry_run: bool, operator: str) -> PurgeReport:
    """Remove (or with ``dry_run`` only list) every DMP whose retention period has ended by ``today``."""
    store = service.store
    report = PurgeReport(today, years, dry_run)
    for patient in due(service, today, years):
        if dry_run:
            report.dmps.append(collect(store, patient))
            continue
        with store.transaction():  # collected and removed under the write lock: nothing slips in between
            try:
                current = store.read("Patient", patient.id, OPEN_SCOPE)
            except (NotFound, Gone):
                continue
            end = retention_end(current.json(), years)
            if end is None or end > today:
                continue  # reopened meanwhile
            dmp = collect(store, current)
            for rtype, rid in dmp.resources:
                store.expunge(rtype, rid)
            for kind, key in dmp.records:
                store.delete_record(kind, key)
            store.create(_purge_event(dmp, operator, service.config.base_url))
        report.dmps.append(dmp)
    if report.dmps and not dry_run:
        report.compaction = store.compact()
    return report


def due(service: FhirService, today: date, years: int) -> list[Stored]:
    """The closed DMPs whose retention period has ended by ``today``: found by the index (closure
    date, or for a DMP closed without the extension the day it was last written), then judged by
    the same rule that refuses to reopen them (:func:`authz.lifecycle.retention_end`)."""
    cutoff = add_years(today, -years).isoformat()
    searches = (
        [("active", "false"), ("closure-date", f"le{cutoff}")],
        [("active", "false"), ("closure-date:missing", "true"), ("_lastUpdated", f"le{cutoff}")],
    )
    found: dict[str, Stored] = {}
    for params in searches:
        where = service.parser.criteria("Patient", params)
        for patient in _all(service.store, "Patient", where, deleted=False):
            end = retention_end(patient.json(), years)
            if end is not None and end <= today:
                found[patient.id] = patient
    return [found[pid] for pid in sorted(found)]


def collect(store: Store, patient: Stored) -> DmpPurge:
    """Everything of the DMP of ``patient``, deleted resources and all versions' content included."""
    record = patient.json()
    pid = patient.id
    ins = ins_of(record)
    found: dict[tuple[str, str], None] = {}
    for rtype, param in _BY_PATIENT:
        about = any_of(*(ReferenceIdentifier(param, s, v) for s, v in ins), Reference(param, "Patient", pid))
        for stored in _all(store, rtype, about):
            found[(rtype, stored.id)] = None
    trail = any_of(*(Token("entity-identifier", s, v) for s, v in ins))
    for stored in _all(store, "AuditEvent", trail):
        found[("AuditEvent", stored.id)] = None
    documents = [rid for rtype, rid in found if rtype == "DocumentReference"]
    for content in _content_of(store, documents):
        found[content] = None
    names = [normalize_string(v) for _, v in ins] + [normalize_string(pid)]
    for stored in _all(store, "Subscription", any_of(*(String("criteria", n, "contains") for n in names))):
        versions = _versions(store, "Subscription", stored.id)  # a deleted one: its last criteria
        if any(_names_patient(str(v.get("criteria", "")), pid, ins) for v in versions):
            found[("Subscription", stored.id)] = None
    closed_on = closure_day(record)
    assert closed_on is not None  # only closed DMPs are collected
    return DmpPurge(
        patient_id=pid,
        closed_on=closed_on,
        resources=(*sorted(found), ("Patient", pid)),
        records=_private_records(store, pid, ins, [rid for rtype, rid in found if rtype == "Subscription"]),
    )


def _private_records(
    store: Store, pid: str, ins: list[tuple[str, str]], subscriptions: list[str]
) -> tuple[tuple[str, str], ...]:
    """The server's own records about the patient: majority notices, the subscribers of the
    DMP's Subscriptions, and the patient's login account (a legal representative's account is
    theirs, not the record's: it stays)."""
    notices = [(NOTICE_KIND, key) for key in store.record_keys(NOTICE_KIND) if key.startswith(f"{pid}/")]
    subscribers = [(SUBSCRIBER_KIND, sid) for sid in subscriptions if store.get_record(SUBSCRIBER_KIND, sid)]
    book = AccountBook(store)
    accounts = [(ACCOUNT_KIND, ins_key(i)) for i in ins if (a := book.get(i)) is not None and a.role == PATIENT]
    return (*notices, *subscribers, *accounts)


def _names_patient(criteria: str, pid: str, ins: list[tuple[str, str]]) -> bool:
    """Whether a subscription's criteria name this patient in a parameter value (the index only
    found the text somewhere in it: ``Patient/p1`` is also in ``Patient/p10``)."""
    values = [v for _, joined in parse_qsl(criteria.partition("?")[2]) for v in joined.split(",")]
    numbers = {value for _, value in ins}
    return any(
        v in (pid, f"Patient/{pid}") or v.endswith(f"/Patient/{pid}") or v.rpartition("|")[2] in numbers
        for v in values
    )


def _content_of(store: Store, documents: list[str]) -> list[tuple[str, str]]:
    """The Binaries and Bundles the documents point at, in any version, that no other document
    points at (R1 forbids sharing content across patients; if it happened, it is kept)."""
    mine = set(documents)
    content: set[tuple[str, str]] = set()
    for did in documents:
        for version in _versions(store, "DocumentReference", did):
            content.update(_attachments(version))
    kept = []
    for rtype, rid in sorted(content):
        pointing = {s.id for s in _all(store, "DocumentReference", Reference("attachment", rtype, rid))}
        if pointing <= mine and store.exists(rtype, rid) is not None:
            kept.append((rtype, rid))
    return kept


def _attachments(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for item in document.get("content") or []:
        parts = str((item.get("attachment") or {}).get("url", "")).rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] in _CONTENT_TYPES:
            yield parts[-2], parts[-1]


def _versions(store: Store, rtype: str, rid: str) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        page = store.history(OPEN_SCOPE, rtype, rid, offset=offset, count=PAGE)
        yield from (s.json() for s in page.entries if s.content is not None)
        offset += len(page.entries)
        if not page.entries or offset >= page.total:
            return


def _all(store: Store, rtype: str, where: Expr, *, deleted: bool = True) -> Iterator[Stored]:
    """Every match of ``where`` (deleted resources too, by default), page by page."""
    offset, watermark = 0, None
    while True:
        query = Query(rtype, where, offset=offset, count=PAGE, total=False, watermark=watermark, deleted=deleted)
        result = store.search(query, OPEN_SCOPE)
        yield from result.matches
        if len(result.matches) < PAGE:
            return
        offset, watermark = offset + PAGE, result.watermark


def _purge_event(dmp: DmpPurge, operator: str, server: str) -> dict[str, Any]:
    entity = patient_entity(None, dmp.patient_id)
    entity["detail"] = [{"type": rtype, "valueString": str(n)} for rtype, n in dmp.counts.items()]
    return server_event(
        action="D",
        lifecycle=PURGED_EVENT,
        agent=f"dmp-server purge, run by {operator}",
        entities=[entity],
        description=f"DMP closed on {dmp.closed_on} purged after its retention period (R20)",
        recorded=instant_now(),
        server=server,
    )
