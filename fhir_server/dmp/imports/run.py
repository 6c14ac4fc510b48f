"""Running an import: each unit as a request of the FHIR service, by the operator's identity,
remembered once done.

Why through :meth:`FhirService.process` rather than into the store: an imported record must be
what a client could have written — validated, indexed, encrypted, checked by the DMP rules — and
the trail must say who brought it in. The operator's identity is a token the command line mints
with the server's own key (``credentials``), bound like any token to the one patient a unit is
about (R1); so a unit about two patients is refused, as it would be over HTTP.

Resuming: a unit done is a private record of the store (kind ``import``, keyed by the file's
digest and the unit's place), written in the same store transaction as the unit itself. A
restarted import skips those; a unit that failed is not marked and is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from authz.terms import INS_SYSTEMS
from fhir_server.dmp.imports.sources import Unit
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.service import FhirService
from fhirmodel.errors import FhirError
from fhirmodel.indexing import patient_id_in
from storage.interface import Gone, NotFound, Store
from storage.query import OPEN_SCOPE

log = logging.getLogger(__name__)

#: The store's private records of the units done.
IMPORT_KIND = "import"
#: The ``Authorization`` header for a unit about the patient of this INS (None: about no record).
Credentials = Callable[[str | None], str]


@dataclass(frozen=True)
class Outcome:
    """What became of a unit: ``skipped`` (done by an earlier run), else its status and, when it
    failed (wholly, or some entries of a batch), why."""

    unit: Unit
    status: int = 0
    problem: str | None = None
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return self.problem is not None


class Importer:
    def __init__(self, service: FhirService, credentials: Credentials):
        self.service = service
        self.credentials = credentials

    def run(self, unit: Unit) -> Outcome:
        """Carry out one unit unless an earlier run did; its writes, its AuditEvent and its mark
        commit together (a failure leaves only its AuditEvent)."""
        store = self.service.store
        if store.get_record(IMPORT_KIND, unit.key) is not None:
            return Outcome(unit, skipped=True)
        ins = patient_of(store, unit.body)
        request = FhirRequest(
            method=unit.method,
            path=unit.path,
            body=unit.body,
            headers={"Authorization": self.credentials(ins), "Prefer": "return=minimal"},
            content_type="application/fhir+json",
        )
        with store.transaction():
            try:
                response = self.service.process(request)
            except FhirError as exc:
                return Outcome(unit, exc.status, exc.message)
            except Exception:  # a bug: reported (and in the trail), the import goes on
                log.exception("importing %s failed", unit.where)
                return Outcome(unit, 500, "the server failed on it (see the log)")
            store.put_record(IMPORT_KIND, unit.key, orjson.dumps({"where": unit.where, "status": response.status}))
        return Outcome(unit, response.status, _failed_entries(response))


def _failed_entries(response: FhirResponse) -> str | None:
    """For a batch: how many of its entries were refused (they are not retried: the others are in)."""
    body = response.body
    if not isinstance(body, dict) or body.get("type") != "batch-response":
        return None
    failed = [e for e in body.get("entry", []) if not str(e.get("response", {}).get("status", "")).startswith("2")]
    return f"{len(failed)} of its {len(body['entry'])} entries were refused" if failed else None


def patient_of(store: Store, body: Any) -> str | None:
    """The INS of the patient a unit is about: a Patient it holds, else the ``subject`` or
    ``patient`` of its resources (by INS identifier, or a stored Patient's literal reference);
    None for a unit about no record (the directory)."""
    resources = _resources(body)
    for resource in resources:
        if resource.get("resourceType") == "Patient":
            ins = _ins(resource.get("identifier"))
            if ins:
                return ins
    for resource in resources:
        for element in ("subject", "patient"):
            reference = resource.get(element)
            if not isinstance(reference, dict):
                continue
            ins = _ins([reference.get("identifier")]) or _stored_ins(store, reference.get("reference"))
            if ins:
                return ins
    return None


def _resources(body: Any) -> list[dict[str, Any]]:
    """The resource itself, or the resources of a Bundle's entries."""
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") != "Bundle":
        return [body]
    entries = body.get("entry")
    found = [e.get("resource") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    return [r for r in found if isinstance(r, dict)]


def _ins(identifiers: Any) -> str | None:
    for identifier in identifiers if isinstance(identifiers, list) else []:
        if isinstance(identifier, dict) and identifier.get("system") in INS_SYSTEMS:
            value = identifier.get("value")
            if isinstance(value, str):
                return value
    return None


def _stored_ins(store: Store, reference: Any) -> str | None:
    pid = patient_id_in(reference) if isinstance(reference, str) else None
    if pid is None:
        return None
    try:
        return _ins(store.read("Patient", pid, OPEN_SCOPE).json().get("identifier"))
    except (NotFound, Gone):
        return None
