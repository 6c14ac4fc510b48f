"""``GET Patient/[id]/$everything`` (R4 OperationDefinition Patient-everything): the record at once.

The answer is a ``searchset`` Bundle of the patient's compartment (:mod:`compartment`): the
Patient, related persons, documents and their content, submission sets, Consents, and the trail
when the caller reads it. Each type is one store query whose filter is the caller's scope, so the
record is exactly what the caller could find by searching type by type (R10–R14, R17); ``total``
adds up those queries' counts and pages run across the types in a fixed order, every page cut by
the queries themselves.

Parameters (all optional, each at most once):

- ``start``, ``end`` (date): care dates. Documents by ``period`` (the care documented), or their
  ``date`` when they carry no period; their content follows them; submission sets, Consents and
  the trail by their ``date``. Types with no care date (the Patient, related persons, devices) are
  returned whatever the range.
- ``_since`` (instant): only resources changed since then (``_lastUpdated``).
- ``_type``: a comma-separated list of record types to return.
- ``_count``: the page size (``DMP_DEFAULT_COUNT``, at most ``DMP_MAX_COUNT``).

Later pages go through the server's paging links (``[base]?_getpages=``), bound to the caller and
to the record as it was when the first page was asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_server.fhir.interactions.compartment import RECORD_TYPES, PatientRecord, read_patient
from fhir_server.fhir.interactions.search import entry, page_url, paged_params, paging_links
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhirmodel.errors import bad_request
from storage.interface import Stored
from storage.query import EVERYTHING as NO_CONDITION
from storage.query import Expr, Missing, Query, Watermark, all_of, any_of

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

#: The canonical of the R4 OperationDefinition.
EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
#: The care dates of each type (``start``/``end``): the first parameter, or the next ones for a
#: resource that has no value for it.
CARE_DATES: dict[str, tuple[str, ...]] = {
    "DocumentReference": ("period", "date"),
    "List": ("date",),
    "Consent": ("date",),
    "AuditEvent": ("date",),
    "Provenance": ("recorded",),
}
_PARAMETERS = frozenset({"start", "end", "_since", "_type", "_count"})
_IGNORED = frozenset({"_format", "_pretty"})
_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")


@dataclass(frozen=True)
class Selection:
    """What part of the record a request asks for, validated."""

    start: str | None
    end: str | None
    since: str | None
    types: tuple[str, ...]
    count: int
    applied: list[tuple[str, str]]  # the parameters as given, for links and the paging session


def selection(svc: FhirService, params: list[tuple[str, str]]) -> Selection:
    """The request's parameters; 400 naming the first that is unknown, repeated or malformed."""
    given: dict[str, str] = {}
    for name, value in params:
        if name in _IGNORED:
            continue
        if name not in _PARAMETERS:
            raise bad_request(f"$everything has no parameter '{name}' (start, end, _since, _type, _count)")
        if name in given:
            raise bad_request(f"$everything: '{name}' is given more than once")
        given[name] = value
    for name in ("start", "end"):
        if name in given and not _DATE.match(given[name]):
            raise bad_request(f"$everything: {name} must be a date (YYYY, YYYY-MM or YYYY-MM-DD)")
    types = RECORD_TYPES
    if "_type" in given:
        wanted = {t.strip() for t in given["_type"].split(",")}
        unknown = sorted(wanted - set(RECORD_TYPES))
        if unknown or not wanted:
            raise bad_request(
                f"$everything: _type {', '.join(unknown) or '(empty)'} is not part of a patient's record here;"
                f" choose among {', '.join(RECORD_TYPES)}"
            )
        types = tuple(t for t in RECORD_TYPES if t in wanted)
    count = svc.config.default_count
    if "_count" in given:
        if not given["_count"].isdigit():
            raise bad_request("$everything: _count must be a non-negative integer")
        count = min(int(given["_count"]), svc.config.max_count)
    applied: list[tuple[str, str]] = [
        (name, given[name]) for name in ("start", "end", "_since", "_type", "_count") if name in given
    ]
    return Selection(given.get("start"), given.get("end"), given.get("_since"), types, count, applied)


