"""IHE MHD ITI-105 Simplified Publish: a DocumentReference POSTed with its document inline.

Why the server moves the document out of the DocumentReference: the DMP keeps content apart from
its metadata. A Binary is readable only through a DocumentReference its reader may see
(``authz.policy``), is never indexed, and is what ITI-68 retrieves; content left inline in
``attachment.data`` would instead travel with every search result, ``_include`` and history entry
of the metadata. So the bytes become a Binary in the same transaction, and the DocumentReference
keeps only their address, size and SHA-1 (what ITI-68 clients need to fetch and verify them).

A CDA is also read: the DMP's access rules are decided on the DocumentReference (patient, type,
author), so metadata contradicting the document would show it to the wrong people (422), and
what the client left out (type, date, author...) is taken from the document, as ITI-106 would.
Its uniqueId (``masterIdentifier``) is held unique as ITI-65's is (:mod:`.unique_ids`).

The pieces shared with ITI-106 ($generate-metadata) live here too: :class:`Content`,
:func:`new_binary`, :func:`store_binaries`, :func:`read_cda`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from authz.terms import INS_SYSTEMS
from fhir_server.dmp.documents.cda import (
    CdaDocument,
    CdaError,
    Identifier,
    NotClinicalDocument,
    check_against,
    document_reference_from_cda,
    parse_cda,
)
from fhir_server.dmp.documents.unique_ids import check_unique_ids, submitted
from fhir_server.fhir.messages import FhirRequest
from fhirmodel.errors import FhirError, listing
from fhirmodel.ids import new_id
from fhirmodel.indexing import parse_reference
from storage.interface import Gone, NotFound

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

#: Elements a DocumentReference may leave out that the CDA header supplies (CI-SIS → PDSm).
_FILLED_FROM_CDA = ("masterIdentifier", "type", "category", "date")


@dataclass(frozen=True)
class Content:
    """A document's bytes and media type, with what a DocumentReference says of them."""

    data: bytes
    content_type: str

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def sha1(self) -> str:
        """SHA-1 of the bytes, base64 (R4 Attachment.hash; MHD 4.2 hashes the raw digest)."""
        return base64.b64encode(hashlib.sha1(self.data, usedforsecurity=False).digest()).decode("ascii")


def decode_base64(value: Any, where: str) -> bytes:
    """FHIR base64Binary (whitespace allowed) as bytes; 422 naming ``where`` when it is not one."""
    if not isinstance(value, str):
        raise unprocessable([(where, "base64Binary expected")])
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise unprocessable([(where, "not valid base64")]) from None


def is_xml(content_type: str) -> bool:
    """``text/xml``, ``application/xml`` and every ``+xml`` type (``application/hl7-v3+xml``...)."""
    media = content_type.split(";")[0].strip().lower()
    return media.endswith(("/xml", "+xml"))


def read_cda(content: Content) -> CdaDocument | None:
    """The CDA header of ``content``, or None when it is no CDA (not XML, or another XML root).

    Raises CdaError for XML that cannot be accepted at all (not well-formed, a DTD, too deep): the
    server stores no XML it would refuse to parse, whatever it claims to be.
    """
    if not is_xml(content.content_type):
        return None
    try:
        return parse_cda(content.data)
    except NotClinicalDocument:
        return None


def unprocessable(problems: list[tuple[str, str]]) -> FhirError:
    """One 422 listing every ``(element, message)`` problem, each issue naming its element."""
    return listing(422, "invalid", problems)


def cda_problem(exc: CdaError, where: str) -> FhirError:
    """A CDA the server cannot use, as a 422 naming the element that carried it."""
    location = f" (CDA {exc.location})" if exc.location else ""
    return unprocessable([(where, f"{exc}{location}")])


def binary_url(svc: FhirService, binary_id: str) -> str:
    """The full URL ITI-68 clients fetch (CONTRACT §5: ``content.attachment.url`` is absolute)."""
    return f"{svc.config.base_url}/Binary/{binary_id}"


def new_binary(binary_id: str, content: Content, document_id: str) -> dict[str, Any]:
    """The Binary holding a document; its securityContext names the DocumentReference whose
    visibility governs it (R4 Binary: access to the Binary follows that resource)."""
    return {
        "resourceType": "Binary",
        "id": binary_id,
        "contentType": content.content_type,
        "securityContext": {"reference": f"DocumentReference/{document_id}"},
        "data": base64.b64encode(content.data).decode("ascii"),
    }


