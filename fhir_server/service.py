"""The FHIR service: everything a request needs, and routing of a request to its interaction.

Built once by the app factory (or a test) and shared by all requests. Routing lives here rather
than in Flask so that Bundle entries (batch/transaction) are routed exactly like HTTP requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.config import Config
from fhir_server.documents.codes import DocumentCodes
from fhir_server.errors import FhirError, bad_request
from fhir_server.guard import Gatekeeper
from fhir_server.messages import Download, FhirRequest, FhirResponse
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


@dataclass(frozen=True)
class Route:
    """A routed request: its FHIR interaction (restful-interaction code) and how to run it."""

    interaction: str
    run: Callable[[], FhirResponse]
    public: bool = False  # answered without credentials (the CapabilityStatement)


@dataclass
class FhirService:
    config: Config
    store: Store
    registry: SearchParamRegistry
    terminology: Terminology
    parser: SearchParser
    validator: ResourceValidator
    gatekeeper: Gatekeeper
    document_codes: DocumentCodes  # what a DocumentReference may say it is (CONTRACT §5)
    served_types: tuple[str, ...] = SERVED_TYPES
    capability: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        from fhir_server.capability import capability_statement

        self.capability = capability_statement(self.registry, self.served_types, self.config.base_url)

    def index(self, resource: dict[str, Any]) -> Any:
        return extract_index(self.registry, resource, self.config.base_url)

    def process(self, req: FhirRequest) -> FhirResponse:
        """A client's request, end to end: access control, the interaction, the trail.

        A write and its AuditEvent land in one transaction; a refused or failed request still
        leaves its AuditEvent, written after the rollback.
        """
        try:
            route: Route | FhirError = self.route(req)
        except FhirError as exc:
            route = exc
        interaction = route.interaction if isinstance(route, Route) else "unknown"
        req.interaction = interaction
        if isinstance(route, Route) and route.public:
            return route.run()
        guard = self.gatekeeper.guard(req, interaction)
        if isinstance(route, FhirError):
            raise route
        req.guard = guard
        try:
            if req.method.upper() in ("GET", "HEAD"):
                response = route.run()
                guard.record(req, interaction, response.status, None)
                return response
            with self.store.transaction():
                response = route.run()
                guard.finish()
                guard.record(req, interaction, response.status, None)
                return response
        except FhirError as exc:
            guard.record(req, interaction, exc.status, exc.message)
            raise

    def handle(self, req: FhirRequest) -> FhirResponse:
        """Carry out a request whose access control is already in place (Bundle entries).

        A Bundle entry holds a resource, never a file: an operation answering with a download is
        refused here (before any of the file is produced) rather than dropped from the response.
        """
        response = self.route(req).run()
        if isinstance(response.body, Download):
            raise bad_request(f"{req.path} answers with a file, which a Bundle entry cannot hold: call it directly")
        return response

    def route(self, req: FhirRequest) -> Route:
        """The interaction a request asks for, ready to run."""
        from fhir_server.interactions import bundle, history, instance, search, system

        segments = [s for s in req.path.split("/") if s] if req.path else []
        method = req.method.upper()
        if not segments:
            if method == "POST":
                kind = req.body.get("type") if isinstance(req.body, dict) else None
                return Route("batch" if kind == "batch" else "transaction", lambda: bundle.process(self, req))
            if method == "GET" and any(name == "_getpages" for name, _ in req.params):
                return Route("search-type", lambda: search.page(self, req))
            raise FhirError(405, f"{method} is not supported at the server base", "not-supported")
        head = segments[0]
        if head == "metadata" and len(segments) == 1:
            self._only(method, "GET")
            return Route("capabilities", lambda: system.capabilities(self, req), public=True)
        if head == "_history" and len(segments) == 1:
            self._only(method, "GET")
            return Route("history-system", lambda: history.history(self, req, None, None))
        rtype = self.resource_type(head)
        if len(segments) == 1:
            match method:
                case "GET":
                    return Route("search-type", lambda: search.search(self, req, rtype))
                case "POST":
                    return Route("create", lambda: instance.create(self, req, rtype))
                case "PUT":
                    return Route("update", lambda: instance.conditional_update(self, req, rtype))
                case "PATCH":
                    return Route("patch", lambda: instance.conditional_patch(self, req, rtype))
                case "DELETE":
                    return Route("delete", lambda: instance.conditional_delete(self, req, rtype))
            raise FhirError(405, f"{method} is not supported on {rtype}", "not-supported")
        second = segments[1]
        if second == "_search" and len(segments) == 2:
            self._only(method, "POST")
            return Route("search-type", lambda: search.search(self, req, rtype))
        if second == "_history" and len(segments) == 2:
            self._only(method, "GET")
            return Route("history-type", lambda: history.history(self, req, rtype, None))
        if second.startswith("$") and len(segments) == 2:
            return self._operation(req, rtype, None, second[1:], method)
        rid = self.resource_id(second)
        if len(segments) == 2:
            match method:
                case "GET":
                    return Route("read", lambda: instance.read(self, req, rtype, rid))
                case "PUT":
                    return Route("update", lambda: instance.update(self, req, rtype, rid))
                case "PATCH":
                    return Route("patch", lambda: instance.patch(self, req, rtype, rid))
                case "DELETE":
                    return Route("delete", lambda: instance.delete(self, req, rtype, rid))
            raise FhirError(405, f"{method} is not supported on {rtype}/{rid}", "not-supported")
        if segments[2].startswith("$") and len(segments) == 3:
            return self._operation(req, rtype, rid, segments[2][1:], method)
        if segments[2] == "_history" and len(segments) in (3, 4):
            self._only(method, "GET")
            if len(segments) == 3:
                return Route("history-instance", lambda: history.history(self, req, rtype, rid))
            return Route("vread", lambda: instance.vread(self, req, rtype, rid, segments[3]))
        raise FhirError(404, f"no such path: {req.path}", "not-found")

    def _operation(self, req: FhirRequest, rtype: str, rid: str | None, name: str, method: str) -> Route:
        """An operation on a type (``[type]/$name``, ``rid`` None) or on one resource
        (``[type]/[id]/$name``), among those the server implements at that level."""
        from fhir_server.interactions import operations

        operation = operations.find(rtype, name, "type" if rid is None else "instance")
        if operation is None:
            where = rtype if rid is None else f"{rtype}/[id]"
            raise FhirError(404, f"the operation ${name} is not supported on {where}", "not-supported")
        self._only(method, operation.method)
        return Route("operation", lambda: operation.run(self, req, rid))

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
