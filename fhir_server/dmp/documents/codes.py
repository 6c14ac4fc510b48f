"""What a DocumentReference says it is: ``type`` from JDV_J07, ``category`` a DMP class, and the
two agreeing (CONTRACT §5).

Why every write is checked: the DMP decides who reads a document from the class of its type (R10;
``authz.matrix`` reads the same type → class ConceptMap). A type outside the value set has no
class, so the document would be stored and then shown to no professional but its author; a
category that contradicts the type's class describes the document as what it is not. Both are
refused (422) on create, update and patch, whatever the path (plain REST, transaction, ITI-65,
ITI-105), before anything is stored.

The codes are data in ``ig/`` (``ig/tools/build_terminology.py``), read through the
:class:`~fhirmodel.terminology.Terminology`; only the canonical URLs of the value sets and map are
named here. The category value set is JDV_J57, the DMP's own classes: CONTRACT §5 names the CI-SIS
JDV_J06, of which J57 is the DMP subset, and J06 is not in the project's reference data (its only
codes beyond J57 are ``99`` Document technique and the digital-signature class, which no DMP
document carries and the authorisation matrix knows nothing of).

A version already stored is not judged again: a patient archiving, or a professional labelling, a
document stored before these checks keeps its codes unchanged and is not refused for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirmodel.errors import listing
from fhirmodel.terminology import Code, Terminology

TYPE_VALUE_SET = "https://mos.esante.gouv.fr/NOS/JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"
CLASS_VALUE_SET = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"
TYPE_TO_CLASS = "https://dmp.example.org/fhir/ConceptMap/dmp-document-type-to-class"

#: The elements judged; a write that leaves both as stored is not judged again.
_JUDGED = ("type", "category")


@dataclass(frozen=True)
class DocumentCodes:
    """The document types and classes a DocumentReference may carry, and the type → class map."""

    types: frozenset[Code]
    classes: frozenset[Code]
    terminology: Terminology

    @classmethod
    def of(cls, terminology: Terminology) -> DocumentCodes:
        """From the local terminology; a missing value set or map stops the server at start rather
        than letting every document through (or none)."""
        types = terminology.expand(TYPE_VALUE_SET)
        classes = terminology.expand(CLASS_VALUE_SET)
        missing = [url for url, codes in ((TYPE_VALUE_SET, types), (CLASS_VALUE_SET, classes)) if not codes]
        if not terminology.has_concept_map(TYPE_TO_CLASS):
            missing.append(TYPE_TO_CLASS)
        if missing or types is None or classes is None:
            raise ValueError(f"ig/ lacks the document terminology: {', '.join(missing)}")
        return cls(types, classes, terminology)

    def class_of(self, system: str, code: str) -> frozenset[Code]:
        """The DMP class(es) of a document type (none for a type without a class)."""
        return self.terminology.translate(TYPE_TO_CLASS, system, code)

    def check(self, document: dict[str, Any], stored: dict[str, Any] | None = None) -> None:
        """422 listing every problem :meth:`problems` finds, each issue naming its element."""
        problems = self.problems(document, stored)
        if problems:
            raise listing(422, "code-invalid", problems)

    def problems(self, document: dict[str, Any], stored: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """``(element, message)`` for each code of ``document`` the DMP does not take; none when
        ``stored`` (the current version) already had the same type and category."""
        if document.get("resourceType") != "DocumentReference":
            return []
        if stored is not None and all(document.get(key) == stored.get(key) for key in _JUDGED):
            return []
        problems: list[tuple[str, str]] = []
        type_classes: set[Code] = set()
        kind = document.get("type")
        if isinstance(kind, dict):
            codings = _codings(kind)
            if not codings:
                problems.append(("DocumentReference.type", "no coding: a document type is a code of JDV_J07"))
            for coding in codings:
                if coding not in self.types:
                    message = f"{_shown(coding)} is not a document type of JDV_J07-XdsTypeCode-CISIS"
                    problems.append(("DocumentReference.type", message))
                type_classes |= self.class_of(*coding)
        for index, category in enumerate(document.get("category") or []):
            where = f"DocumentReference.category[{index}]"
            codings = _codings(category) if isinstance(category, dict) else []
            if not codings:
                problems.append((where, "no coding: a document class is a code of JDV_J57"))
            for coding in codings:
                if coding not in self.classes:
                    problems.append((where, f"{_shown(coding)} is not a document class of JDV_J57-ClassCode-DMP"))
                elif type_classes and coding not in type_classes:
                    expected = ", ".join(sorted(code for _, code in type_classes))
                    problems.append(
                        (where, f"class {coding[1]} disagrees with DocumentReference.type, whose class is {expected}")
                    )
        return problems


def _codings(concept: dict[str, Any]) -> list[Code]:
    return [
        (str(c.get("system") or ""), str(c.get("code") or ""))
        for c in concept.get("coding") or []
        if isinstance(c, dict) and (c.get("system") or c.get("code"))
    ]


def _shown(coding: Code) -> str:
    return f"{coding[0]}|{coding[1]}"