class RecordQueries:
    """The query of each record type for one patient and one selection (dates, ``_since``)."""

    def __init__(self, svc: FhirService, record: PatientRecord, chosen: Selection):
        self._svc = svc
        self._record = record
        self._chosen = chosen
        self._documents = self._own("DocumentReference")

    def where(self, resource_type: str) -> Expr:
        if resource_type in ("Binary", "Bundle"):
            member = self._record.member(resource_type, self._documents)
        else:
            member = self._own(resource_type)
        return all_of(member, self._since(resource_type))

    def _own(self, resource_type: str) -> Expr:
        return all_of(self._record.member(resource_type), self._care_dates(resource_type))

    def _care_dates(self, resource_type: str) -> Expr:
        bounds = [(f"ge{self._chosen.start}", self._chosen.start), (f"le{self._chosen.end}", self._chosen.end)]
        if not any(given for _, given in bounds):
            return NO_CONDITION
        params = CARE_DATES.get(resource_type, ())
        branches: list[Expr] = []
        for position, param in enumerate(params):
            criteria = [(param, value) for value, given in bounds if given]
            in_range = self._svc.parser.criteria(resource_type, criteria)
            absent_before = [Missing(p, True) for p in params[:position]]
            branches.append(all_of(*absent_before, in_range))
        return any_of(*branches) if branches else NO_CONDITION

    def _since(self, resource_type: str) -> Expr:
        if self._chosen.since is None:
            return NO_CONDITION
        return self._svc.parser.criteria(resource_type, [("_lastUpdated", f"ge{self._chosen.since}")])


def everything(svc: FhirService, req: FhirRequest, patient_id: str | None) -> FhirResponse:
    """The first page of a patient's record."""
    assert patient_id is not None  # an instance-level operation
    chosen = selection(svc, req.params)
    return _page(svc, req, patient_id, chosen, offset=0, watermark=None, session_key=None)


def page(svc: FhirService, req: FhirRequest, state: dict[str, Any], offset: int) -> FhirResponse:
    """A later page, from the paging session the first one saved (``_count`` may change)."""
    chosen = selection(svc, paged_params(state, req))
    key = dict(req.params)["_getpages"]
    return _page(svc, req, state["id"], chosen, offset=offset, watermark=state["watermark"], session_key=key)


def _page(
    svc: FhirService,
    req: FhirRequest,
    patient_id: str,
    chosen: Selection,
    *,
    offset: int,
    watermark: Watermark | None,
    session_key: str | None,
) -> FhirResponse:
    req.checks.check_operation("Patient", "everything", chosen.types)
    record = PatientRecord(read_patient(svc, req, patient_id))
    queries = RecordQueries(svc, record, chosen)
    matches: list[Stored] = []
    total = 0
    skip, room = offset, chosen.count
    for rtype in chosen.types:
        query = Query(rtype, queries.where(rtype), offset=skip, count=room, total=True, watermark=watermark)
        result = svc.store.search(query, req.scope)
        watermark = result.watermark  # every later query sees the record as the first one did
        assert result.total is not None
        matches += result.matches
        room -= len(result.matches)
        skip = max(0, skip - result.total)
        total += result.total
    assert watermark is not None

    def save() -> str:
        session = {
            "kind": "everything",
            "type": "Patient",
            "id": patient_id,
            "params": chosen.applied,
            "watermark": watermark,
            "principal": req.principal,
        }
        return svc.sessions.save(session)

    if session_key is not None:
        self_url = page_url(svc, session_key, chosen.count)(offset)
    else:
        asked = f"?{urlencode(chosen.applied)}" if chosen.applied else ""
        self_url = f"{svc.config.base_url}/Patient/{patient_id}/$everything{asked}"
    links = paging_links(svc, self_url, session_key, save, offset, chosen.count, len(matches), total)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if matches:
        bundle["entry"] = [entry(svc, req, stored, "match") for stored in matches]
    return FhirResponse(200, bundle)
