"""Local CodeSystems, ValueSets and ConceptMaps from ``ig/``, for ``:in``/``:not-in`` and binding checks.

Only what a simple expansion needs: ``compose.include`` of listed concepts or of a whole local
CodeSystem (``filter`` is not supported and makes a ValueSet unexpandable), minus
``compose.exclude``, plus ``expansion.contains`` when a ValueSet ships pre-expanded. ConceptMaps
are read as plain lookups (source code → target codes), without dependsOn/product.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Code = tuple[str, str]  # (system, code)


class Terminology:
    def __init__(self, resources: Iterable[dict[str, Any]]):
        self._code_systems: dict[str, dict[str, Any]] = {}
        self._value_sets: dict[str, dict[str, Any]] = {}
        self._concept_maps: dict[str, dict[Code, frozenset[Code]]] = {}
        for res in resources:
            url = res.get("url")
            if not url:
                continue
            if res.get("resourceType") == "CodeSystem":
                self._code_systems[url] = res
            elif res.get("resourceType") == "ValueSet":
                self._value_sets[url] = res
            elif res.get("resourceType") == "ConceptMap":
                self._concept_maps[url] = _lookups(res)
        self._expanded: dict[str, frozenset[Code] | None] = {}
        self._system_code_sets: dict[str, frozenset[str]] = {}

    @classmethod
    def load(cls, *folders: Path) -> Terminology:
        resources = []
        for folder in folders:
            if folder.is_dir():
                for path in sorted(folder.glob("*.json")):
                    resources.append(json.loads(path.read_text(encoding="utf-8")))
        return cls(resources)

    def has_concept_map(self, url: str) -> bool:
        return url.split("|")[0] in self._concept_maps

    def translate(self, url: str, system: str, code: str) -> frozenset[Code]:
        """The target codes the local ConceptMap ``url`` gives ``system|code``: empty when the
        map lists it as unmatched, does not list it, or is unknown."""
        return self._concept_maps.get(url.split("|")[0], {}).get((system, code), frozenset())

    def has_code(self, system: str, code: str) -> bool:
        """Whether ``code`` is defined by the local CodeSystem ``system`` (False if unknown)."""
        codes = self._system_code_sets.get(system)
        if codes is None:
            codes = frozenset(self._system_codes(system) or ())
            self._system_code_sets[system] = codes
        return code in codes

    def subsumed(self, system: str, code: str) -> frozenset[str] | None:
        """``code`` and every code below it in the local CodeSystem ``system`` (its nested
        ``concept`` hierarchy): what token ``:below`` matches. None when the system is not known
        here (what is below a code cannot then be told) or does not define the code."""
        if not self.has_code(system, code):
            return None
        pending = list((self._code_systems.get(system) or {}).get("concept") or [])
        while pending:
            concept = pending.pop()
            if concept.get("code") == code:
                below: set[str] = set()
                stack = [concept]
                while stack:
                    current = stack.pop()
                    below.add(str(current.get("code")))
                    stack.extend(current.get("concept") or [])
                return frozenset(below)
            pending.extend(concept.get("concept") or [])
        return None

    def display(self, system: str, code: str) -> str | None:
        """The display of ``code`` in the local CodeSystem ``system`` (a profession's name for a
        message to a patient), else as a local ValueSet enumerating it names it (LOINC document
        types have no local CodeSystem, but JDV_J07 lists their French names); None when unknown."""
        pending = list((self._code_systems.get(system) or {}).get("concept") or [])
        while pending:
            concept = pending.pop()
            if concept.get("code") == code:
                display = concept.get("display")
                return display if isinstance(display, str) else None
            pending.extend(concept.get("concept") or [])
        for value_set in self._value_sets.values():
            for part in (value_set.get("compose") or {}).get("include") or []:
                if part.get("system") != system:
                    continue
                for concept in part.get("concept") or []:
                    if concept.get("code") == code and isinstance(concept.get("display"), str):
                        return str(concept["display"])
        return None

    def _system_codes(self, system: str) -> list[str] | None:
        cs = self._code_systems.get(system)
        if cs is None:
            return None
        out: list[str] = []

        def walk(concepts: list[dict[str, Any]]) -> None:
            for concept in concepts:
                out.append(concept["code"])
                walk(concept.get("concept") or [])

        walk(cs.get("concept") or [])
        return out

    def _codes_of(self, parts: list[dict[str, Any]]) -> set[Code] | None:
        codes: set[Code] = set()
        for part in parts:
            if part.get("filter"):
                return None
            for vs_url in part.get("valueSet") or ():
                nested = self.expand(vs_url)
                if nested is None:
                    return None
                codes |= nested
            system = part.get("system")
            if not system:
                continue
            listed = part.get("concept")
            if listed:
                codes |= {(system, c["code"]) for c in listed}
            elif not part.get("valueSet"):
                whole = self._system_codes(system)
                if whole is None:
                    return None
                codes |= {(system, c) for c in whole}
        return codes

    def expand(self, url: str) -> frozenset[Code] | None:
        """The codes of a local ValueSet, or ``None`` when it is unknown or cannot be expanded."""
        key = url.split("|")[0]
        if key in self._expanded:
            return self._expanded[key]
        self._expanded[key] = None  # guards against cycles
        vs = self._value_sets.get(key)
        result: frozenset[Code] | None = None
        if vs is not None:
            contains = (vs.get("expansion") or {}).get("contains")
            if contains:
                result = frozenset((c["system"], c["code"]) for c in contains if "code" in c)
            else:
                compose = vs.get("compose") or {}
                included = self._codes_of(compose.get("include") or [])
                excluded = self._codes_of(compose.get("exclude") or [])
                if included is not None and excluded is not None:
                    result = frozenset(included - excluded)
        self._expanded[key] = result
        return result


def _lookups(concept_map: dict[str, Any]) -> dict[Code, frozenset[Code]]:
    """Each source ``(system, code)`` of a ConceptMap → the ``(system, code)`` it maps to;
    ``unmatched`` and ``disjoint`` targets map to nothing."""
    out: dict[Code, set[Code]] = {}
    for group in concept_map.get("group") or []:
        source, target = group.get("source"), group.get("target")
        for element in group.get("element") or []:
            found = out.setdefault((str(source), str(element.get("code"))), set())
            for mapped in element.get("target") or []:
                if mapped.get("code") and mapped.get("equivalence") not in ("unmatched", "disjoint"):
                    found.add((str(target), str(mapped["code"])))
    return {key: frozenset(codes) for key, codes in out.items()}