def store_binaries(svc: FhirService, req: FhirRequest, binaries: list[dict[str, Any]]) -> None:
    """Store Binaries created on the caller's behalf, under the same rules as a client's own."""
    for binary in binaries:
        req.checks.check_write("POST", "Binary", binary, None)
        stored = svc.store.create(binary)
        req.checks.after_write("POST", stored, None)


@dataclass(frozen=True)
class _InlineCda:
    """A CDA found inline: where it was, its header, its bytes, and the Binary now holding them."""

    index: int
    doc: CdaDocument
    content: Content
    url: str


@dataclass
class InlineContent:
    """A DocumentReference about to be created, and the Binaries its inline documents became."""

    document: dict[str, Any]
    binaries: list[dict[str, Any]] = field(default_factory=list)

    def store(self, svc: FhirService, req: FhirRequest) -> None:
        """Store the Binaries; called once the DocumentReference itself passed the write rules, so
        that a refusal names the document rather than its content."""
        store_binaries(svc, req, self.binaries)


def extract_inline_content(svc: FhirService, req: FhirRequest, resource: dict[str, Any]) -> InlineContent:
    """ITI-105: move every ``content.attachment.data`` of a DocumentReference into a Binary.

    ``resource`` must already carry its id (the Binaries point back at it). Other resource types,
    and DocumentReferences without inline data, come back unchanged. Raises 422 for a size or hash
    that disagrees with the data, and for a CDA that contradicts the metadata.
    """
    if resource.get("resourceType") != "DocumentReference" or not _has_inline_data(resource):
        return InlineContent(resource)
    document = copy.deepcopy(resource)
    extracted = InlineContent(document)
    cdas: list[_InlineCda] = []
    moved: list[Content] = []
    for index, entry in _contents(document):
        if "data" not in entry["attachment"]:
            continue  # content already stored elsewhere (ITI-65 style): nothing to move
        content, url = _move_to_binary(svc, document, index, entry, extracted.binaries)
        moved.append(content)
        doc = _cda_of(content, f"DocumentReference.content[{index}].attachment.data")
        if doc is not None:
            cdas.append(_InlineCda(index, doc, content, url))
    if cdas:  # one CDA describes the document; further contents are other renderings of it
        _check_and_fill(svc, req, document, cdas[0])
    # The uniqueId (masterIdentifier, given or read from the CDA) names the document: its first
    # content, the one IHE XDS registers (further ones are renderings of it).
    known = submitted("DocumentReference", document, moved[0].data) if moved else None
    check_unique_ids(svc.store, [known] if known else [])
    return extracted


def _has_inline_data(resource: dict[str, Any]) -> bool:
    return any("data" in entry.get("attachment", {}) for _, entry in _contents(resource))


