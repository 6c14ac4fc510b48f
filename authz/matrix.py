"""The R10 authorisation matrix: which document types a profession may read.

Data, not code: ``ig/authorisation/authorisation-matrix.csv`` (profession TRE_G15 × document class
TRE_A03, with type-level exceptions) and the type → class map
``ig/ConceptMap/ConceptMap-dmp-document-type-to-class.json`` (JDV_J66). The CSV has a header
``profession_code,profession,class_code,type_code,access`` and two kinds of rows:

- a **class row**: ``class_code`` a TRE_A03 code, ``type_code`` ``*`` — rules every type of the
  class;
- a **type row** (exception): ``type_code`` a JDV_J66 code, given without its system (LOINC,
  TRE_A05 or TRE_A12; it must be unambiguous), ``class_code`` ``*`` or the type's own class —
  wins over the class row for that type.

``access`` is ``allow`` or ``deny``; anything not allowed is denied (a profession absent from the
matrix reads nothing, a type without a class is readable only through an ``allow`` type row). A
malformed row raises :class:`ValueError` naming its line. Every profession's readable types are
computed once, at load.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
MATRIX_FILE = Path("authorisation") / "authorisation-matrix.csv"
CONCEPT_MAP_FILE = Path("ConceptMap") / "ConceptMap-dmp-document-type-to-class.json"
CODE_SYSTEM_DIR = Path("CodeSystem")
HEADER = ("profession_code", "profession", "class_code", "type_code", "access")
ANY = "*"

DocType = tuple[str, str]  # (system, code)


@dataclass(frozen=True)
class AuthorisationMatrix:
    type_classes: Mapping[DocType, str | None]
    """Every known document type (JDV_J66) → its class (TRE_A03), ``None`` when it has none."""
    professions: frozenset[str]
    """The known profession codes (TRE_G15, deprecated ones included)."""
    readable: Mapping[str, frozenset[DocType]]
    """Profession code → the document types it may read (only professions listed in the matrix)."""

    @classmethod
    def load(cls, ig_dir: Path) -> AuthorisationMatrix:
        type_classes = _read_concept_map(ig_dir / CONCEPT_MAP_FILE)
        code_systems = _read_code_systems(ig_dir / CODE_SYSTEM_DIR, {TRE_G15, TRE_A03})
        professions = code_systems[TRE_G15]
        classes = code_systems[TRE_A03]
        path = ig_dir / MATRIX_FILE
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        return cls.from_rows(rows, type_classes, professions, classes, source=str(path))

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[list[str]],
        type_classes: Mapping[DocType, str | None],
        professions: Iterable[str],
        classes: Iterable[str],
        source: str = "authorisation matrix",
    ) -> AuthorisationMatrix:
        """Build from the CSV's rows (header first); ``source`` names the file in errors."""
        known_professions = frozenset(professions)
        known_classes = frozenset(classes)
        by_code: dict[str, list[DocType]] = {}
        for doc_type in type_classes:
            by_code.setdefault(doc_type[1], []).append(doc_type)

        class_rules: dict[str, dict[str, bool]] = {}  # profession -> class -> allowed
        type_rules: dict[str, dict[DocType, bool]] = {}  # profession -> type -> allowed
        seen: dict[tuple[str, str, str], int] = {}  # (profession, class, type) key -> line
        header_seen = False
        for line, raw in enumerate(rows, start=1):
            fields = [field.strip() for field in raw]
            if not any(fields):
                continue

            def error(message: str, line: int = line) -> ValueError:
                return ValueError(f"{source}, line {line}: {message}")

            if not header_seen:
                if tuple(fields) != HEADER:
                    raise error(f"expected the header {','.join(HEADER)}, found {','.join(fields)}")
                header_seen = True
                continue
            if len(fields) != len(HEADER):
                raise error(f"expected {len(HEADER)} fields, found {len(fields)}")
            profession, label, class_code, type_code, access = fields
            if profession not in known_professions:
                raise error(f"unknown profession {profession!r} (not in TRE_G15)")
            if not label:
                raise error("empty profession label")
            if access not in ("allow", "deny"):
                raise error(f"access must be allow or deny, not {access!r}")
            allowed = access == "allow"
            if type_code == ANY:
                if class_code == ANY:
                    raise error("class_code and type_code cannot both be '*'")
                if class_code not in known_classes:
                    raise error(f"unknown document class {class_code!r} (not in TRE_A03)")
                key = (profession, class_code, ANY)
                class_rules.setdefault(profession, {})[class_code] = allowed
            else:
                candidates = by_code.get(type_code, [])
                if not candidates:
                    raise error(f"unknown document type {type_code!r} (not in JDV_J66)")
                if len(candidates) > 1:
                    systems = ", ".join(sorted(system for system, _ in candidates))
                    raise error(f"document type {type_code!r} is ambiguous (in {systems})")
                doc_type = candidates[0]
                if class_code not in (ANY, type_classes[doc_type]):
                    raise error(
                        f"document type {type_code!r} is of class {type_classes[doc_type]!r}, not {class_code!r}"
                    )
                key = (profession, ANY, type_code)
                type_rules.setdefault(profession, {})[doc_type] = allowed
            if key in seen:
                raise error(f"duplicate rule (first given on line {seen[key]})")
            seen[key] = line
        if not header_seen:
            raise ValueError(f"{source}: empty, expected the header {','.join(HEADER)}")

        readable: dict[str, frozenset[DocType]] = {}
        for profession in sorted(class_rules.keys() | type_rules.keys()):
            by_class = class_rules.get(profession, {})
            by_type = type_rules.get(profession, {})
            readable[profession] = frozenset(
                doc_type
                for doc_type, class_code in type_classes.items()
                if by_type.get(doc_type, class_code is not None and by_class.get(class_code, False))
            )
        return cls(
            type_classes=MappingProxyType(dict(type_classes)),
            professions=known_professions,
            readable=MappingProxyType(readable),
        )

    def class_of(self, system: str, code: str) -> str | None:
        """The TRE_A03 class of a document type; ``None`` for an unknown type or one without a class."""
        return self.type_classes.get((system, code))

    def may_read(self, profession: str, system: str, code: str) -> bool:
        """R10 for one document type: does the matrix let this profession read it?"""
        return (system, code) in self.readable.get(profession, frozenset())

    def readable_types(self, profession: str) -> frozenset[DocType]:
        """Every (system, code) document type the profession may read; empty when not in the matrix."""
        return self.readable.get(profession, frozenset())

    def is_known_profession(self, code: str) -> bool:
        """Whether ``code`` is a TRE_G15 profession (deprecated codes included)."""
        return code in self.professions


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _read_concept_map(path: Path) -> dict[DocType, str | None]:
    """Document type → class from the ConceptMap; an ``unmatched`` element gives ``None``."""
    cm = _read_json(path)
    if cm.get("resourceType") != "ConceptMap":
        raise ValueError(f"{path}: not a ConceptMap")
    out: dict[DocType, str | None] = {}
    for group in cm.get("group") or []:
        system = group.get("source")
        if not system or group.get("target") != TRE_A03:
            raise ValueError(f"{path}: each group needs a source system and target {TRE_A03}")
        for element in group.get("element") or []:
            codes = {t["code"] for t in element.get("target") or [] if t.get("code")}
            if len(codes) > 1:
                raise ValueError(f"{path}: {system}|{element['code']} maps to several classes {sorted(codes)}")
            out[(system, element["code"])] = codes.pop() if codes else None
    return out


def _read_code_systems(folder: Path, urls: set[str]) -> dict[str, frozenset[str]]:
    """The codes (at every level) of the local CodeSystems with these urls."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted(folder.glob("*.json")):
        cs = _read_json(path)
        if cs.get("resourceType") != "CodeSystem" or cs.get("url") not in urls:
            continue
        codes: set[str] = set()
        stack = list(cs.get("concept") or [])
        while stack:
            concept = stack.pop()
            codes.add(concept["code"])
            stack.extend(concept.get("concept") or [])
        found[cs["url"]] = frozenset(codes)
    missing = urls - found.keys()
    if missing:
        raise ValueError(f"{folder}: no CodeSystem {', '.join(sorted(missing))}")
    return found
