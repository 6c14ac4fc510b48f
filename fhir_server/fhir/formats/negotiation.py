"""Content negotiation (R4 http.html §3.1.0.1.10): which format a body is in, which to answer in.

``_format`` wins over ``Accept``; JSON is the default. Request bodies are parsed here, bounded,
and any parse failure becomes a 400 that says what is wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.fhir.formats.xml import XmlFormatError, json_to_xml, xml_to_json
from fhirmodel.errors import FhirError, bad_request
from fhirmodel.rawjson import dumps, materialize

JSON = "json"
XML = "xml"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
CONTENT_TYPES = {JSON: f"{FHIR_JSON}; charset=utf-8", XML: f"{FHIR_XML}; charset=utf-8"}

_FORMAT_ALIASES = {
    "json": JSON,
    "application/json": JSON,
    "application/fhir+json": JSON,
    "application/json+fhir": JSON,
    "xml": XML,
    "text/xml": XML,
    "application/xml": XML,
    "application/fhir+xml": XML,
    "application/xml+fhir": XML,
}
_JSON_BODY_TYPES = {"application/json", "application/fhir+json", "application/json+fhir", "application/json-patch+json"}
_XML_BODY_TYPES = {"application/xml", "text/xml", "application/fhir+xml", "application/xml+fhir"}


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def format_of(value: str) -> str | None:
    """The format named by a ``_format`` value or a media type (parameters ignored)."""
    return _FORMAT_ALIASES.get(media_type(value))


def response_format(format_param: str | None, accept: str | None) -> str | None:
    """The format to answer in, or ``None`` when the client accepts neither JSON nor XML."""
    if format_param:
        fmt = format_of(format_param)
        if fmt is None:
            raise FhirError(406, f"_format '{format_param}' is not supported (json or xml)", "not-supported")
        return fmt
    if not accept:
        return JSON
    for mtype in _ranked(accept):
        fmt = _FORMAT_ALIASES.get(mtype)
        if fmt:
            return fmt
        if mtype in ("*/*", "application/*"):
            return JSON
    return None


def prefers(accept: str | None, mtype: str) -> bool:
    """Whether ``Accept`` names ``mtype`` as the client's first choice (highest q, first listed
    among equals): a browser asking for a page, not a client that merely tolerates one."""
    ranked = _ranked(accept or "")
    return bool(ranked) and ranked[0] == mtype


def acceptable(accept: str | None, mtype: str) -> bool:
    """Whether ``Accept`` admits ``mtype`` at all (exactly, as ``type/*`` or as ``*/*``)."""
    if not accept:
        return True
    major = mtype.split("/")[0]
    return any(m in (mtype, f"{major}/*", "*/*") for m in _ranked(accept))


def _ranked(accept: str) -> list[str]:
    """The media types of an ``Accept`` header a client takes (q > 0), most wanted first."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        pieces = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in pieces[1:]:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and pieces[0]:
            ranked.append((-q, position, pieces[0].lower()))
    return [mtype for _, _, mtype in sorted(ranked)]


def parse_body(data: bytes, content_type: str | None) -> Any:
    """A request body as JSON-shaped data; 415 for a format the server does not take."""
    mtype = media_type(content_type)
    if mtype in _JSON_BODY_TYPES or (not mtype and data[:1] in (b"{", b"[")):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"the body is not valid JSON: {exc}", code="structure") from None
    if mtype in _XML_BODY_TYPES or (not mtype and data[:1] == b"<"):
        try:
            return xml_to_json(data)
        except XmlFormatError as exc:
            raise bad_request(f"the body is not valid FHIR XML: {exc}", code="structure") from None
    raise FhirError(415, f"unsupported Content-Type '{content_type}' (use {FHIR_JSON} or {FHIR_XML})", "not-supported")


def render(body: Any, fmt: str, pretty: bool = False) -> bytes:
    if fmt == XML:
        return json_to_xml(materialize(body))
    if pretty:
        return orjson.dumps(materialize(body), option=orjson.OPT_INDENT_2)
    return dumps(body)


#: The media types that name FHIR itself rather than data that happens to be JSON or XML.
_FHIR_TYPES = frozenset({FHIR_JSON, FHIR_XML, "application/json+fhir", "application/xml+fhir"})
#: Types a client names to take whatever bytes a document holds.
_ANY_CONTENT = frozenset({"*/*", "application/octet-stream"})


def wants_content(format_param: str | None, accept: str | None, content_type: str) -> bool:
    """Whether a read of a Binary holding ``content_type`` asks for the content itself rather than
    the Binary resource.

    R4 serves a Binary "in its native form" to an ``Accept`` that is no FHIR type, and IHE MHD
    ITI-68 serves the document at ``content.attachment.url``, assuring only the document's own type.
    So the content is the answer to ``*/*``, to ``application/octet-stream`` and to the content's
    own type even when FHIR has an alias for it (a CDA's ``text/xml`` is not FHIR XML); FHIR is
    the answer to ``_format``, to a FHIR media type preferred to those, and to a request without
    ``Accept`` (a FHIR client's read); a client accepting neither gets 406 (ITI-68).
    """
    if format_param or not accept:
        return False
    own = media_type(content_type)
    for mtype in _ranked(accept):
        if mtype in _FHIR_TYPES:
            return False
        if mtype in _ANY_CONTENT or mtype == own or (mtype.endswith("/*") and own.startswith(mtype[:-1])):
            return True
        if mtype in _FORMAT_ALIASES:
            return False
    raise FhirError(406, f"this document is served as {own}, or as a FHIR Binary resource", "not-supported")
