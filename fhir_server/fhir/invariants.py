"""The FHIRPath invariants of the R4 base definitions, checked on every write.

Why: R4 validity is more than structure — a Period ends after it starts (``per-1``), an attachment
with data says its type (``att-1``), an extension has a value or sub-extensions (``ext-1``), a
contained resource is referenced (``dom-3``)... The invariants are data, extracted from the R4
StructureDefinitions into ``ig/invariants/r4-invariants.json`` by ``ig/tools/build_invariants.py``
(which says which were left out and why), and compiled once at start: into Python closures where
:mod:`fhir_server.fhir.invariant_compiler` can, with fhirpathpy for the rest.

Each applies at its context: the resource itself, an element path of it (``Consent.provision``:
every such element must meet it), or a datatype (every element of that type, wherever it is).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import ResourceNode as _Node
from fhirpathpy.models import models

from fhir_server.fhir.invariant_compiler import Compiled, Failed, Unsupported, holds, items_of
from fhir_server.fhir.invariant_compiler import compile_fhirpath as compile_expression

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

    @property
    def evaluated(self) -> str:
        """The expression as it is evaluated: over the elements of its datatype (a datatype
        invariant), over every element at its context's path, or on the resource itself."""
        if self.datatype:
            return f"all({self.expression})"
        if "." in self.context:
            return f"{self.context}.all({self.expression})"
        return self.expression


def compile_invariant(invariant: Invariant) -> Check:
    """A function telling whether a resource meets ``invariant`` at every place it applies."""
    expression = invariant.evaluated
    compiled = with_fhirpathpy(expression)
    try:
        fast: Compiled | None = compile_expression(expression)
    except Unsupported:
        fast = None

    def check(resource: dict[str, Any], by_type: dict[str, list[Any]] | None = None) -> bool:
        start: Any = resource
        if invariant.datatype:
            start = (by_type if by_type is not None else elements_by_type(resource)).get(invariant.context)
            if not start:
                return True  # no element of that type here
        if fast is not None:
            try:
                return holds(fast(items_of(start), resource))
            except Failed:
                raise  # where fhirpathpy fails too
            except Exception:  # Unsupported, or anything unforeseen: fhirpathpy decides
                pass
        result = compiled(start, {"resource": resource, "rootResource": resource})
        return result == [True] or result == []

    return check


def with_fhirpathpy(expression: str) -> Callable[[Any, dict[str, Any]], list[Any]]:
    """``expression`` compiled by fhirpathpy, with FHIR's additions it lacks: the reference the
    compiled closures are held to, and what evaluates the rest."""
    return compile_fhirpath(expression, _R4, {"traceFn": _silent, "userInvocationTable": _FHIR_FUNCTIONS})


def elements_by_type(resource: dict[str, Any], types: frozenset[str] | None = None) -> dict[str, list[Any]]:
    """Every element of ``resource`` (of one of ``types``, when given) as fhirpathpy nodes, by the
    datatype the R4 model gives it: walked once per resource, so that a datatype invariant costs
    nothing where its type is absent (a walk per invariant costs a dozen times more). A node is
    filed under its exact type: an ``Age`` is not also listed as a ``Quantity``.

    The walk is fhirpathpy's ``descendants()`` without the FHIRPath machinery around it: the same
    children (primitive extensions included), typed from the same model tables, the same way
    (``extension`` is an Extension, a resource is typed by its ``resourceType``), in a fraction of
    its time; the tests hold the two to the same answer."""
    grouped: dict[str, list[Any]] = {}
    pending: list[tuple[Any, str]] = [(resource, str(resource.get("resourceType")))]
    while pending:
        data, path = pending.pop()
        if not isinstance(data, dict):
            continue
        for prop, value in data.items():
            child = "Extension" if prop == "extension" else f"{path}.{prop}"
            child = _ELSEWHERE.get(child, child)
            child = _PATH_TYPE.get(child, child)
            for item in value if isinstance(value, list) else (value,):
                typed = str(item["resourceType"]) if isinstance(item, dict) and "resourceType" in item else child
                if "." not in typed and (types is None or typed in types):
                    grouped.setdefault(typed, []).append(_Node.create_node(item, typed))
                pending.append((item, typed))
    return grouped


