"""The search interaction: a ``searchset`` Bundle with totals, includes and paging links.

Page links carry only an opaque key to a server-side session (the parameters, the caller and a
watermark), so search values never appear in paging URLs, later pages are computed over the same
set of resources even as new ones arrive, and a key is useless to another caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from fhir_server.fhir.interactions.compartment import PATIENT_COMPARTMENT, compartment_members
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.numbers import natural
from fhir_server.fhir.search.parser import PAGING_PARAMS, ParsedSearch
from fhir_server.fhir.service import FhirService
from fhir_server.fhir.summary import select_elements, summarize
from fhirmodel.errors import FhirError, bad_request, operation_outcome
from fhirmodel.rawjson import RawJson
from storage.interface import Stored
from storage.query import Watermark, all_of


def shape(
    req: FhirRequest, stored: Stored, summary: str | None, elements: tuple[str, ...] | None
) -> RawJson | dict[str, Any]:
    """A stored resource as the response embeds it: as the caller may see it, subset if
    ``_summary``/``_elements`` ask."""
    presented = req.checks.present(stored)
    if (summary is None or summary == "false") and not elements:
        return presented
    resource = presented.load() if isinstance(presented, RawJson) else presented
    if elements:
        return select_elements(resource, elements)
    return summarize(resource, summary or "false")


def result_params(params: list[tuple[str, str]]) -> tuple[str | None, tuple[str, ...] | None]:
    """``_summary`` and ``_elements`` of a read."""
    summary = elements = None
    for name, value in params:
        if name == "_summary":
            if value not in ("true", "text", "data", "false"):
                raise bad_request("_summary on a read must be true, text, data or false")
            summary = value
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
    return summary, elements


def page_state(svc: FhirService, req: FhirRequest) -> tuple[dict[str, Any] | None, int]:
    values = dict(p for p in req.params if p[0] in PAGING_PARAMS)
    key = values.get("_getpages")
    if key is None:
        return None, 0
    state = svc.sessions.load(key)
    if state is None or state.get("principal") != req.principal:
        raise FhirError(410, "this search has expired: run it again", "expired")
    offset = natural(values.get("_getpagesoffset", "0"))
    if offset is None:
        raise bad_request("_getpagesoffset must be a non-negative integer")
    return state, offset


def paged_params(state: dict[str, Any], req: FhirRequest) -> list[tuple[str, str]]:
    """A paging session's parameters, with the page link's ``_count`` in place of the saved one."""
    saved = [(str(name), str(value)) for name, value in state["params"]]
    count = [p for p in req.params if p[0] == "_count"] or [p for p in saved if p[0] == "_count"]
    return [p for p in saved if p[0] != "_count"] + count


def search(svc: FhirService, req: FhirRequest, rtype: str, patient: str | None = None) -> FhirResponse:
    """A search of ``rtype``; within the compartment of Patient ``patient`` when given
    (``GET Patient/[id]/[type]``, :func:`compartment_members`), checked like the equivalent
    search that names the patient by the compartment's parameters."""
    req.checks.check_read(rtype, "search-type")
    state, offset = page_state(svc, req)
    if state is not None:
        if state["type"] != rtype or state.get("patient") != patient:
            raise bad_request("this paging key belongs to another search")
        params = paged_params(state, req)
        parsed = svc.parser.parse(rtype, params, strict=state["strict"], default_count=svc.config.default_count)
        query = replace(parsed.query, offset=offset, watermark=state["watermark"])
        session_key: str | None = dict(req.params)["_getpages"]
    else:
        # A compartment search is checked as its equivalent, which names the patient by each of
        # the compartment's parameters (R1: another patient's compartment is refused likewise).
        named = [(param, f"Patient/{patient}") for param in PATIENT_COMPARTMENT.get(rtype, ())] if patient else []
        req.checks.check_search(rtype, list(req.params) + named)
        parsed = svc.parser.parse(rtype, req.params, strict=req.strict, default_count=svc.config.default_count)
        query = parsed.query
        session_key = None
    if patient is not None:
        query = replace(query, where=all_of(query.where, compartment_members(svc, req, patient, rtype)))
    result = svc.store.search(query, req.scope)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    path = f"Patient/{patient}/{rtype}" if patient else rtype
    self_url = _self_url(svc, path, parsed, session_key, query.offset)
    bundle["link"] = paging_links(
        svc,
        self_url,
        session_key,
        lambda: _save_session(svc, req, rtype, parsed, result.watermark, patient),
        query.offset,
        query.count,
        len(result.matches),
        result.total,
    )
    entries = [entry(svc, req, s, "match", parsed) for s in result.matches]
    entries += [entry(svc, req, s, "include", parsed) for s in result.included]
    if parsed.ignored:
        outcome = operation_outcome("warning", "not-supported", "ignored: " + "; ".join(parsed.ignored))
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle)


def paging_links(
    svc: FhirService,
    self_url: str,
    session_key: str | None,
    save_session: Callable[[], str],
    offset: int,
    count: int,
    returned: int,
    total: int | None,
) -> list[dict[str, str]]:
    """A searchset's links: ``self``, and ``first``/``previous``/``next``/``last`` when there is
    more than one page, through a paging session (saved on first need by ``save_session``)."""
    links = [{"relation": "self", "url": self_url}]
    # ``_count=0`` (and ``_summary=count``) asks for the total only: there is no page to go to.
    has_next = count > 0 and returned == count and (total is None or offset + count < total)
    if has_next or offset > 0:
        page = page_url(svc, session_key or save_session(), count)
        links.append({"relation": "first", "url": page(0)})
        if offset > 0:
            links.append({"relation": "previous", "url": page(max(0, offset - count))})
        if has_next:
            links.append({"relation": "next", "url": page(offset + count)})
        if total is not None and count:
            last = ((total - 1) // count) * count if total else 0
            links.append({"relation": "last", "url": page(last)})
    return links


def entry(
    svc: FhirService, req: FhirRequest, stored: Stored, mode: str, parsed: ParsedSearch | None = None
) -> dict[str, Any]:
    """One searchset entry: the resource as the caller may see it (``_summary``/``_elements``)."""
    summary, elements = (parsed.summary, parsed.elements) if parsed else (None, None)
    return {
        "fullUrl": f"{svc.config.base_url}/{stored.resource_type}/{stored.id}",
        "resource": shape(req, stored, summary, elements),
        "search": {"mode": mode},
    }


def _self_url(svc: FhirService, path: str, parsed: ParsedSearch, key: str | None, offset: int) -> str:
    if key is not None:
        return page_url(svc, key, parsed.query.count)(offset)
    query = urlencode(parsed.applied)
    return f"{svc.config.base_url}/{path}" + (f"?{query}" if query else "")


def page_url(svc: FhirService, key: str, count: int) -> Callable[[int], str]:
    """The link to a page of session ``key`` by its offset. The key, a sealed state of a few
    hundred characters, is encoded once for the three or four links of a page."""
    head = f"{svc.config.base_url}?{urlencode({'_getpages': key})}&_getpagesoffset="
    tail = f"&{urlencode({'_count': count})}"

    def url(offset: int) -> str:
        return f"{head}{offset}{tail}"

    return url


def _save_session(
    svc: FhirService, req: FhirRequest, rtype: str, parsed: ParsedSearch, watermark: Watermark, patient: str | None
) -> str:
    state = {
        "kind": "search",
        "type": rtype,
        "patient": patient,
        "params": parsed.applied,
        "strict": req.strict,
        "watermark": watermark,
        "principal": req.principal,
    }
    return svc.sessions.save(state)
