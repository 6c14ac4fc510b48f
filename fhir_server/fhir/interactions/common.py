"""What several interactions share: version headers, locations, and ``Prefer: return``."""

from __future__ import annotations

import re

from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.numbers import natural
from fhir_server.fhir.service import FhirService
from fhirmodel.errors import bad_request, operation_outcome
from storage.interface import Stored

_ETAG_RE = re.compile(r'^(?:W/)?"?([0-9]+)"?$', re.ASCII)


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(instant: str) -> str:
    """RFC 7231 date for ``Last-Modified`` from a FHIR instant."""
    from datetime import datetime
    from email.utils import format_datetime

    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return format_datetime(moment, usegmt=True)


def not_modified_since(header: str | None, instant: str) -> bool:
    """Whether a resource last updated at ``instant`` is unchanged since an ``If-Modified-Since``
    date (RFC 9110 §13.1.3: HTTP dates have whole seconds, so the instant is cut to its second).
    An unreadable date is ignored, as the RFC asks, and the resource is sent."""
    if not header:
        return False
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    modified = datetime.fromisoformat(instant.replace("Z", "+00:00")).replace(microsecond=0)
    return modified <= since


def parse_etag(value: str | None) -> int | None:
    """The version in an ``If-Match`` header (``W/"3"``); 400 when it is not one."""
    if value is None:
        return None
    m = _ETAG_RE.match(value.strip())
    if not m:
        raise bad_request(f'If-Match must be a version ETag like W/"1", not {value!r}')
    return natural(m.group(1))


def version_headers(svc: FhirService, stored: Stored) -> dict[str, str]:
    return {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}


def location(svc: FhirService, stored: Stored) -> str:
    return f"{svc.config.base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"


def written(svc: FhirService, req: FhirRequest, stored: Stored, status: int) -> FhirResponse:
    """The answer to a create, update or patch, shaped by ``Prefer: return``."""
    headers = version_headers(svc, stored)
    headers["Location"] = location(svc, stored)
    match req.prefer.get("return", "representation"):
        case "minimal":
            return FhirResponse(status, None, headers)
        case "OperationOutcome":
            outcome = operation_outcome(
                "information", "informational", f"{stored.resource_type}/{stored.id} version {stored.version} stored"
            )
            return FhirResponse(status, outcome, headers)
    return FhirResponse(status, req.checks.present(stored), headers)