def _has_value(items: list[Any]) -> list[bool]:
    """FHIRPath-in-FHIR ``hasValue()`` (R4 fhirpath.html §2.1.9.2.6), which fhirpathpy lacks: a
    single primitive that has a value (not only extensions)."""
    return [len(items) == 1 and items[0] is not None and not isinstance(items[0], (dict, list))]


#: FHIR's additions to FHIRPath the invariants use and fhirpathpy does not implement.
_FHIR_FUNCTIONS = {"hasValue": {"fn": _has_value, "arity": {0: []}}}


def _silent(*_: Any) -> None:
    """``trace()`` in an invariant (``dom-3`` uses it) prints nothing."""


_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
_PATH_TYPE: dict[str, str] = _R4["path2Type"]


class InvariantSet:
    """The invariants of ``ig/invariants``, compiled, per resource type."""

    def __init__(self, invariants: list[Invariant]):
        self._compiled = [(invariant, compile_invariant(invariant)) for invariant in invariants]
        self._named = [None if invariant.datatype else named_elements(invariant) for invariant in invariants]
        self._datatypes = frozenset(invariant.context for invariant in invariants if invariant.datatype)
        #: What an invariant of a resource type says of a resource with none of the elements it
        #: names (None: it cannot be evaluated), by (its index, the type): found once, then reused.
        self._bare: dict[tuple[int, str], bool | None] = {}

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
        present = _top_level_names(resource)
        for index, (invariant, check) in enumerate(self._compiled):
            if not invariant.applies_to(rtype):
                continue
            named = self._named[index]
            if named is not None and not named & present:
                holds = self._on_bare(index, rtype)
            else:
                try:
                    if invariant.datatype and by_type is None:
                        by_type = elements_by_type(resource, self._datatypes)
                    holds = check(resource, by_type)
                except Exception:
                    holds = None
            if holds is False:
                where = invariant.context if not invariant.datatype else rtype
                problems.append((where, "invariant", f"{invariant.key}: {invariant.human} ({invariant.context})"))
        return problems

    def _on_bare(self, index: int, rtype: str) -> bool | None:
        """The invariant's verdict on a resource of ``rtype`` with no element: the verdict on any
        resource without the elements it names, since every path it follows then ends empty."""
        key = (index, rtype)
        if key not in self._bare:
            try:
                self._bare[key] = self._compiled[index][1]({"resourceType": rtype}, None)
            except Exception:
                self._bare[key] = None
        return self._bare[key]


#: Functions that reach elements without naming them: an invariant using one is always evaluated.
_UNNAMED_REACH = re.compile(r"\b(?:children|descendants|repeat)\s*\(")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
#: A name that starts a path: read from the focus, which at the top is the resource (inside a
#: function's argument it is the item iterated over: counting those too only adds names).
_PATH_START = re.compile(r"(?<![\w.$%])[A-Za-z_][A-Za-z0-9_]*")
#: A name read from the resource itself, whatever the focus: after ``$this``, ``%resource``... or a
#: type name (``Consent.provision``; ``Quantity.value`` only adds a name).
_FROM_ROOT = re.compile(
    r"(?:\$this|%resource|%rootResource|%context|(?<![\w.$%])[A-Z][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)"
)


def named_elements(invariant: Invariant) -> frozenset[str] | None:
    """The names by which a resource invariant's expression and context can read the resource's
    top level (functions, operators and types among them: a superset), or None when it can reach
    an element it does not name. A name after a dot reads what comes before it, not the resource
    (``contained.meta`` reads no ``meta`` of the resource itself). A resource with none of them at
    its top level gets the verdict of an empty resource."""
    text = _STRING.sub("", f"{invariant.context} {invariant.expression}").replace("`", "")
    text = re.sub(r"\s*\.\s*", ".", text)
    if _UNNAMED_REACH.search(text):
        return None
    return frozenset(_PATH_START.findall(text)) | frozenset(_FROM_ROOT.findall(text))


def _top_level_names(resource: dict[str, Any]) -> frozenset[str]:
    """The names an expression may use for the resource's own elements: each key, without the
    ``_`` of a primitive's extensions, and each choice's name (``value`` of ``valueQuantity``:
    every prefix before a capital, so that ``multipleBirth`` is in too)."""
    names: set[str] = set()
    for key in resource:
        key = key.lstrip("_")
        names.add(key)
        names.update(key[:at] for at in range(1, len(key)) if key[at].isupper())
    return frozenset(names)
