"""CDA R2 documents (ANS CI-SIS) for the DMP: safe parsing, PDSm metadata, checks, rendering.

The package's interface is what this module names; its parts are :mod:`.safe_xml` (1),
:mod:`.model` and :mod:`.header` (reading the header), :mod:`.metadata` (2), :mod:`.checks` (3)
and :mod:`.rendering` (4).

Why: an IHE MHD ITI-65 submission carries a CDA in a Binary next to the DocumentReference that
describes it. The server must

1. read the CDA without exposing itself to XML attacks (external entities, entity expansion,
   deep nesting, huge documents): the document comes from a client;
2. derive the DocumentReference the French PDSm profile expects from the CDA header, for clients
   that send only the document;
3. refuse metadata that contradicts the document: the DMP's access rules are decided on the
   DocumentReference (patient, type, author), so a mismatch would show the document to the wrong
   people or hide it from the right ones;
4. show a CDA to people without a CDA viewer, without letting the document run code in their
   browser.

Where each header element goes follows the CI-SIS "Volet Structuration minimale" and the ANS
PDSm examples (``ans.fhir.fr.pdsm4dmp``). Code tables come from ``ig/`` (the JDV_J66 type → TRE_A03
class ConceptMap, the TRE_G15 CodeSystem and the OIDs of the CodeSystems there); the few other code
systems a CDA header uses are small constants below, each citing its source.
"""

from fhir_server.dmp.documents.cda.checks import check_against
from fhir_server.dmp.documents.cda.header import hl7_ts_to_fhir, parse_cda
from fhir_server.dmp.documents.cda.metadata import document_reference_from_cda
from fhir_server.dmp.documents.cda.model import CdaDocument, CdaError, Identifier, NotClinicalDocument
from fhir_server.dmp.documents.cda.rendering import PAGE_CSP, cda_to_html
from fhir_server.dmp.documents.cda.safe_xml import MAX_DEPTH

__all__ = [
    "MAX_DEPTH",
    "PAGE_CSP",
    "CdaDocument",
    "CdaError",
    "Identifier",
    "NotClinicalDocument",
    "cda_to_html",
    "check_against",
    "document_reference_from_cda",
    "hl7_ts_to_fhir",
    "parse_cda",
]
