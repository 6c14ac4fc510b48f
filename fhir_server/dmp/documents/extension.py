"""The documents capability as the FHIR machinery sees it: what it adds to writes, to
transactions, to Binary reads, and its operation (see :mod:`fhir_server.fhir.service`).

Every write path (plain REST, Bundle entries, ITI-65, ITI-105) reaches these rules through the
machinery, so none of them has document logic of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhir_server.dmp.documents import mhd, publish, replacement
from fhir_server.dmp.documents.cda import PAGE_CSP, CdaError, cda_to_html
from fhir_server.dmp.documents.codes import DocumentCodes
from fhir_server.dmp.documents.generate_metadata import GENERATE_METADATA, generate_metadata
from fhir_server.fhir.messages import FhirRequest
from fhir_server.fhir.service import (
    BundleEntry,
    Extensions,
    NotShown,
    Operation,
    Submission,
    Then,
    WriteRule,
)
from fhirmodel.terminology import Terminology

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService


class DocumentRules(WriteRule):
    """A DocumentReference's codes (CONTRACT §5), its inline content (ITI-105), its replacements."""

    def __init__(self, codes: DocumentCodes):
        self.codes = codes

    def prepare_create(
        self, svc: FhirService, req: FhirRequest, resource: dict[str, Any]
    ) -> tuple[dict[str, Any], Then]:
        inline = publish.extract_inline_content(svc, req, resource)
        return inline.document, lambda: inline.store(svc, req)

    def check(self, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.codes.check(new, old)

    def plan(self, svc: FhirService, req: FhirRequest, new: dict[str, Any] | None, old: dict[str, Any] | None) -> Then:
        replaced = replacement.plan(svc, req, new, old)
        return lambda: replacement.supersede(svc, req, replaced)


class ProvideBundles:
    """IHE MHD ITI-65: a transaction declaring (or carrying) a Provide Document Bundle."""

    def check_batch(self, bundle: dict[str, Any]) -> None:
        mhd.check_batch(bundle)

    def submission(self, svc: FhirService, bundle: dict[str, Any], entries: Sequence[BundleEntry]) -> Submission | None:
        return mhd.provide_bundle(svc, bundle, entries)


class CdaPage:
    """A CDA R2 document shown to people (built element by element, nothing active copied)."""

    policy = PAGE_CSP

    def render(self, content_type: str, data: bytes) -> str:
        if not publish.is_xml(content_type):
            raise NotShown("only a CDA document is, and it is not an XML document")
        try:
            return cda_to_html(data)
        except CdaError as exc:
            raise NotShown(f"only a CDA document is, and {exc}") from None


def documents_extensions(terminology: Terminology) -> Extensions:
    return Extensions(
        write_rules=(DocumentRules(DocumentCodes.of(terminology)),),
        bundle_checks=(ProvideBundles(),),
        binary_page=CdaPage(),
        operations=(
            Operation(
                "DocumentReference",
                "generate-metadata",
                GENERATE_METADATA,
                lambda svc, req, _id: generate_metadata(svc, req),
            ),
        ),
    )
