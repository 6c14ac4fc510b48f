"""System-level interactions that are not about a resource type: ``metadata``."""

from __future__ import annotations

from fhir_server.messages import FhirRequest, FhirResponse
from fhir_server.service import FhirService


def capabilities(svc: FhirService, req: FhirRequest) -> FhirResponse:
    return FhirResponse(200, svc.capability)
