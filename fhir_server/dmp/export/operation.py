"""``GET Patient/[id]/$dmp-export``: the patient downloads their record as a ZIP (DMP-RULES R22).

Parameter ``part`` (repeatable, or comma-separated): ``documents``, ``authorisations``, ``trail``;
all three when absent. The answer is ``application/zip``, streamed (``export.zipstream``), laid out
as :mod:`fhir_server.dmp.export.record` describes; its OperationDefinition is
``ig/OperationDefinition/OperationDefinition-dmp-export.json``.

Who may export is the policy's decision (the patient and their legal representatives, for their
patient only); what the archive holds is what those callers can read, R12 and R13 included. The
request is checked, and recorded in the trail, before the first byte is sent; the archive is then
produced while it is sent, from the record as it was when it was asked for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fhir_server.dmp.export.record import PART_TYPES, PARTS, RecordExport
from fhir_server.dmp.export.zipstream import stream_zip
from fhir_server.fhir.interactions.compartment import PatientRecord, read_patient
from fhir_server.fhir.messages import Download, FhirRequest, FhirResponse
from fhir_server.fhir.service import Extensions, Operation
from fhirmodel.errors import bad_request
from storage.query import Query

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

#: The canonical of the OperationDefinition in ``ig/OperationDefinition``.
DMP_EXPORT = "https://dmp.example.org/fhir/OperationDefinition/dmp-export"
PART = "part"
_IGNORED = frozenset({"_format", "_pretty"})


def parts_asked(params: list[tuple[str, str]]) -> tuple[str, ...]:
    """The parts named by ``part`` (in archive order); all of them when none is named."""
    named: list[str] = []
    for name, value in params:
        if name in _IGNORED:
            continue
        if name != PART:
            raise bad_request(f"$dmp-export has no parameter '{name}' (only '{PART}')")
        for item in value.split(","):
            if item.strip() not in PARTS:
                raise bad_request(f"$dmp-export: part '{item.strip()}' is not one of {', '.join(PARTS)}")
            named.append(item.strip())
    return tuple(p for p in PARTS if p in named) if named else PARTS


def dmp_export(svc: FhirService, req: FhirRequest, patient_id: str | None) -> FhirResponse:
    """A streamed ZIP of the parts asked for of the patient's record."""
    assert patient_id is not None  # an instance-level operation
    parts = parts_asked(req.params)
    reads = ("Patient", *(t for part in parts for t in PART_TYPES[part]))
    req.checks.check_operation("Patient", "dmp-export", reads)
    record = PatientRecord(read_patient(svc, req, patient_id))
    moment = datetime.now(UTC)
    watermark = svc.store.search(Query("Patient", record.member("Patient"), count=0), req.scope).watermark
    export = RecordExport(
        svc, req, record, parts, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), watermark
    )
    filename = f"dmp-{patient_id}-{moment:%Y%m%d-%H%M%S}.zip"
    return FhirResponse(
        200, Download("application/zip", stream_zip(export.members(), export.manifest, moment), filename)
    )


#: The export capability as the FHIR machinery sees it (see :mod:`fhir_server.fhir.service`).
EXPORT = Extensions(
    operations=(Operation("Patient", "dmp-export", DMP_EXPORT, dmp_export, method="GET", level="instance"),)
)
