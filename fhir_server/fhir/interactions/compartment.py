"""A patient's record as queries: which resources of each served type belong to one patient.

Membership follows the R4 CompartmentDefinition ``patient`` (the reference parameters that link a
resource of each type to the patient), restricted to the types served here, plus the content
(Binary, Bundle) that belongs to the record through the documents pointing at it. A reference
counts whether it is literal (``Patient/[id]``) or logical (the patient's identifier, as DMP
Consents and documents name the INS).

Membership only ever narrows a query: the store adds the caller's scope to every query built from
it, so what a caller cannot see is neither returned nor counted (R12, R13 and the rest of the
policy apply inside the query, never to a page after the fact).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fhir_server.fhir.messages import FhirRequest
from fhirmodel.errors import not_found
from storage.interface import Gone, NotFound, Stored
from storage.query import ANY_SYSTEM, Expr, Has, Query, Reference, ReferenceIdentifier, Token, any_of

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

#: R4 CompartmentDefinition/patient, for the served types: the parameters linking each to the
#: patient (the Patient itself is its own compartment's first member).
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "RelatedPerson": ("patient",),
    "DocumentReference": ("subject", "author"),
    "List": ("subject", "source"),
    "Consent": ("patient",),
    "Provenance": ("patient",),
    "Device": ("patient",),
    "AuditEvent": ("patient",),
}
#: Content resources: part of the record through the documents whose attachment points at them.
CONTENT_TYPES = ("Binary", "Bundle")
#: Every type of a patient's record, in the order a whole-record answer lists them.
RECORD_TYPES: tuple[str, ...] = (
    "Patient",
    "RelatedPerson",
    "DocumentReference",
    *CONTENT_TYPES,
    "List",
    "Consent",
    "Provenance",
    "Device",
    "AuditEvent",
)
#: How many resources one query of :func:`each` fetches.
BATCH = 100


class PatientRecord:
    """The membership expressions of one stored Patient's record."""

    def __init__(self, patient: Stored):
        self.patient = patient
        resource = patient.json()
        self.identifiers: list[tuple[str, str]] = [
            (str(i["system"]), str(i["value"]))
            for i in resource.get("identifier") or []
            if isinstance(i, dict) and i.get("system") and i.get("value")
        ]

    def member(self, resource_type: str, documents: Expr | None = None) -> Expr:
        """Resources of ``resource_type`` in the record; content is reached through ``documents``
        (by default every document of the record), so narrowing the documents narrows it too."""
        if resource_type == "Patient":
            return Token("_id", ANY_SYSTEM, self.patient.id)
        if resource_type in CONTENT_TYPES:
            return Has("DocumentReference", "attachment", documents or self.member("DocumentReference"))
        params = PATIENT_COMPARTMENT.get(resource_type)
        if params is None:
            raise ValueError(f"{resource_type} is not part of a patient's record")
        return any_of(*(self._refers(param) for param in params))

    def _refers(self, param: str) -> Expr:
        return any_of(
            Reference(param, "Patient", self.patient.id),
            *(ReferenceIdentifier(param, system, value) for system, value in self.identifiers),
        )


def each(svc: FhirService, req: FhirRequest, query: Query) -> Iterator[Stored]:
    """Every match of ``query`` (within the caller's scope), fetched :data:`BATCH` at a time so
    that a large record is never loaded at once; ``query.watermark`` keeps the set stable."""
    offset = 0
    while True:
        page = replace(query, offset=offset, count=BATCH, total=False, includes=())
        found = svc.store.search(page, req.scope).matches
        yield from found
        if len(found) < BATCH:
            return
        offset += BATCH


def read_patient(svc: FhirService, req: FhirRequest, patient_id: str) -> Stored:
    """The Patient, among those the caller sees: another patient's is not found (R1)."""
    try:
        return svc.store.read("Patient", patient_id, req.scope)
    except (NotFound, Gone):
        raise not_found(f"Patient/{patient_id} is not known") from None


def identifier_of(patient: Stored) -> dict[str, Any] | None:
    """The patient's first identifier, as a FHIR Identifier (to name whose record a file holds)."""
    idents = PatientRecord(patient).identifiers
    return {"system": idents[0][0], "value": idents[0][1]} if idents else None
