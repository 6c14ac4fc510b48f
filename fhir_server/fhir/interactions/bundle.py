"""Batch and transaction Bundles (R4 http.html §3.1.0.11).

A transaction runs inside one store transaction: it lands whole or not at all. Before anything
is written, ``fullUrl``s are mapped to their final identities (new ids for creates, matches for
conditional creates and updates) and every reference to them in the Bundle is rewritten, as are
conditional references (``Patient?identifier=...``). Entries then run in the order the
specification fixes: DELETE, POST, PUT, PATCH, GET. Each entry goes through the same
interaction code as a plain HTTP request.

What an entry leaves for the end of the transaction (``FhirRequest.completion``: e.g. a replaced
document superseded once every entry ran) runs after the last entry, inside the same store
transaction. A failing entry, or such work, fails the whole Bundle; its OperationOutcome
names the entry (``Bundle.entry[i].resource.type``).

A transaction a capability checks as a whole (``Extensions.bundle_checks``: an IHE MHD ITI-65
Provide Document Bundle) is checked as a message before anything else, then as metadata once
references are resolved, before its entries run.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_server.fhir.inbound import check_body, check_parameters
from fhir_server.fhir.interactions.instance import matches
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.patching import JSON_PATCH_TYPE
from fhir_server.fhir.service import FhirService, Submission
from fhirmodel.errors import FhirError, bad_request
from fhirmodel.ids import new_id
from fhirmodel.rawjson import RawJson
from fhirmodel.schema import is_resource_type

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3, "GET": 4, "HEAD": 4}
_HEADERS = {
    "ifMatch": "If-Match",
    "ifNoneMatch": "If-None-Match",
    "ifNoneExist": "If-None-Exist",
    "ifModifiedSince": "If-Modified-Since",
}
MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    index: int
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    full_url: str | None
    resource: Any
    assigned: str | None = None  # "Type/id" the entry's resource will have
    existing: Any = None  # a conditional create that found its match
    response: dict[str, Any] = field(default_factory=dict)


class BundleWork:
    """A batch or transaction in two steps, so that the request's store transaction (which holds
    the writer lock of all workers) starts after what needs no store: :meth:`prepare` parses the
    entries and runs the checks of the Bundle as sent (an ITI-65's validation and CDA parsing);
    :meth:`run` does the rest, preparing first if nobody did."""

    def __init__(self, svc: FhirService, req: FhirRequest):
        self._svc, self._req = svc, req
        self._ready: Callable[[], FhirResponse] | None = None

    def prepare(self) -> None:
        self._ready = _prepare(self._svc, self._req)

    def run(self) -> FhirResponse:
        if self._ready is None:
            self.prepare()
        assert self._ready is not None
        return self._ready()


def _prepare(svc: FhirService, req: FhirRequest) -> Callable[[], FhirResponse]:
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base needs a batch or transaction Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(f"Bundle.type must be batch or transaction, not {kind!r}", expression=["Bundle.type"])
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
        raise bad_request(f"Bundle.entry must be a list of at most {MAX_ENTRIES} entries")
    if kind == "batch":
        for check in svc.extensions.bundle_checks:
            check.check_batch(bundle)
        return lambda: _batch(svc, req, raw_entries)
    entries = [_parse_entry(svc, i, e) for i, e in enumerate(raw_entries)]
    submissions = _checked(svc, bundle, entries)
    return lambda: _transaction(svc, req, entries, submissions)


def _parse_entry(svc: FhirService, index: int, entry: Any) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise bad_request(f"{where}: a request is required", expression=[f"{where}.request"])
    request = entry["request"]
    method = request.get("method")
    url = request.get("url")
    if not isinstance(method, str) or method not in _ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}: request.method and request.url are required", expression=[f"{where}.request"])
    base = svc.config.base_url + "/"
    if url.startswith(base):
        url = url[len(base) :]
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    check_parameters(params, svc.config.max_parameters, svc.config.max_query_length)
    headers = {h: request[k] for k, h in _HEADERS.items() if isinstance(request.get(k), str)}
    resource = entry.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise bad_request(f"{where}: {method} needs a resource", expression=[f"{where}.resource"])
    full_url = entry.get("fullUrl")
    return _Entry(
        index,
        method,
        parts.path.strip("/"),
        params,
        headers,
        full_url if isinstance(full_url, str) else None,
        copy.deepcopy(resource) if resource is not None else None,
    )


def _request_for(
    req: FhirRequest, entry: _Entry, completion: list[Callable[[], None]] | None = None, validated: bool = False
) -> FhirRequest:
    body = entry.resource
    content_type = "application/fhir+json"
    if entry.method == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
        # A JSON Patch travels in a Binary inside a Bundle.
        content_type = body.get("contentType", "")
        if not content_type.startswith(JSON_PATCH_TYPE):
            raise bad_request(f"Bundle.entry[{entry.index}]: a Binary PATCH must hold {JSON_PATCH_TYPE}")
        try:
            body = orjson.loads(base64.b64decode(body.get("data", ""), validate=True))
        except (ValueError, orjson.JSONDecodeError):
            raise bad_request(f"Bundle.entry[{entry.index}]: the JSON Patch in the Binary is not valid") from None
        check_body(body, f"Bundle.entry[{entry.index}].resource.data")  # JSON the request's own checks never saw
    return FhirRequest(
        method=entry.method,
        path=entry.path,
        params=entry.params,
        body=body,
        headers={**entry.headers, "Prefer": req.header("Prefer") or ""},
        content_type=content_type,
        guard=req.guard,
        client_address=req.client_address,
        assigned_id=entry.assigned.split("/")[1] if entry.assigned and entry.method == "POST" else None,
        completion=completion,
        validated=validated,
    )


def _response_entry(svc: FhirService, resp: FhirResponse, with_resource: bool) -> dict[str, Any]:
    status = resp.status
    response: dict[str, Any] = {"status": f"{status} {_REASONS.get(status, '')}".strip()}
    for header, key in (("Location", "location"), ("ETag", "etag")):
        if header in resp.headers:
            response[key] = resp.headers[header]
    out: dict[str, Any] = {"response": response}
    if isinstance(resp.body, RawJson | dict) and (with_resource or status >= 400):
        if isinstance(resp.body, dict) and resp.body.get("resourceType") == "OperationOutcome":
            response["outcome"] = resp.body
        else:
            out["resource"] = resp.body
    return out


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
}


def _batch(svc: FhirService, req: FhirRequest, raw_entries: list[Any]) -> FhirResponse:
    with_resource = req.prefer.get("return") == "representation"
    out = []
    for i, raw in enumerate(raw_entries):
        is_get = False
        try:
            entry = _parse_entry(svc, i, raw)
            is_get = entry.method == "GET"
            if not entry.path:
                raise bad_request("a batch entry cannot itself be a batch or transaction")
            resp = svc.handle(_request_for(req, entry))
        except FhirError as exc:
            resp = FhirResponse(exc.status, exc.outcome(), exc.headers)
        out.append(_response_entry(svc, resp, with_resource or is_get))
    return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": out})


def _checked(svc: FhirService, bundle: dict[str, Any], entries: list[_Entry]) -> list[Submission]:
    """A transaction's checks that need no store, and the capabilities' checks of it as a whole."""
    seen: set[str] = set()
    for entry in entries:
        if entry.full_url:
            if entry.full_url in seen:
                raise bad_request(f"Bundle.entry[{entry.index}]: duplicate fullUrl {entry.full_url}")
            seen.add(entry.full_url)
        if not entry.path:
            raise bad_request(f"Bundle.entry[{entry.index}]: a transaction cannot contain a batch or transaction")
    submissions = [s for check in svc.extensions.bundle_checks if (s := check.submission(svc, bundle, entries))]
    for submission in submissions:
        submission.check_resources()
    return submissions


def _transaction(
    svc: FhirService, req: FhirRequest, entries: list[_Entry], submissions: list[Submission]
) -> FhirResponse:
    with_resource = req.prefer.get("return") == "representation"
    with svc.store.transaction():
        mapping = _assign_identities(svc, req, entries)
        resolved: dict[str, str] = {}  # conditional references: each searched once, all before any write
        for entry in entries:
            if entry.resource is not None:
                entry.resource = _rewrite(svc, req, entry, entry.resource, mapping, resolved)
        for submission in submissions:
            submission.validate(req)
        left: list[tuple[_Entry, list[Callable[[], None]]]] = []
        for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
            if entry.existing is not None:
                resp = FhirResponse(
                    200,
                    req.checks.present(entry.existing),
                    {
                        "Location": f"{svc.config.base_url}/{entry.assigned}/_history/{entry.existing.version}",
                        "ETag": f'W/"{entry.existing.version}"',
                    },
                )
            else:
                left.append((entry, []))
                with _in_entry(entry):
                    validated = any(s.vouches_for(entry) for s in submissions)
                    resp = svc.handle(_request_for(req, entry, left[-1][1], validated))
            entry.response = _response_entry(svc, resp, with_resource or entry.method == "GET")
        for entry, work in left:
            for step in work:
                with _in_entry(entry):
                    step()
    return FhirResponse(
        200,
        {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [e.response for e in entries],
        },
    )


@contextmanager
def _in_entry(entry: _Entry) -> Iterator[None]:
    """An error of an entry, or of what it left for the end, as the Bundle's: the message says which
    entry, and elements of the entry's resource are named where they are in the Bundle."""
    try:
        yield
    except FhirError as exc:
        prefix = f"Bundle.entry[{entry.index}] ({entry.method} {entry.path})"
        issues = [
            {**issue, "diagnostics": f"{prefix}: {issue.get('diagnostics', '')}"}
            | ({"expression": _located(entry, issue["expression"])} if issue.get("expression") else {})
            for issue in exc.issues
        ]
        raise FhirError(
            exc.status,
            f"{prefix}: {exc.message}",
            exc.code,
            expression=_located(entry, exc.expression),
            headers=exc.headers,
            issues=issues,
        ) from None


def _located(entry: _Entry, expressions: list[str]) -> list[str]:
    """``DocumentReference.type`` of a POST or PUT entry's resource as ``Bundle.entry[i].resource.type``
    (a PATCH entry's resource is the patch, not the resource it names)."""
    if entry.method not in ("POST", "PUT"):
        return expressions
    rtype = entry.path.split("/")[0]
    where = f"Bundle.entry[{entry.index}].resource"
    return [
        where + path[len(rtype) :] if path == rtype or path.startswith((f"{rtype}.", f"{rtype}[")) else path
        for path in expressions
    ]


def _assign_identities(svc: FhirService, req: FhirRequest, entries: list[_Entry]) -> dict[str, str]:
    """``fullUrl`` → ``Type/id`` for every entry whose resource will exist after the transaction."""
    mapping: dict[str, str] = {}
    for entry in entries:
        segments = entry.path.split("/")
        rtype = segments[0]
        if entry.method == "POST":
            svc.resource_type(rtype)
            if "If-None-Exist" in entry.headers:
                where = svc.parser.criteria(rtype, parse_qsl(entry.headers["If-None-Exist"].lstrip("?")))
                found = matches(svc, req, rtype, where)
                if len(found) > 1:
                    raise FhirError(
                        412, f"Bundle.entry[{entry.index}]: ifNoneExist matches several resources", "duplicate"
                    )
                if found:
                    entry.existing = found[0]
                    entry.assigned = f"{rtype}/{found[0].id}"
            if entry.assigned is None:
                entry.assigned = f"{rtype}/{new_id()}"
        elif entry.method == "PUT":
            if len(segments) == 2:
                entry.assigned = entry.path
            elif not entry.params:
                raise bad_request(
                    f"Bundle.entry[{entry.index}] (PUT {entry.path}): an update names the resource, by id "
                    f"({rtype}/[id]) or by search criteria ({rtype}?...)",
                    expression=[f"Bundle.entry[{entry.index}].request.url"],
                )
            else:
                found = matches(svc, req, rtype, svc.parser.criteria(rtype, entry.params))
                if len(found) > 1:
                    raise FhirError(
                        412, f"Bundle.entry[{entry.index}]: conditional update matches several", "multiple-matches"
                    )
                rid = found[0].id if found else (entry.resource or {}).get("id") or new_id()
                entry.assigned = f"{rtype}/{rid}"
                entry.path, entry.params = entry.assigned, []
                entry.resource["id"] = rid
        if entry.full_url and entry.assigned:
            mapping[entry.full_url] = entry.assigned
    return mapping


def _rewrite(
    svc: FhirService, req: FhirRequest, entry: _Entry, node: Any, mapping: dict[str, str], resolved: dict[str, str]
) -> Any:
    """Replace references to Bundle entries (and conditional references, each found once in
    ``resolved``) with real ones."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = _resolve_reference(svc, req, entry, value, mapping, resolved)
            elif key == "div" and isinstance(value, str):
                for full_url, target in mapping.items():
                    value = value.replace(f'"{full_url}"', f'"{svc.config.base_url}/{target}"')
                out[key] = value
            else:
                out[key] = _rewrite(svc, req, entry, value, mapping, resolved)
        return out
    if isinstance(node, list):
        return [_rewrite(svc, req, entry, v, mapping, resolved) for v in node]
    if isinstance(node, str) and node in mapping:
        # uri/url elements naming an entry (e.g. an attachment's url): the new absolute URL.
        return f"{svc.config.base_url}/{mapping[node]}"
    return node


def _resolve_reference(
    svc: FhirService, req: FhirRequest, entry: _Entry, ref: str, mapping: dict[str, str], resolved: dict[str, str]
) -> str:
    """The reference ``ref`` stands for. A conditional one is searched once per transaction: all
    are resolved before any entry is written, so the same query finds the same resource (an ITI-65
    Bundle names its patient by INS in its List and in each DocumentReference)."""
    if ref in mapping:
        return mapping[ref]
    if ref in resolved:
        return resolved[ref]
    rtype, sep, query = ref.partition("?")
    if sep and is_resource_type(rtype) and "/" not in rtype:
        svc.resource_type(rtype)
        found = matches(svc, req, rtype, svc.parser.criteria(rtype, parse_qsl(query)))
        if len(found) != 1:
            raise FhirError(
                412,
                f"Bundle.entry[{entry.index}]: conditional reference '{ref}' matches {len(found)} resources",
                "not-found" if not found else "multiple-matches",
            )
        resolved[ref] = f"{rtype}/{found[0].id}"
        return resolved[ref]
    return ref
