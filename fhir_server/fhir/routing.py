"""Routing: the FHIR interaction a request asks for, per R4 http.html.

Routing lives here rather than in Flask so that Bundle entries (batch/transaction) are routed
exactly like HTTP requests. It sits above the interactions it names; the service holds it.
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.fhir.declarations import TYPE_INTERACTIONS
from fhir_server.fhir.interactions import bundle, history, instance, paging, search, system
from fhir_server.fhir.interactions.operations import find as find_operation
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.service import FhirService, Route
from fhirmodel.errors import FhirError


def route(svc: FhirService, req: FhirRequest) -> Route:
    """The interaction a request asks for, ready to run; 405 for one its type does not offer
    (the table the CapabilityStatement lists, :mod:`fhir_server.fhir.declarations`)."""
    found = _route(svc, req)
    rtype = found.resource_type or next((s for s in (req.path or "").split("/") if s), "")
    typed = rtype in svc.served_types  # not the pages of a search, asked at the base
    if typed and found.interaction in TYPE_INTERACTIONS and not svc.declarations.allows(rtype, found.interaction):
        raise FhirError(405, f"{rtype} does not offer the {found.interaction} interaction", "not-supported")
    return found


def _route(svc: FhirService, req: FhirRequest) -> Route:
    segments = [s for s in req.path.split("/") if s] if req.path else []
    method = req.method.upper()
    if not segments:
        if method == "POST":
            kind = req.body.get("type") if isinstance(req.body, dict) else None
            work = bundle.BundleWork(svc, req)
            return Route("batch" if kind == "batch" else "transaction", work.run, prepare=work.prepare)
        if method == "GET" and any(name == "_getpages" for name, _ in req.params):
            return Route("search-type", lambda: paging.page(svc, req))
        raise FhirError(405, f"{method} is not supported at the server base", "not-supported")
    head = segments[0]
    if head == "metadata" and len(segments) == 1:
        _only(method, "GET")
        return Route("capabilities", lambda: system.capabilities(svc, req), public=True)
    if head == "_history" and len(segments) == 1:
        _only(method, "GET")
        return Route("history-system", lambda: history.history(svc, req, None, None))
    rtype = svc.resource_type(head)
    if len(segments) == 1:
        match method:
            case "GET":
                return Route("search-type", lambda: search.search(svc, req, rtype))
            case "POST":
                return _write(svc, req, rtype, "create", lambda: instance.create(svc, req, rtype))
            case "PUT":
                return _write(svc, req, rtype, "update", lambda: instance.conditional_update(svc, req, rtype))
            case "PATCH":
                return Route("patch", lambda: instance.conditional_patch(svc, req, rtype))
            case "DELETE":
                return Route("delete", lambda: instance.conditional_delete(svc, req, rtype))
        raise FhirError(405, f"{method} is not supported on {rtype}", "not-supported")
    second = segments[1]
    if second == "_search" and len(segments) == 2:
        _only(method, "POST")
        return Route("search-type", lambda: search.search(svc, req, rtype))
    if second == "_history" and len(segments) == 2:
        _only(method, "GET")
        return Route("history-type", lambda: history.history(svc, req, rtype, None))
    if second.startswith("$") and len(segments) == 2:
        return _operation(svc, req, rtype, None, second[1:], method)
    rid = svc.resource_id(second)
    if len(segments) == 2:
        match method:
            case "GET":
                return Route("read", lambda: instance.read(svc, req, rtype, rid))
            case "PUT":
                return _write(svc, req, rtype, "update", lambda: instance.update(svc, req, rtype, rid))
            case "PATCH":
                return Route("patch", lambda: instance.patch(svc, req, rtype, rid))
            case "DELETE":
                return Route("delete", lambda: instance.delete(svc, req, rtype, rid))
        raise FhirError(405, f"{method} is not supported on {rtype}/{rid}", "not-supported")
    if rtype == "Patient" and len(segments) == 3 and segments[2] in svc.served_types and method == "GET":
        searched = segments[2]  # a compartment search, R4 §3.1.1.1.1 (GET only)
        return Route("search-type", lambda: search.search(svc, req, searched, rid), resource_type=searched)
    if segments[2].startswith("$") and len(segments) == 3:
        return _operation(svc, req, rtype, rid, segments[2][1:], method)
    if segments[2] == "_history" and len(segments) in (3, 4):
        _only(method, "GET")
        if len(segments) == 3:
            return Route("history-instance", lambda: history.history(svc, req, rtype, rid))
        return Route("vread", lambda: instance.vread(svc, req, rtype, rid, segments[3]))
    raise FhirError(404, f"no such path: {req.path}", "not-found")


def _operation(svc: FhirService, req: FhirRequest, rtype: str, rid: str | None, name: str, method: str) -> Route:
    """An operation on a type (``[type]/$name``, ``rid`` None) or on one resource
    (``[type]/[id]/$name``), among those the server implements at that level."""
    operation = find_operation(svc.extensions.operations, rtype, name, "type" if rid is None else "instance")
    if operation is None:
        where = rtype if rid is None else f"{rtype}/[id]"
        raise FhirError(404, f"the operation ${name} is not supported on {where}", "not-supported")
    if method not in operation.methods:
        raise FhirError(405, f"{method} is not supported for ${name}", "not-supported")
    return Route("operation", lambda: operation.run(svc, req, rid))


def _write(svc: FhirService, req: FhirRequest, rtype: str, interaction: str, run: Callable[[], FhirResponse]) -> Route:
    """A create or update, its body validated before the request's store transaction."""
    return Route(interaction, run, prepare=lambda: instance.validate_body(svc, req, rtype))


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise FhirError(405, f"{method} is not supported here", "not-supported")
