"""The files of a record export: what the patient downloads (DMP-RULES R22), and its manifest.

Everything is read through the store's ``search`` and ``read`` with the caller's scope, as
``$everything`` reads it (:mod:`fhir_server.fhir.interactions.compartment`): a document hidden from the
caller (R12, R13) is not in the export, nor its content, nor a trail entry about it. Resources are
fetched a batch at a time and a document's bytes only when the archive reaches them.

Layout of the archive:

- ``Patient.json``: whose record it is;
- ``documents/<id>/DocumentReference.json`` and ``documents/<id>/<title>.<ext>``: each document
  and its content, decoded, named from ``attachment.title`` with the extension of its media type;
- ``authorisations/Consent-<id>.json``: the patient's decisions (R14);
- ``trail/AuditEvent.ndjson``: the access history (R17), one event per line, oldest first;
- ``manifest.json``: every file with its size, SHA-256 and the resource it comes from, the
  export's date, requester, patient and parts, and the content that could not be included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.dmp.export.filenames import extension, safe_stem
from fhir_server.dmp.export.zipstream import Member, Written
from fhir_server.fhir.interactions.compartment import PatientRecord, each, identifier_of
from fhir_server.fhir.messages import FhirRequest
from fhirmodel.base64_chunks import compact_base64, decoded_chunks
from fhirmodel.indexing import parse_reference
from fhirmodel.rawjson import RawJson
from storage.interface import Gone, NotFound, Stored
from storage.query import Query, Watermark

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

DOCUMENTS = "documents"
TRAIL = "trail"
AUTHORISATIONS = "authorisations"
#: The parts a patient may ask for, in the order the archive holds them.
PARTS = (DOCUMENTS, AUTHORISATIONS, TRAIL)
#: The types each part reads (besides the Patient), for the token's scopes.
PART_TYPES = {
    DOCUMENTS: ("DocumentReference", "Binary", "Bundle"),
    AUTHORISATIONS: ("Consent",),
    TRAIL: ("AuditEvent",),
}
MANIFEST = "manifest.json"
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"


@dataclass
class RecordExport:
    """One export: the caller, the patient's record as of ``watermark``, the parts asked for."""

    svc: FhirService
    req: FhirRequest
    record: PatientRecord
    parts: tuple[str, ...]
    generated: str  # the export's instant
    watermark: Watermark  # the record as it was when the export was asked for
    omitted: list[dict[str, Any]] = field(default_factory=list)

    def members(self) -> Iterator[Member]:
        """The archive's files, produced as the archive reaches them."""
        yield self._resource_file("Patient.json", self.record.patient)
        if DOCUMENTS in self.parts:
            for document in self._all("DocumentReference"):
                yield from self._document(document)
        if AUTHORISATIONS in self.parts:
            for consent in self._all("Consent"):
                yield self._resource_file(f"{AUTHORISATIONS}/Consent-{consent.id}.json", consent)
        if TRAIL in self.parts:
            yield self._ndjson(f"{TRAIL}/AuditEvent.ndjson", "AuditEvent")

    def manifest(self, written: list[Written]) -> Member:
        """``manifest.json``: what the archive holds, for the patient and for checking it."""
        patient = self.record.patient
        content: dict[str, Any] = {
            "export": "dmp-export",
            "generated": self.generated,
            "requester": self.req.checks.requester,
            "patient": {"reference": f"Patient/{patient.id}", "identifier": identifier_of(patient)},
            "parts": list(self.parts),
            "files": [{"path": w.path, "size": w.size, "sha256": w.sha256, **w.description} for w in written],
            "omitted": self.omitted,
        }
        return Member(MANIFEST, [orjson.dumps(content, option=orjson.OPT_INDENT_2)])

    # -- the parts ---------------------------------------------------------------------------

    def _all(self, resource_type: str) -> Iterator[Stored]:
        query = Query(resource_type, self.record.member(resource_type), watermark=self.watermark)
        return each(self.svc, self.req, query)

    def _document(self, document: Stored) -> Iterator[Member]:
        """The DocumentReference, then each content it holds or points at on this server."""
        folder = f"{DOCUMENTS}/{safe_stem(document.id, 'document')}"
        yield self._resource_file(f"{folder}/DocumentReference.json", document)
        contents = document.json().get("content") or []
        used: set[str] = set()
        for index, item in enumerate(contents):
            attachment = item.get("attachment") if isinstance(item, dict) else None
            if not isinstance(attachment, dict):
                continue
            found = self._content(attachment)
            if isinstance(found, str):
                self.omitted.append({"source": f"DocumentReference/{document.id}", "content": index, "reason": found})
                continue
            chunks, media_type, source = found
            title = attachment.get("title")
            fallback = "document" if len(contents) == 1 else f"document-{index + 1}"
            stem = safe_stem(title if isinstance(title, str) else None, fallback)
            name = _unique(f"{folder}/{stem}{extension(media_type)}", used)
            described = {"contentType": media_type, "source": f"DocumentReference/{document.id}"}
            if source:
                described["content"] = source
            yield Member(name, chunks, partial(dict, described))

    def _content(self, attachment: dict[str, Any]) -> tuple[Iterable[bytes], str, str | None] | str:
        """A document's bytes, media type and the resource holding them; or why there are none."""
        declared = str(attachment.get("contentType") or "application/octet-stream")
        if isinstance(attachment.get("data"), str):
            return decoded_chunks(compact_base64(attachment["data"])), declared, None
        url = attachment.get("url")
        if not isinstance(url, str):
            return "the attachment holds neither data nor a URL"
        rtype, rid, _ = parse_reference(url, self.svc.config.base_url)
        if rtype not in ("Binary", "Bundle") or rid is None:
            return f"the content is not held by this server ({url})"
        try:
            held = self.svc.store.read(rtype, rid, self.req.scope)
        except (NotFound, Gone):
            return f"{rtype}/{rid} is not available"
        if rtype == "Bundle":
            return [_json_bytes(self.req.checks.present(held))], FHIR_JSON, f"Bundle/{rid}"
        binary = held.json()
        media_type = str(binary.get("contentType") or declared)
        return decoded_chunks(compact_base64(str(binary.get("data") or ""))), media_type, f"Binary/{rid}"

    def _resource_file(self, path: str, stored: Stored) -> Member:
        body = _json_bytes(self.req.checks.present(stored))
        source = {"contentType": FHIR_JSON, "source": f"{stored.resource_type}/{stored.id}"}
        return Member(path, [body], partial(dict, source))

    def _ndjson(self, path: str, resource_type: str) -> Member:
        lines = _Lines(self.req, self._all(resource_type))
        return Member(path, lines, lambda: {"contentType": NDJSON, "resourceType": resource_type, "count": lines.count})


class _Lines:
    """Resources as NDJSON lines (as the caller may see each), counted as they are produced."""

    def __init__(self, req: FhirRequest, resources: Iterator[Stored]):
        self._req = req
        self._resources = resources
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for stored in self._resources:
            presented = self._req.checks.present(stored)
            self.count += 1
            yield (presented.data if isinstance(presented, RawJson) else orjson.dumps(presented)) + b"\n"


def _json_bytes(presented: RawJson | dict[str, Any]) -> bytes:
    """A resource as a readable JSON file (indented: patients open these)."""
    resource = presented.load() if isinstance(presented, RawJson) else presented
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2)


def _unique(path: str, used: set[str]) -> str:
    """``path``, or ``path`` with ``-2``, ``-3``... before its extension if already taken."""
    stem, dot, ext = path.rpartition(".")
    candidate, n = path, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}{dot}{ext}"
    used.add(candidate)
    return candidate
