"""The history interaction (instance, type, system): a ``history`` Bundle, newest first."""

from __future__ import annotations

from typing import Any

from fhir_server.fhir.interactions.common import etag
from fhir_server.fhir.interactions.search import page_state, page_url
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.numbers import natural
from fhir_server.fhir.service import FhirService
from fhirmodel.dates import DateFormatError, date_range, us_to_instant
from fhirmodel.errors import bad_request, not_found
from storage.interface import Gone, NotFound, Stored

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def _instants(name: str, value: str) -> tuple[str, str]:
    """A date parameter's range ``[low, high)`` as the store's instant text (UTC, fixed width) so
    that it compares as text."""
    try:
        low, high = date_range(value)
    except DateFormatError as exc:
        raise bad_request(f"{name}: {exc}") from None
    return us_to_instant(low)[:23] + "Z", us_to_instant(high)[:23] + "Z"


def history(svc: FhirService, req: FhirRequest, rtype: str | None, rid: str | None) -> FhirResponse:
    state, offset = page_state(svc, req)
    values = dict(req.params)
    at: tuple[str, str] | None
    if state is not None:
        since, watermark, key = state.get("since"), state["watermark"], values["_getpages"]
        at = (str(state["at"][0]), str(state["at"][1])) if state.get("at") else None
    else:
        unknown = [n for n in values if n not in ("_since", "_at", "_count", "_format", "_pretty")]
        if unknown and req.strict:
            raise bad_request(f"unsupported history parameter(s): {', '.join(unknown)}", code="not-supported")
        since = _instants("_since", values["_since"])[0] if "_since" in values else None
        # R4 ``_at``: the versions current at some moment of the period the date value names.
        at = _instants("_at", values["_at"]) if "_at" in values else None
        watermark, key = None, None
    count_text = values.get("_count", str(svc.config.default_count))
    asked = natural(count_text)
    if asked is None:
        raise bad_request("_count must be a non-negative integer")
    count = min(asked, svc.config.max_count)
    if rtype is not None:
        req.checks.check_read(rtype, "history-instance" if rid else "history-type")
    if rtype is not None and rid is not None:
        _check_instance(svc, req, rtype, rid)
    result = svc.store.history(
        req.scope, rtype, rid, since=since, offset=offset, count=count, watermark=watermark, at=at
    )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": result.total}
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    links = [{"relation": "self", "url": f"{svc.config.base_url}/{path}"}]
    has_next = offset + count < result.total
    if has_next or offset > 0:
        if key is None:
            session: dict[str, Any] = {
                "kind": "history",
                "type": rtype,
                "id": rid,
                "since": since,
                "at": at,
                "watermark": result.watermark,
                "principal": req.principal,
                "params": [],
                "strict": req.strict,
            }
            key = svc.sessions.save(session)
        page = page_url(svc, key, count)
        if offset > 0:
            links.append({"relation": "previous", "url": page(max(0, offset - count))})
        if has_next:
            links.append({"relation": "next", "url": page(offset + count)})
    bundle["link"] = links
    if result.entries:
        bundle["entry"] = [_entry(svc, req, s) for s in result.entries]
    return FhirResponse(200, bundle)


def _check_instance(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> None:
    """The history of a resource the caller cannot see is not found (deleted ones have one)."""
    try:
        svc.store.read(rtype, rid, req.scope)
    except NotFound:
        raise not_found(f"{rtype}/{rid} is not known") from None
    except Gone:
        pass


def _entry(svc: FhirService, req: FhirRequest, stored: Stored) -> dict[str, Any]:
    url = f"{stored.resource_type}/{stored.id}"
    entry: dict[str, Any] = {"fullUrl": f"{svc.config.base_url}/{url}"}
    if stored.content is not None:
        entry["resource"] = req.checks.present(stored)
    method = stored.method or "PUT"  # history rows always carry their method
    entry["request"] = {"method": method, "url": url if method != "POST" else stored.resource_type}
    entry["response"] = {
        "status": _STATUS.get(method, "200 OK"),
        "etag": etag(stored.version),
        "lastModified": stored.last_updated,
    }
    return entry
