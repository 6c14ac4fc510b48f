"""System-level interactions that are not about a resource type: ``metadata``."""

from __future__ import annotations

from fhir_server.fhir.capability import capability_of
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.service import FhirService


def capabilities(svc: FhirService, req: FhirRequest) -> FhirResponse:
    return FhirResponse(200, capability_of(svc))
