"""The portal's only way to the record: FHIR requests with the signed-in person's own token.

Every page and action builds :class:`FhirRequest`s and hands them to :meth:`FhirService.process`,
exactly as the HTTP layer does with a client's request: the same token verification, DMP policy,
filtering and trail. The portal has no access of its own — what the person may not do through the
API, they cannot do here either, and every read or change they make is in their trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.fhir.messages import Download, FhirRequest, FhirResponse
from fhir_server.fhir.service import FhirService
from fhirmodel.errors import FhirError
from fhirmodel.rawjson import RawJson, materialize

Params = list[tuple[str, str]]
Headers = dict[str, str] | None


#: What a refusal means for the person, in their language, by HTTP status. The server explains
#: its refusals in English, for developers and operators; that explanation follows as a detail.
_MEANINGS = {
    400: "la demande est incorrecte",
    401: "votre connexion n'est plus valable, reconnectez-vous",
    403: "cette action ne vous est pas permise",
    404: "ce que vous demandez n'existe pas ou ne vous est pas accessible",
    409: "ces informations ont changé entre-temps, rechargez la page et recommencez",
    410: "ce que vous demandez a été supprimé",
    412: "ces informations ont changé entre-temps, rechargez la page et recommencez",
    413: "le fichier est trop volumineux",
    415: "ce type de fichier n'est pas accepté",
    422: "les informations données n'ont pas été acceptées",
    429: "trop de demandes à la fois, patientez un instant",
}
_UNAVAILABLE = "le service n'a pas pu répondre, réessayez plus tard"


class RecordError(Exception):
    """A request the server refused: its status, and what that means in French followed by the
    server's own explanation (``message``)."""

    def __init__(self, status: int, detail: str):
        meaning = _MEANINGS.get(status) or (_UNAVAILABLE if status >= 500 else _MEANINGS[400])
        super().__init__(detail)
        self.status = status
        self.message = f"{meaning} (détail : {detail})"


@dataclass(frozen=True)
class Page:
    """One page of a search: the matching resources, the total, and the paging links' queries."""

    resources: list[dict[str, Any]]
    total: int | None
    next: str | None  # the query string of the next page (opaque to the portal)
    previous: str | None
    included: list[dict[str, Any]]


@dataclass(frozen=True)
class Record:
    """Requests about one person's record, made with their token from their browser's address."""

    service: FhirService
    token: str
    address: str | None

    def call(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> FhirResponse:
        request = FhirRequest(
            method=method,
            path=path,
            params=list(params or []),
            body=body,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
            content_type="application/fhir+json" if body is not None else None,
            client_address=self.address,
        )
        try:
            return self.service.process(request)
        except FhirError as exc:
            raise RecordError(exc.status, exc.message) from None

    def resource(self, path: str, params: Params | None = None) -> tuple[dict[str, Any], str | None]:
        """A resource read, and its ``ETag`` for the update that may follow."""
        response = self.call("GET", path, params)
        return _json(response.body), response.headers.get("ETag")

    def search(self, path: str, params: Params) -> Page:
        bundle = _json(self.call("GET", path, params).body)
        entries = bundle.get("entry") or []
        links = {link.get("relation"): link.get("url") for link in bundle.get("link") or []}
        return Page(
            resources=[e["resource"] for e in entries if (e.get("search") or {}).get("mode", "match") == "match"],
            total=bundle.get("total"),
            next=_query(links.get("next")),
            previous=_query(links.get("previous") or links.get("prev")),
            included=[e["resource"] for e in entries if (e.get("search") or {}).get("mode") == "include"],
        )

    def page(self, query: str) -> Page:
        """A further page of a search, from the query of a paging link the server gave."""
        return self.search("", parse_qsl(query, keep_blank_values=True))

    def write(self, method: str, path: str, body: Any = None, etag: str | None = None) -> dict[str, Any]:
        """A create, update or delete (``If-Match`` ``etag``: not over someone else's change); the
        resource as stored, when the answer holds one."""
        response = self.call(method, path, body=body, headers={"If-Match": etag} if etag else None)
        return _json(response.body) if response.body is not None else {}

    def download(self, path: str, params: Params) -> Download:
        body = self.call("GET", path, params).body
        if not isinstance(body, Download):
            raise RecordError(500, "the server did not answer with a file")
        return body


def _json(body: Any) -> dict[str, Any]:
    """A response body as plain JSON (stored resources inside a Bundle parsed too)."""
    if isinstance(body, (RawJson, dict)):
        loaded: dict[str, Any] = materialize(body)
        return loaded
    raise RecordError(500, "the server did not answer with a resource")


def _query(url: str | None) -> str | None:
    return urlsplit(url).query or None if url else None
