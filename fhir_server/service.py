"""The FHIR service: everything a request needs, and routing of a request to its interaction.

Built once by the app factory (or a test) and shared by all requests. Routing lives here rather
than in Flask so that Bundle entries (batch/transaction) are routed exactly like HTTP requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_server.config import Config
from fhir_server.errors import FhirError, bad_request
from fhir_server.messages import FhirRequest, FhirResponse
from fhir_server.search.parser import SearchParser
from fhir_server.validation import ResourceValidator
from fhirmodel.indexing import extract_index
from fhirmodel.searchparams import SearchParamRegistry
from fhirmodel.terminology import Terminology
from storage.interface import Store

#: The resource types this server serves; the CapabilityStatement is generated from this list.
SERVED_TYPES: tuple[str, ...] = (
    "AuditEvent",
    "Binary",
    "Bundle",
    "Consent",
    "Device",
    "DocumentReference",
    "List",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Provenance",
    "RelatedPerson",
    "Subscription",
)

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass
class FhirService:
    config: Config
    store: Store
    registry: SearchParamRegistry
    terminology: Terminology
    parser: SearchParser
    validator: ResourceValidator
    served_types: tuple[str, ...] = SERVED_TYPES
    capability: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        from fhir_server.capability import capability_statement

        self.capability = capability_statement(self.registry, self.served_types, self.config.base_url)

    def index(self, resource: dict[str, Any]) -> Any:
        return extract_index(self.registry, resource, self.config.base_url)

    def handle(self, req: FhirRequest) -> FhirResponse:
        """Route a request to its interaction."""
        from fhir_server.interactions import bundle, history, instance, search, system

        segments = [s for s in req.path.split("/") if s] if req.path else []
        method = req.method.upper()
        if not segments:
            if method == "POST":
                return bundle.process(self, req)
            if method == "GET" and any(name == "_getpages" for name, _ in req.params):
                return search.page(self, req)
            raise FhirError(405, f"{method} is not supported at the server base", "not-supported")
        head = segments[0]
        if head == "metadata" and len(segments) == 1:
            if method != "GET":
                raise FhirError(405, "metadata supports GET only", "not-supported")
            return system.capabilities(self, req)
        if head == "_history" and len(segments) == 1:
            self._only(method, "GET")
            return history.history(self, req, None, None)
        rtype = self.resource_type(head)
        if len(segments) == 1:
            match method:
                case "GET":
                    return search.search(self, req, rtype)
                case "POST":
                    return instance.create(self, req, rtype)
                case "PUT":
                    return instance.conditional_update(self, req, rtype)
                case "PATCH":
                    return instance.conditional_patch(self, req, rtype)
                case "DELETE":
                    return instance.conditional_delete(self, req, rtype)
            raise FhirError(405, f"{method} is not supported on {rtype}", "not-supported")
        second = segments[1]
        if second == "_search" and len(segments) == 2:
            self._only(method, "POST")
            return search.search(self, req, rtype)
        if second == "_history" and len(segments) == 2:
            self._only(method, "GET")
            return history.history(self, req, rtype, None)
        rid = self.resource_id(second)
        if len(segments) == 2:
            match method:
                case "GET":
                    return instance.read(self, req, rtype, rid)
                case "PUT":
                    return instance.update(self, req, rtype, rid)
                case "PATCH":
                    return instance.patch(self, req, rtype, rid)
                case "DELETE":
                    return instance.delete(self, req, rtype, rid)
            raise FhirError(405, f"{method} is not supported on {rtype}/{rid}", "not-supported")
        if segments[2] == "_history" and len(segments) in (3, 4):
            self._only(method, "GET")
            if len(segments) == 3:
                return history.history(self, req, rtype, rid)
            return instance.vread(self, req, rtype, rid, segments[3])
        raise FhirError(404, f"no such path: {req.path}", "not-found")

    def resource_type(self, name: str) -> str:
        if name not in self.served_types:
            raise FhirError(404, f"resource type '{name}' is not served here", "not-supported")
        return name

    @staticmethod
    def resource_id(value: str) -> str:
        if not _ID_RE.match(value):
            raise bad_request(f"'{value}' is not a valid resource id")
        return value

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise FhirError(405, f"{method} is not supported here", "not-supported")
