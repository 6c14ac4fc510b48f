"""Examples made to carry the DMP's document codes (CONTRACT §5), for tests that run them for what
they are examples of.

The IHE MHD, NIST and ANS examples were not written for the DMP's value sets: most IHE and NIST
ones type their documents with LOINC codes outside JDV_J07 or classify them with LOINC or IHE codes
instead of a DMP class, and the ANS drafts pair types with the class of another type. The server
refuses them as they are (``tests/test_document_codes.py`` pins which, and why); the tests that use
them to exercise something else repair them here, openly: a type outside JDV_J07 becomes
``60591-5`` (synthèse médicale), and the category becomes the class of the type.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fhir_server.dmp.documents.codes import DocumentCodes
from fhirmodel.terminology import Terminology
from tests.paths import ROOT

LOINC = "http://loinc.org"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
#: What a type outside JDV_J07 becomes: synthèse médicale, of class 11.
REPLACEMENT_TYPE = (LOINC, "60591-5")
CODES = DocumentCodes.of(Terminology.load(*(ROOT / "ig" / f for f in ("CodeSystem", "ValueSet", "ConceptMap"))))

#: The NIST fixtures' type (LOINC 34895-3 "Education Note", outside JDV_J07) and class (IHE
#: ``REPORTS``), as their XML spells them.
_NIST_TYPE = re.compile(r'<system value="http://loinc.org"/>(\s*)<code value="34895-3"/>(\s*)<display value="[^"]*"/>')
_NIST_CLASS = re.compile(
    r'<system value="urn:oid:1.3.6.1.4.1.19376.1.2.6.1"/>(\s*)<code value="REPORTS"/>(\s*)<display value="[^"]*"/>'
)


def dmp_codes(resource: Any) -> Any:
    """A copy of ``resource`` (a DocumentReference, or a Bundle of them) with DMP document codes."""
    out = copy.deepcopy(resource)
    for document in _documents(out):
        coding = next(iter(_codings(document.get("type"))), None)
        if coding is None:  # no type (minimal metadata): only a category outside the DMP's goes
            if any(c not in CODES.classes for category in document.get("category") or [] for c in _codings(category)):
                document.pop("category")
            continue
        if coding not in CODES.types:
            coding = REPLACEMENT_TYPE
            document["type"] = {"coding": [{"system": coding[0], "code": coding[1]}]}
        classes = sorted(CODES.class_of(*coding))
        if classes:
            document["category"] = [{"coding": [{"system": system, "code": code} for system, code in classes]}]
        else:
            document.pop("category", None)
    return out


def nist_dmp_codes(xml: bytes) -> bytes:
    """A NIST fixture with the same repair, in its XML."""
    text = xml.decode("utf-8")
    text = _NIST_TYPE.sub(rf'<system value="{LOINC}"/>\1<code value="{REPLACEMENT_TYPE[1]}"/>\2', text)
    text = _NIST_CLASS.sub(rf'<system value="{TRE_A03}"/>\1<code value="11"/>\2', text)
    return text.encode("utf-8")


def _documents(resource: Any) -> list[dict[str, Any]]:
    if not isinstance(resource, dict):
        return []
    if resource.get("resourceType") == "DocumentReference":
        return [resource]
    if resource.get("resourceType") == "Bundle":
        return [d for entry in resource.get("entry") or [] for d in _documents(entry.get("resource"))]
    return []


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [(str(c.get("system")), str(c.get("code"))) for c in concept.get("coding") or []]
