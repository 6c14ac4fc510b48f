"""ITI-106 Generate Metadata (IHE MHD 4.2): ``POST [base]/DocumentReference/$generate-metadata`` with
a Parameters whose ``document`` is a Binary holding a CDA R2 document. Why the server writes the
metadata: a DMP decides who sees a document from its DocumentReference (patient, type, class,
author), so metadata derived from the document itself by one tested mapping (``documents.cda``,
the ANS PDSm shape) cannot contradict it, whereas each client writing its own could.

The document and its description are stored together, in one transaction, under the same write
rules as any create (the guard's ``check_write``): the CDA's patient must be the token's (R1) and
have a DMP, and the caller must be allowed to add that document to it (R15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.dmp.documents.cda import CdaDocument, CdaError, Identifier, document_reference_from_cda, parse_cda
from fhir_server.dmp.documents.publish import (
    Content,
    binary_url,
    cda_problem,
    decode_base64,
    is_xml,
    new_binary,
    store_binaries,
)
from fhir_server.fhir.interactions.common import written
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhirmodel.errors import FhirError, bad_request, not_found
from fhirmodel.ids import new_id
from fhirmodel.indexing import parse_reference
from storage.interface import Gone, NotFound, Stored
from storage.query import OPEN_SCOPE, Query, Reference, Token

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

#: The canonical of IHE MHD's OperationDefinition (its ``url``, as the MHD CapabilityStatements cite it).
GENERATE_METADATA = "https://profiles.ihe.net/ITI/MHD/OperationDefinition/generate-metadata"
#: Parameters.parameter names that carry the document: ``document`` (the MHD one) and ``url``.
_DOCUMENT = "document"
_URL = "url"


@dataclass(frozen=True)
class _Source:
    """The document to describe: its bytes, and the stored Binary holding them if there is one."""

    content: Content
    binary_id: str | None  # None: a new Binary is created


def generate_metadata(svc: FhirService, req: FhirRequest) -> FhirResponse:
    """ITI-106: store a CDA and the DocumentReference generated from it; 201 with that resource."""
    req.checks.check_operation("DocumentReference", "generate-metadata", ())
    with svc.store.transaction():
        source = _source(svc, req)
        doc = _clinical_document(source.content)
        ins = _ins(doc)
        patient = _stored_patient(svc, req, ins)
        document_id = new_id()
        binary_id = source.binary_id or new_id()
        reference = _document_reference(svc, doc, source.content, patient, ins, binary_url(svc, binary_id))
        reference["id"] = document_id
        req.checks.check_write("POST", "DocumentReference", reference, None)  # R1, R2, R15, labels
        if patient is None:
            raise not_found(f"there is no DMP (Patient) with the CDA's INS {ins[0]}|{ins[1]}")
        if source.binary_id is None:
            store_binaries(svc, req, [new_binary(binary_id, source.content, document_id)])
        stored = svc.store.create(reference)
        req.checks.after_write("POST", stored, None)
    return written(svc, req, stored, 201)


def _source(svc: FhirService, req: FhirRequest) -> _Source:
    """The one parameter naming the document: a Binary inline, or the URL of a stored one."""
    body = req.body
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("$generate-metadata takes a Parameters resource", code="structure")
    given = [p for p in body.get("parameter") or [] if isinstance(p, dict) and p.get("name") in (_DOCUMENT, _URL)]
    if len(given) != 1:
        raise bad_request(
            "$generate-metadata takes exactly one 'document' parameter (a Binary holding a CDA R2 document)",
            code="required",
            expression=["Parameters.parameter"],
        )
    parameter = given[0]
    if "resource" in parameter:
        return _Source(_inline_binary(svc, parameter["resource"]), None)
    url = _parameter_url(parameter)
    if url is None:
        raise bad_request(
            f"parameter '{parameter['name']}' holds neither a Binary (resource) nor a Binary's URL",
            expression=["Parameters.parameter"],
        )
    return _stored_binary(svc, req, url)


def _inline_binary(svc: FhirService, resource: Any) -> Content:
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind == "Bundle":
        raise FhirError(
            422,
            "document: FHIR Document Bundles are not supported; send the CDA R2 document as a Binary",
            "not-supported",
            expression=["Parameters.parameter.resource"],
        )
    if kind != "Binary":
        raise bad_request("document: a Binary resource is expected", expression=["Parameters.parameter.resource"])
    svc.validator.validate(resource, expected_type="Binary")
    return Content(decode_base64(resource.get("data", ""), "Binary.data"), str(resource.get("contentType")))


def _parameter_url(parameter: dict[str, Any]) -> str | None:
    for key in ("valueUrl", "valueUri", "valueString"):
        if isinstance(parameter.get(key), str):
            return str(parameter[key])
    reference = parameter.get("valueReference")
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    return None


def _stored_binary(svc: FhirService, req: FhirRequest, url: str) -> _Source:
    """A Binary of this server named by URL.

    Content uploaded ahead of its metadata (``POST Binary``) is seen by nobody until a
    DocumentReference describes it (authz.policy); describing it is what this operation is for, so
    such a Binary may be named. One already described is not described twice: 422 for a caller who
    sees it, 404 for one who does not (its existence is not theirs to learn).
    """
    rtype, rid, _ = parse_reference(url, svc.config.base_url)
    if rtype != "Binary" or rid is None:
        raise FhirError(
            422, f"url: {url} is not a Binary of this server", "invalid", expression=["Parameters.parameter"]
        )
    if _described(svc, rid):
        if _visible(svc, req, rid):
            raise FhirError(422, f"Binary/{rid} is already described by a DocumentReference", "duplicate")
        raise not_found(f"Binary/{rid} is not known")
    try:
        binary = svc.store.read("Binary", rid, OPEN_SCOPE).json()
    except (NotFound, Gone):
        raise not_found(f"Binary/{rid} is not known") from None
    return _Source(Content(decode_base64(binary.get("data", ""), "Binary.data"), str(binary.get("contentType"))), rid)


def _described(svc: FhirService, binary_id: str) -> bool:
    query = Query("DocumentReference", Reference("attachment", "Binary", binary_id), count=1, total=False)
    return bool(svc.store.search(query, OPEN_SCOPE).matches)


def _visible(svc: FhirService, req: FhirRequest, binary_id: str) -> bool:
    try:
        svc.store.read("Binary", binary_id, req.scope)
    except (NotFound, Gone):
        return False
    return True


def _clinical_document(content: Content) -> CdaDocument:
    """The CDA's header; 422 naming the problem for anything that is not a usable CDA R2."""
    if not is_xml(content.content_type):
        raise FhirError(
            422,
            f"document: contentType {content.content_type} is not a CDA R2 document (XML expected);"
            " $generate-metadata describes CDA R2 documents only",
            "not-supported",
            expression=["Binary.contentType"],
        )
    try:
        return parse_cda(content.data)
    except CdaError as exc:
        raise cda_problem(exc, "Binary.data") from None