def _contents(resource: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, entry in enumerate(resource.get("content") or []):
        if isinstance(entry, dict) and isinstance(entry.get("attachment"), dict):
            yield index, entry


def _move_to_binary(
    svc: FhirService, document: dict[str, Any], index: int, entry: dict[str, Any], binaries: list[dict[str, Any]]
) -> tuple[Content, str]:
    """Replace one attachment's data by a new Binary's URL, size and hash; the Binary is queued."""
    attachment = entry["attachment"]
    where = f"DocumentReference.content[{index}].attachment"
    if "url" in attachment:
        raise unprocessable([(f"{where}.url", "give the document either inline (data) or by url, not both")])
    content_type = attachment.get("contentType")
    if not isinstance(content_type, str):
        raise unprocessable([(f"{where}.contentType", "an attachment with data has a contentType (att-1)")])
    content = Content(decode_base64(attachment["data"], f"{where}.data"), content_type)
    _check_size_and_hash(attachment, content, where)
    binary_id = new_id()
    url = binary_url(svc, binary_id)
    binaries.append(new_binary(binary_id, content, document["id"]))
    del attachment["data"]
    attachment.update({"url": url, "size": content.size, "hash": content.sha1})
    return content, url


def _check_size_and_hash(attachment: dict[str, Any], content: Content, where: str) -> None:
    """A size or hash the client gives is a claim about the bytes: one that is false means the
    document is not the one the client described (truncated, replaced)."""
    problems = []
    size = attachment.get("size")
    if size is not None and size != content.size:
        problems.append((f"{where}.size", f"{size} but the data holds {content.size} bytes"))
    given = attachment.get("hash")
    if given is not None and _digest(given) != _digest(content.sha1):
        problems.append(
            (f"{where}.hash", f"{given} is not the SHA-1 of the data (base64 of the digest: {content.sha1})")
        )
    if problems:
        raise unprocessable(problems)


def _digest(value: Any) -> bytes | None:
    try:
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _cda_of(content: Content, where: str) -> CdaDocument | None:
    try:
        return read_cda(content)
    except CdaError as exc:
        raise cda_problem(exc, where) from None


def _check_and_fill(svc: FhirService, req: FhirRequest, document: dict[str, Any], cda: _InlineCda) -> None:
    """Refuse metadata the CDA contradicts (patient, type, author, id), then fill what is missing.
    A DMP CDA without an INS belongs to no DMP: refused too."""
    try:
        cda.doc.require_ins()
    except CdaError as exc:
        raise cda_problem(exc, f"DocumentReference.content[{cda.index}].attachment.data") from None
    problems = check_against(cda.doc, document, subject_ins(svc, req, document))
    if problems:
        raise unprocessable([_split_problem(problem) for problem in problems])
    generated = document_reference_from_cda(
        cda.doc,
        patient_reference=document.get("subject") or {},
        binary_url=cda.url,
        size=cda.content.size,
        sha1_b64=cda.content.sha1,
        content_type=cda.content.content_type,
    )
    if _fill(document, cda.index, generated):
        svc.validator.validate(document, expected_type="DocumentReference")


def _split_problem(problem: str) -> tuple[str, str]:
    """check_against's ``"DocumentReference.type: ..."`` as (element, message)."""
    where, _, message = problem.partition(": ")
    return where, message


def subject_ins(svc: FhirService, req: FhirRequest, document: dict[str, Any]) -> Identifier | None:
    """The INS of the stored Patient the subject points at, when the caller may see it.

    Read in the caller's scope: a Patient they may not see tells them nothing here (the write
    rules then refuse the subject anyway, R1).
    """
    reference = (document.get("subject") or {}).get("reference")
    if not isinstance(reference, str):
        return None
    rtype, rid, _ = parse_reference(reference, svc.config.base_url)
    if rtype != "Patient" or rid is None:
        return None
    try:
        patient = svc.store.read("Patient", rid, req.scope).json()
    except (NotFound, Gone):
        return None
    for identifier in patient.get("identifier") or []:
        if identifier.get("system") in INS_SYSTEMS and isinstance(identifier.get("value"), str):
            return identifier["system"], identifier["value"]
    return None


def _fill(document: dict[str, Any], index: int, generated: dict[str, Any]) -> bool:
    """Copy what the client left out from the CDA's own DocumentReference; whether anything was."""
    filled = False
    for key in _FILLED_FROM_CDA:
        if key not in document and key in generated:
            document[key] = generated[key]
            filled = True
    entry = document["content"][index]
    cda_format = generated["content"][0].get("format")
    if "format" not in entry and cda_format:
        entry["format"] = cda_format
        filled = True
    if "author" not in document and generated.get("author"):
        _copy_authors(document, generated)
        filled = True
    return filled


def _copy_authors(document: dict[str, Any], generated: dict[str, Any]) -> None:
    """The CDA's authors, with the contained resources they reach (role → practitioner,
    organization), renamed when the document already uses their ids."""
    by_ref = {f"#{r['id']}": r for r in generated.get("contained") or []}
    needed: list[dict[str, Any]] = []
    pending = [a.get("reference") for a in generated["author"]]
    while pending:
        ref = pending.pop()
        if ref in by_ref and by_ref[ref] not in needed:
            needed.append(by_ref[ref])
            pending.extend(_local_references(by_ref[ref]))
    taken = {str(r.get("id")) for r in document.get("contained") or [] if isinstance(r, dict)}
    renamed = {f"#{r['id']}": f"#cda-{r['id']}" for r in needed} if taken & {r["id"] for r in needed} else {}
    authors, resources = _renamed((generated["author"], needed), renamed)
    document["author"] = authors
    document["contained"] = [*(document.get("contained") or []), *resources]


def _local_references(value: Any) -> list[str]:
    """Every ``#id`` reference inside a (contained) resource."""
    if isinstance(value, dict):
        found = [value["reference"]] if str(value.get("reference", "")).startswith("#") else []
        return found + [ref for item in value.values() for ref in _local_references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _local_references(item)]
    return []


def _renamed(value: Any, mapping: dict[str, str]) -> Any:
    """A copy of ``value`` with local references and contained ids renamed by ``mapping``."""
    if isinstance(value, dict):
        out = {key: _renamed(item, mapping) for key, item in value.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in mapping:
            out["reference"] = mapping[out["reference"]]
        if "resourceType" in out and f"#{out.get('id')}" in mapping:
            out["id"] = mapping[f"#{out['id']}"][1:]
        return out
    if isinstance(value, list | tuple):
        return type(value)(_renamed(item, mapping) for item in value)
    return copy.deepcopy(value)
