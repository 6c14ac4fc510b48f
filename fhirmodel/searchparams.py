"""The search parameters the server supports, loaded from SearchParameter resources in ``ig/``.

Search parameters are data: adding one means dropping its SearchParameter JSON into
``ig/SearchParameter``. Each is compiled once, at start, for every served resource type it
applies to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fhirmodel.fhirpath import Extractor, RelativeExtractor, compile_expression, compile_relative, split_union

#: Search parameter types of FHIR R4, and the modifiers each allows on this server.
MODIFIERS: dict[str, frozenset[str]] = {
    "number": frozenset({"missing"}),
    "date": frozenset({"missing"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "text", "not", "in", "not-in", "of-type", "below"}),
    "reference": frozenset({"missing", "identifier"}),  # plus ":<Type>", checked separately
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
    "composite": frozenset(),
    "special": frozenset(),
}
INDEXED_TYPES = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri", "composite"})


@dataclass(frozen=True)
class Component:
    """One component of a composite parameter: its type (that of the SearchParameter its
    ``definition`` names) and its expression, relative to each element the composite's own
    expression finds."""

    type: str
    expression: str
    extractor: RelativeExtractor = field(compare=False, repr=False)


@dataclass(frozen=True)
class Through:
    """A stored resource a parameter's expression reaches through ``resolve()``: the reference
    parameter ``reference`` to a ``target`` whose parameter ``param`` holds the values."""

    reference: str
    target: str
    param: str


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type.

    ``through`` lists the references its expression follows with ``resolve()`` (see
    :func:`_throughs`): a contained target is read when the resource is indexed, a stored one can
    only be reached when searching, as a chain.
    """

    code: str
    type: str
    resource_type: str
    expression: str
    url: str
    targets: tuple[str, ...]
    extractor: Extractor = field(compare=False, repr=False)
    definition: dict[str, Any] = field(compare=False, repr=False)
    through: tuple[Through, ...] = ()
    components: tuple[Component, ...] = ()  # a composite's, in order

    @property
    def modifiers(self) -> frozenset[str]:
        return MODIFIERS.get(self.type, frozenset())


#: Which of a resource's parameters to index, by code and type (``None``: all of them).
Only = Callable[[str, str], bool]
#: How many (type, predicate) answers a registry keeps (:meth:`SearchParamRegistry.accepted`).
ACCEPTED_KEPT = 256


class SearchParamRegistry:
    """All supported search parameters, per resource type and code."""

    def __init__(self, params: Iterable[SearchParam]):
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._accepted: dict[tuple[str, Only], tuple[SearchParam, ...]] = {}
        for param in params:
            self._by_type.setdefault(param.resource_type, {})[param.code] = param

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(resource_type, {}).get(code)

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(resource_type, {})

    def accepted(self, resource_type: str, accept: Only) -> tuple[SearchParam, ...]:
        """The parameters of ``resource_type`` that ``accept`` takes (by code and type), found once
        per type and predicate: the registry does not change once loaded, and the trail's move
        asks for every event it moves (the 25 AuditEvent parameters judged again: 7.5 µs an event).
        ``accept`` is meant to be one of a few long-lived predicates (a store's index families');
        past :data:`ACCEPTED_KEPT` answers, new ones are found each time and not kept."""
        key = (resource_type, accept)
        found = self._accepted.get(key)
        if found is None:
            found = tuple(p for p in self.for_type(resource_type).values() if accept(p.code, p.type))
            if len(self._accepted) < ACCEPTED_KEPT:
                self._accepted[key] = found
        return found

    def types(self) -> list[str]:
        """The resource types with search parameters (the served ones), in name order."""
        return sorted(self._by_type)

    @classmethod
    def load(cls, folder: Path, resource_types: Iterable[str]) -> SearchParamRegistry:
        """Read every SearchParameter in ``folder`` and compile it for the served types.

        A definition given for a type overrides one inherited from ``Resource``/``DomainResource``,
        and among several for the same type and code the file read last wins (files are read in
        name order) so that a local definition can replace a base one.
        """
        served = list(resource_types)
        params: dict[tuple[str, str], SearchParam] = {}
        definitions = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]
        definitions = [d for d in definitions if d.get("resourceType") == "SearchParameter"]
        types_by_url = {d.get("url"): d.get("type") for d in definitions}
        for definition in definitions:
            expression = definition.get("expression")
            if not expression or definition.get("type") not in INDEXED_TYPES:
                continue
            components = _components(definition, types_by_url)
            if components is None:
                continue
            bases = set(definition.get("base", ()))
            for rtype in served:
                generic = bases & {"Resource", "DomainResource"}
                if rtype not in bases and not generic:
                    continue
                key = (rtype, definition["code"])
                if key in params and rtype not in bases:
                    continue
                extractor = compile_expression(rtype, expression)
                if extractor is None:
                    continue
                params[key] = SearchParam(
                    code=definition["code"],
                    type=definition["type"],
                    resource_type=rtype,
                    expression=expression,
                    url=definition.get("url", ""),
                    targets=tuple(definition.get("target", ())),
                    extractor=extractor,
                    definition=definition,
                    components=components,
                )
        return cls(replace(p, through=_throughs(p, params)) for p in params.values())