def _ins(doc: CdaDocument) -> Identifier:
    try:
        return doc.require_ins()
    except CdaError as exc:
        raise cda_problem(exc, "Binary.data") from None


def _stored_patient(svc: FhirService, req: FhirRequest, ins: Identifier) -> Stored | None:
    """The DMP's Patient carrying the CDA's INS, among those the caller may see (R1 keeps
    another patient's out of reach: the write rules then say why)."""
    query = Query("Patient", Token("identifier", ins[0], ins[1]), count=1, total=False)
    found = svc.store.search(query, req.scope).matches
    return found[0] if found else None


def _document_reference(
    svc: FhirService, doc: CdaDocument, content: Content, patient: Stored | None, ins: Identifier, url: str
) -> dict[str, Any]:
    """The PDSm DocumentReference of the CDA, about the stored Patient (or, when none is visible,
    the INS: the write rules then refuse it with the reason)."""
    subject = {"reference": f"Patient/{patient.id}"} if patient else {"identifier": {"system": ins[0], "value": ins[1]}}
    reference = document_reference_from_cda(
        doc,
        patient_reference=subject,
        binary_url=url,
        size=content.size,
        sha1_b64=content.sha1,
        content_type=content.content_type,
    )
    svc.validator.validate(reference, expected_type="DocumentReference")
    return reference
