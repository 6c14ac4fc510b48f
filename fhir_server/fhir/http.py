"""HTTP ↔ FHIR: turn a Flask request into a :class:`FhirRequest` and the answer back into HTTP.

Only transport concerns live here: formats, body limits, raw Binary content, status codes and
headers. What the request means is decided by :meth:`FhirService.handle`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from fhir_server.fhir.formats.negotiation import (
    CONTENT_TYPES,
    JSON,
    acceptable,
    format_of,
    media_type,
    parse_body,
    prefers,
    render,
    response_format,
    wants_content,
)
from fhir_server.fhir.messages import Download, FhirRequest, FhirResponse
from fhir_server.fhir.service import BinaryPage, FhirService, NotShown
from fhirmodel.base64_chunks import compact_base64, decoded_chunks, decoded_size
from fhirmodel.errors import FhirError, operation_outcome
from fhirmodel.rawjson import RawJson

log = logging.getLogger(__name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_FORM = "application/x-www-form-urlencoded"


def register_routes(app: Flask, svc: FhirService) -> None:
    base = svc.config.base_path

    def view(path: str = "") -> Response:
        return _dispatch(svc, path)

    app.add_url_rule(base or "/", "fhir_base", view, methods=METHODS, strict_slashes=False)
    app.add_url_rule(f"{base}/<path:path>", "fhir", view, methods=METHODS)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if isinstance(exc, RequestEntityTooLarge):
            message = f"the request body is larger than the {svc.config.max_body} bytes allowed"
        else:
            message = exc.description or exc.name
        code = {404: "not-found", 405: "not-supported", 413: "too-costly"}.get(status, "processing")
        return _outcome_response(status, operation_outcome("error", code, message), JSON)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error")
        outcome = operation_outcome("fatal", "exception", "internal server error")
        return _outcome_response(500, outcome, JSON)


def _outcome_response(
    status: int, outcome: dict[str, Any], fmt: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(render(outcome, fmt), status=status, headers=headers or {}, content_type=CONTENT_TYPES[fmt])


def _dispatch(svc: FhirService, path: str) -> Response:
    admission = _Admission(svc, path)
    fhir_req = FhirRequest(
        method="GET" if request.method == "HEAD" else request.method,
        path=path,
        params=list(request.args.items(multi=True)),
        headers=dict(request.headers),
        content_type=request.headers.get("Content-Type"),
        client_address=request.remote_addr,
    )
    try:
        resp = svc.process(fhir_req, admission)
        if isinstance(resp.body, Download):
            return _download(resp, resp.body, request.method == "HEAD")
        format_param, accept, accepted = admission.format_param, admission.accept, admission.accepted
        if format_param is None and prefers(accept, HTML):
            page = _page(svc.extensions.binary_page, fhir_req, resp, fhir_format=accepted is not None)
            if page is not None:
                return page
        raw = _raw_binary(fhir_req, resp, format_param, accept)
        if raw is not None:
            return raw
        if accepted is None:
            raise _not_acceptable()
        pretty = dict(fhir_req.params).get("_pretty") == "true"
        return _http_response(resp, admission.fmt, request.method == "HEAD", pretty)
    except FhirError as exc:
        return _outcome_response(exc.status, exc.outcome(), admission.fmt, exc.headers)


def _not_acceptable() -> FhirError:
    return FhirError(406, "this server answers in application/fhir+json or application/fhir+xml", "not-supported")


class _Admission:
    """Reads what a request carries once its credentials are known (``FhirService.process`` calls
    it after access control): the body (bounded, parsed) and the format of the answer, refusing
    early (406) a client that accepts no format a FHIR answer can have.

    What it found is kept for the response: the format negotiated, ``_format`` and ``Accept``.
    """

    def __init__(self, svc: FhirService, path: str):
        self.svc = svc
        self.path = path
        self.format_param: str | None = request.args.get("_format")
        self.accept: str | None = request.headers.get("Accept")
        self.accepted: str | None = JSON
        self.fmt: str = JSON  # what errors are answered in: the format asked for, if it is one
        with contextlib.suppress(FhirError):
            self.fmt = response_format(self.format_param, self.accept) or JSON

    def __call__(self, req: FhirRequest) -> None:
        self.accepted = response_format(self.format_param, self.accept)
        self.fmt = self.accepted or JSON
        try:
            data = self._read(req)
        except RequestEntityTooLarge:
            raise self._too_large() from None
        # A search POSTed as a form may carry its result parameters in the body, like the others.
        if self.format_param is None and any(name == "_format" for name, _ in req.params):
            self.format_param = dict(req.params)["_format"]
            self.accepted = response_format(self.format_param, self.accept)
            self.fmt = self.accepted or JSON
        if self.accepted is None and not _may_answer_other_content(self.path):
            raise _not_acceptable()
        if data:
            body = _binary_body(self.path, data, req.content_type)
            req.body = body if body is not None else parse_body(data, req.content_type)

    def _read(self, req: FhirRequest) -> bytes:
        """The raw body (a form's fields go to the parameters instead), within the size limit."""
        limit = _limit_for(self.svc, self.path)
        if request.content_length is not None and request.content_length > limit:
            raise self._too_large()
        if media_type(req.content_type) == _FORM:
            req.params += list(request.form.items(multi=True))
            return b""
        if req.method not in ("POST", "PUT", "PATCH"):
            return b""
        data = request.get_data(cache=False)
        if len(data) > limit:
            raise self._too_large()
        return data

    def _too_large(self) -> FhirError:
        limit = _limit_for(self.svc, self.path)
        return FhirError(413, f"the request body is larger than the {limit} bytes allowed", "too-costly")


def _may_answer_other_content(path: str) -> bool:
    """Whether the answer may be other than FHIR: a Binary read answers the document's own bytes and
    an operation may answer a file (``$dmp-export``). For those, ``Accept`` is judged once the
    answer is known; any other request a client cannot take the answer of is refused unrun."""
    segments = path.split("/")
    return segments[0] == "Binary" or segments[-1].startswith("$")


def _limit_for(svc: FhirService, path: str) -> int:
    """Requests that carry a document (a Binary, ITI-105's DocumentReference with inline data,
    ITI-106's Parameters) get the larger Binary limit when one is set."""
    segments = path.split("/")
    carries_document = segments[0] == "Binary" or segments in (
        ["DocumentReference"],
        ["DocumentReference", "$generate-metadata"],
    )
    if carries_document and svc.config.max_binary_body:
        return svc.config.max_binary_body
    return svc.config.max_body


def _binary_body(path: str, data: bytes, content_type: str | None) -> dict[str, Any] | None:
    """Raw content sent to ``Binary`` (a PDF, a CDA document...) becomes a Binary resource."""
    segments = path.split("/")
    if segments[0] != "Binary" or len(segments) > 2 or format_of(content_type or "") is not None:
        return None
    binary: dict[str, Any] = {
        "resourceType": "Binary",
        "contentType": media_type(content_type) or "application/octet-stream",
        "data": base64.b64encode(data).decode("ascii"),
    }
    if len(segments) == 2:
        binary["id"] = segments[1]
    security_context = request.headers.get("X-Security-Context")
    if security_context:
        binary["securityContext"] = {"reference": security_context}
    return binary


def _read_binary(req: FhirRequest, resp: FhirResponse) -> dict[str, Any] | None:
    """The Binary a ``GET Binary/[id]`` (or its vread) answered, as stored; None for any other
    request or answer (a 304 has none)."""
    segments = req.path.split("/")
    if req.method != "GET" or segments[0] != "Binary" or len(segments) < 2:
        return None
    binary = resp.body.load() if isinstance(resp.body, RawJson) else resp.body
    return binary if isinstance(binary, dict) and binary.get("resourceType") == "Binary" else None


def _page(renderer: BinaryPage | None, req: FhirRequest, resp: FhirResponse, fhir_format: bool) -> Response | None:
    """A Binary read by a client that wants a page first (``Accept`` preferring ``text/html``):
    its content as the registered renderer shows it to people (the DMP's: a CDA document).

    For content it does not show, the next acceptable representation answers (FHIR, or the bytes
    themselves), or 406 when ``Accept`` admits none. Visibility was decided by the read (a Binary
    the caller may not see is 404), which also left its AuditEvent.
    """
    binary = _read_binary(req, resp)
    if binary is None:
        return None  # another request, or a 304 (answered as any other)
    content_type = str(binary.get("contentType") or "application/octet-stream")
    reason = "no content is shown as a page here"
    if renderer is not None:
        try:
            page = renderer.render(content_type, binascii.a2b_base64(compact_base64(binary.get("data") or "")))
        except NotShown as exc:
            reason = str(exc)
        except binascii.Error:
            reason = "its data is not valid base64"
        else:
            policy = f"sandbox; {renderer.policy}; frame-ancestors 'none'"
            headers = {**resp.headers, **_CONTENT_SAFETY, "Content-Security-Policy": policy, **_VARY}
            return Response(page.encode("utf-8"), status=resp.status, headers=headers, content_type=_HTML_UTF8)
    if fhir_format or acceptable(request.headers.get("Accept"), content_type):
        return None
    what = f"Binary/{binary.get('id')} ({content_type})"
    raise FhirError(406, f"{what} cannot be shown as {HTML}: {reason}", "not-supported")


def _raw_binary(req: FhirRequest, resp: FhirResponse, format_param: str | None, accept: str | None) -> Response | None:
    """A Binary read by a client that does not ask for FHIR gets the content itself (R4 Binary,
    IHE MHD ITI-68; :func:`wants_content`): its bytes under its own media type, with the
    version's ETag.

    The content is decoded and sent chunk by chunk (``documents.base64_chunks``). (The stored
    resource itself is decrypted whole: AES-GCM authenticates a blob as one message.) Visibility
    was decided by the read: a Binary the caller may not see is 404, like one that does not exist.
    """
    if resp.status == 304 and req.method == "GET" and req.path.startswith("Binary/"):
        return Response(status=304, headers=resp.headers)
    binary = _read_binary(req, resp)
    if binary is None:
        return None
    if not wants_content(format_param, accept, str(binary.get("contentType") or "")):
        return None
    encoded = compact_base64(binary.get("data") or "")
    headers = {**resp.headers, "Content-Length": str(decoded_size(encoded)), **_CONTENT_SAFETY, **_VARY}
    content_type = binary.get("contentType") or "application/octet-stream"
    return Response(decoded_chunks(encoded), status=resp.status, headers=headers, content_type=content_type)


#: Served content is the client's, not the server's: a browser must neither sniff another type
#: from it nor run what it holds (an HTML or SVG upload, a CDA's xml-stylesheet) as this origin.
_CONTENT_SAFETY = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}
#: A rendered page gets the same, plus what the page itself says (the renderer's policy) and that
#: no other site may frame it (see ``_page``).
HTML = "text/html"
_HTML_UTF8 = f"{HTML}; charset=utf-8"
#: A Binary's URL answers its bytes, its FHIR form or its rendering, by Accept: caches must know.
_VARY = {"Vary": "Accept"}


def _download(resp: FhirResponse, download: Download, head: bool) -> Response:
    """A file an operation produced: streamed as its chunks come, whatever format was negotiated
    for FHIR bodies (errors before the first byte are still OperationOutcomes). No
    Content-Length: the size is known only once the last chunk is made."""
    name = _SAFE_FILENAME.sub("_", download.filename) or "download"
    headers = {**resp.headers, "Content-Disposition": f'attachment; filename="{name}"', **_CONTENT_SAFETY}
    body: Iterable[bytes] = () if head else download.chunks
    return Response(body, status=resp.status, headers=headers, content_type=download.media_type)


#: What may stand in a Content-Disposition filename without quoting rules (RFC 6266).
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _http_response(resp: FhirResponse, fmt: str, head: bool, pretty: bool) -> Response:
    if resp.body is None:
        return Response(status=resp.status, headers=resp.headers)
    payload = b"" if head else render(resp.body, fmt, pretty)
    return Response(payload, status=resp.status, headers=resp.headers, content_type=CONTENT_TYPES[fmt])