def _components(definition: dict[str, Any], types_by_url: dict[Any, Any]) -> tuple[Component, ...] | None:
    """A composite's components (``()`` for other parameters); ``None`` when one cannot be
    honoured — its definition is not loaded, is itself composite, or its expression is no path —
    and the parameter is then not offered."""
    if definition.get("type") != "composite":
        return ()
    found = []
    for component in definition.get("component") or []:
        ctype = types_by_url.get(component.get("definition"))
        extractor = compile_relative(str(component.get("expression") or ""))
        if ctype not in INDEXED_TYPES or ctype == "composite" or extractor is None:
            return None
        found.append(Component(ctype, component["expression"], extractor))
    return tuple(found) or None


_THROUGH = re.compile(r"^(?P<type>\w+)\.(?P<path>\w+(?:\.\w+)*)\.resolve\(\)\.(?P<rest>\w+(?:\.\w+)*)$")


def _throughs(param: SearchParam, params: dict[tuple[str, str], SearchParam]) -> tuple[Through, ...]:
    """How ``param`` reaches stored resources: each member ``Type.path.resolve().rest`` of its
    expression where ``Type.path`` is a reference parameter's expression and, for a target ``X`` of
    that parameter, ``X.rest`` is that of a parameter of ``X`` of the same type.

    Why: ``resolve()`` can only be evaluated on contained resources when a resource is indexed
    (its targets change on their own), so ``PractitionerRole.practitioner.resolve().name.given``
    finds a contained practitioner's names; the same path to a stored practitioner is the chain
    ``practitioner.given``, which the search parser adds.
    """
    found: list[Through] = []
    for member in split_union(param.expression):
        m = _THROUGH.match(re.sub(r"\s+", "", member).strip("()"))
        if m is None or m["type"] != param.resource_type:
            continue
        reference = _with_member(params, param.resource_type, "reference", f"{m['type']}.{m['path']}")
        for target in reference.targets if reference else ():
            reached = _with_member(params, target, param.type, f"{target}.{m['rest']}")
            if reference and reached:
                found.append(Through(reference.code, target, reached.code))
    return tuple(dict.fromkeys(found))


def _with_member(params: dict[tuple[str, str], SearchParam], rtype: str, ptype: str, member: str) -> SearchParam | None:
    """The parameter of ``rtype`` of type ``ptype`` one of whose expression members is ``member``."""
    for (owner, _), candidate in sorted(params.items()):
        if owner == rtype and candidate.type == ptype:
            members = {re.sub(r"\s+", "", m).strip("()") for m in split_union(candidate.expression)}
            if member in members:
                return candidate
    return None
