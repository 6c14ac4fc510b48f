"""The FHIRPath invariants of the R4 base definitions, checked on every write.

Why: R4 validity is more than structure — a Period ends after it starts (``per-1``), an attachment
with data says its type (``att-1``), an extension has a value or sub-extensions (``ext-1``), a
contained resource is referenced (``dom-3``)... The invariants are data, extracted from the R4
StructureDefinitions into ``ig/invariants/r4-invariants.json`` by ``ig/tools/build_invariants.py``
(which says which were left out and why), and compiled once at start with fhirpathpy.

Each applies at its context: the resource itself, an element path of it (``Consent.provision``:
every such element must meet it), or a datatype (every element of that type, wherever it is).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

_R4 = models["r4"]

#: Whether a resource meets an invariant; the second argument, when given, is the resource's
#: elements by datatype already computed (:func:`elements_by_type`: datatype invariants share it).
Check = Callable[[dict[str, Any], "dict[str, list[Any]] | None"], bool]


@dataclass(frozen=True)
class Invariant:
    key: str
    context: str  # "Patient", "Consent.provision", or a datatype name ("Period") when ``datatype``
    human: str
    expression: str
    datatype: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "context": self.context,
            "datatype": self.datatype,
            "human": self.human,
            "expression": self.expression,
        }

    def applies_to(self, resource_type: str) -> bool:
        return self.datatype or self.context.split(".")[0] == resource_type


def compile_invariant(invariant: Invariant) -> Check:
    """A function telling whether a resource meets ``invariant`` at every place it applies."""
    options = {"traceFn": _silent, "userInvocationTable": _FHIR_FUNCTIONS}
    if invariant.datatype:
        expression = f"all({invariant.expression})"  # over the elements of that datatype
    elif "." in invariant.context:
        expression = f"{invariant.context}.all({invariant.expression})"
    else:
        expression = invariant.expression
    compiled = compile_fhirpath(expression, _R4, options)

    def check(resource: dict[str, Any], by_type: dict[str, list[Any]] | None = None) -> bool:
        env = {"resource": resource, "rootResource": resource}
        if invariant.datatype:
            nodes = (by_type if by_type is not None else elements_by_type(resource)).get(invariant.context)
            if not nodes:
                return True  # no element of that type here
            result = compiled(nodes, env)  # type: ignore[arg-type]  # fhirpathpy also takes a node list
        else:
            result = compiled(resource, env)
        return result == [True] or result == []

    return check


def elements_by_type(resource: dict[str, Any]) -> dict[str, list[Any]]:
    """Every element of ``resource`` as fhirpathpy nodes, by the datatype the R4 model gives it:
    walked once per resource, so that a datatype invariant costs nothing where its type is absent
    (a walk per invariant costs a dozen times more). A node is filed under its exact type: an
    ``Age`` is not also listed as a ``Quantity``."""
    grouped: dict[str, list[Any]] = {}
    for node in _DESCENDANTS(resource, {}):
        path = getattr(node, "path", None)
        if isinstance(path, str) and "." not in path:
            grouped.setdefault(path, []).append(node)
    return grouped


def _has_value(items: list[Any]) -> list[bool]:
    """FHIRPath-in-FHIR ``hasValue()`` (R4 fhirpath.html §2.1.9.2.6), which fhirpathpy lacks: a
    single primitive that has a value (not only extensions)."""
    return [len(items) == 1 and items[0] is not None and not isinstance(items[0], (dict, list))]


#: FHIR's additions to FHIRPath the invariants use and fhirpathpy does not implement.
_FHIR_FUNCTIONS = {"hasValue": {"fn": _has_value, "arity": {0: []}}}


def _silent(*_: Any) -> None:
    """``trace()`` in an invariant (``dom-3`` uses it) prints nothing."""


_DESCENDANTS = compile_fhirpath("descendants()", _R4, {"returnRawData": True})


class InvariantSet:
    """The invariants of ``ig/invariants``, compiled, per resource type."""

    def __init__(self, invariants: list[Invariant]):
        self._compiled = [(invariant, compile_invariant(invariant)) for invariant in invariants]

    @classmethod
    def load(cls, path: Path) -> InvariantSet:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            [
                Invariant(i["key"], i["context"], i["human"], i["expression"], bool(i.get("datatype")))
                for i in data["invariants"]
            ]
        )

    def broken(self, resource: dict[str, Any]) -> list[tuple[str, str, str]]:
        """``(path, code, message)`` of each invariant ``resource`` breaks.

        An invariant fhirpathpy fails to evaluate on this resource (the build script kept only those
        it evaluates on the R4 examples) is not held against the client.
        """
        rtype = str(resource.get("resourceType"))
        problems = []
        by_type: dict[str, list[Any]] | None = None
        for invariant, check in self._compiled:
            if not invariant.applies_to(rtype):
                continue
            try:
                if invariant.datatype and by_type is None:
                    by_type = elements_by_type(resource)
                holds = check(resource, by_type)
            except Exception:
                continue
            if not holds:
                where = invariant.context if not invariant.datatype else rtype
                problems.append((where, "invariant", f"{invariant.key}: {invariant.human} ({invariant.context})"))
        return problems
