"""``GET [base]?_getpages=...``: a later page of a search, a history or ``$everything``.

The paging link carries only the key of a session the server saved (the query, the caller, a
watermark); the page is computed again from it by the interaction that made the first one.
"""

from __future__ import annotations

from fhir_server.fhir.interactions import everything, history
from fhir_server.fhir.interactions.search import page_state, search
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.service import FhirService
from fhirmodel.errors import bad_request


def page(svc: FhirService, req: FhirRequest) -> FhirResponse:
    state, offset = page_state(svc, req)
    if state is None:
        raise bad_request("_getpages is required")
    if state.get("kind") == "history":
        return history.history(svc, req, state.get("type"), state.get("id"))
    if state.get("kind") == "everything":
        return everything.page(svc, req, state, offset)
    return search(svc, req, state["type"])
