"""The FHIRPath of the R4 invariants compiled into Python closures, to fhirpathpy's verdicts.

Why: fhirpathpy interprets its parse tree node by node, with its machinery around every step; an
invariant as plain as ``contained.meta.security.empty()`` cost 35-50 µs a resource, and the
invariants were 10 % of an ITI-65 Bundle's CPU (its Bundle's ``bdl-*`` alone about 1 ms). Nearly all
of them use a small part of FHIRPath — paths, ``exists()``, ``empty()``, ``where()``, ``all()``,
``=``, the boolean operators, the order of two dates — which compiles here, from fhirpathpy's own
parse tree, into closures that do the same steps on the JSON. ``tests/test_invariant_compiler.py``
holds the two to the same answer on the reference data.

The answer to match is fhirpathpy's, quirks included (a primitive's ``_name`` extension is an item
of its own, a ``where`` keeps an item whose criterion gives any element), since the invariants
were chosen on what it says (``ig/tools/build_invariants.py``) — with one exception, on purpose:
two dateTimes with different offsets are ordered as instants, as FHIRPath says, where fhirpathpy
2.2.4 compares their clock fields and so held a valid Period (``10:00+02:00`` to ``09:00Z``) broken.

What is compiled is only what mirrors it exactly; anything else raises :class:`Unsupported`: at
compile time (``descendants()``, ``as()``, ``|``...: the invariant is left to fhirpathpy) or while
evaluating (dates of different precisions ordered, a Quantity compared: that resource's verdict
is left to fhirpathpy).
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from fhirmodel.schema import is_resource_type

_R4 = models["r4"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
_PATH_TYPE: dict[str, str] = _R4["path2Type"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_CONSTANTS = {"ucum": "http://unitsofmeasure.org"}

#: An item of a collection: its data and, for an element reached by a path, its FHIR path or type
#: (fhirpathpy's ``ResourceNode``); ``None`` for a value made by the expression (a literal, a
#: function's result) or the resource itself before a step is taken from it.
Item = tuple[Any, str | None]
#: A compiled expression: its input collection and the resource (``%resource``) to its output.
Compiled = Callable[[list[Item], dict[str, Any]], list[Item]]


class Unsupported(Exception):
    """What is not compiled, or a value the compiled expression cannot judge as fhirpathpy would."""


class Failed(Exception):
    """Where fhirpathpy raises (a collection where a single boolean is expected...): the
    invariant cannot be evaluated on this resource."""


def compile_fhirpath(expression: str) -> Compiled:
    """The closure computing ``expression``; :class:`Unsupported` if any part of it is not compiled."""
    tree = parse(expression)
    return _expression(tree["children"][0])


def items_of(data: Any) -> list[Item]:
    """A collection to start from: a resource, or the typed elements a datatype invariant is
    evaluated on (fhirpathpy's nodes, :func:`fhir_server.fhir.invariants.elements_by_type`)."""
    if isinstance(data, list):
        return [(node.data, node.path) if isinstance(node, ResourceNode) else (node, None) for node in data]
    return [(data, None)]


def holds(result: list[Item]) -> bool:
    """Whether a result means the invariant is met, as fhirpathpy's caller reads it: ``[True]`` or
    nothing, once elements holding only an ``extension`` are dropped (fhirpathpy's output does)."""
    shown = [data for data, _ in result if not (isinstance(data, dict) and list(data) == ["extension"])]
    return shown == [True] or shown == []


def _expression(node: dict[str, Any]) -> Compiled:
    kind = node.get("type")
    if kind == "TermExpression":
        return _term(node["children"][0])
    if kind == "InvocationExpression":
        source, step = node["children"]
        return _then(_expression(source), _invocation(step))
    if kind in _LOGIC:
        return _logic(_LOGIC[kind], node)
    if kind == "EqualityExpression":
        return _equality(node)
    if kind == "InequalityExpression":
        return _inequality(node)
    if kind == "AdditiveExpression" and node["terminalNodeText"] == ["&"]:
        return _concatenation(node)
    raise Unsupported(f"{kind} {node.get('terminalNodeText')}")


def _term(node: dict[str, Any]) -> Compiled:
    kind = node["type"]
    if kind == "ParenthesizedTerm":
        return _expression(node["children"][0])
    if kind == "InvocationTerm":
        return _invocation(node["children"][0])
    if kind == "LiteralTerm":
        return _literal(node["children"][0])
    if kind == "ExternalConstantTerm":
        name = _identifier(node["children"][0]["children"][0])
        if name in ("resource", "rootResource"):
            return lambda _focus, resource: [(resource, None)]
        if name in _CONSTANTS:
            constant: list[Item] = [(_CONSTANTS[name], None)]
            return lambda _focus, _resource: constant
    raise Unsupported(kind)


def _literal(node: dict[str, Any]) -> Compiled:
    kind, text = node["type"], node["text"]
    value: Any
    if kind == "StringLiteral" and "\\" not in text:
        value = text[1:-1]
    elif kind == "BooleanLiteral":
        value = text == "true"
    elif kind == "NumberLiteral" and text.isdigit():
        value = int(text)
    else:
        raise Unsupported(f"{kind} {text}")
    literal: list[Item] = [(value, None)]
    return lambda _focus, _resource: literal


def _identifier(node: dict[str, Any]) -> str:
    if node["type"] != "Identifier" or "`" in node["text"]:
        raise Unsupported(node["type"])
    name: str = node["text"]
    return name


def _then(first: Compiled, step: Compiled) -> Compiled:
    return lambda focus, resource: step(first(focus, resource), resource)


def _invocation(node: dict[str, Any]) -> Compiled:
    kind = node["type"]
    if kind == "MemberInvocation":
        return _member(_identifier(node["children"][0]))
    if kind == "FunctionInvocation":
        functn = node["children"][0]
        name = _identifier(functn["children"][0])
        params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
        return _function(name, params)
    raise Unsupported(kind)


def _member(key: str) -> Compiled:
    """A step down to ``key``, as fhirpathpy's ``member_invocation`` takes it: the choice element's
    value whichever its type, a primitive's ``_key`` extension as an item of its own, the path
    typed from the R4 model; a capitalised name on the resource itself selects it by type."""

    def step(focus: list[Item], _resource: dict[str, Any]) -> list[Item]:
        if key[0] == key[0].upper() and focus and all(p is None and isinstance(d, dict) for d, p in focus):
            if not all("resourceType" in data for data, _ in focus):
                raise Failed(f"{key} on an element that is not a resource")
            return [(data, key) for data, _ in focus if data["resourceType"] == key]
        found: list[Item] = []
        for data, path in focus:
            if not isinstance(data, dict):
                if key == "length":
                    raise Unsupported("length")
                continue
            if "resourceType" in data:  # a resource is typed by its own type (ResourceNode)
                path = data["resourceType"]
            child = f"{path}.{key}" if path else f"_.{key}"
            child = _ELSEWHERE.get(child, child)
            choices = _choice_names(child, key)
            value = extension = None
            if choices:
                for suffix, name, extension_name in choices:
                    value, extension = data.get(name), data.get(extension_name)
                    if value is not None or extension is not None:
                        child += suffix
                        break
            else:
                value, extension = data.get(key), data.get(f"_{key}")
                if key == "extension":
                    child = "Extension"
            child = _PATH_TYPE.get(child, child)
            for part in (value, extension):
                if part is None or part == []:
                    continue
                for element in part if isinstance(part, list) else (part,):
                    typed = (
                        element["resourceType"] if isinstance(element, dict) and "resourceType" in element else child
                    )
                    found.append((element, typed))
        return found

    return step


@functools.cache
def _choice_names(path: str, key: str) -> tuple[tuple[str, str, str], ...]:
    """A choice element's names in JSON, with their extensions' (``valueString``, ``_valueString``)."""
    return tuple((suffix, f"{key}{suffix}", f"_{key}{suffix}") for suffix in _CHOICES.get(path, ()))


def _function(name: str, params: list[dict[str, Any]]) -> Compiled:
    if name in _PLAIN and not params:
        return _PLAIN[name]
    if name in ("where", "all", "select", "exists") and len(params) == 1:
        return _with_criterion(name, _expression(params[0]))
    if name == "is" and len(params) == 1:
        return _is(params[0])
    raise Unsupported(f"{name}() with {len(params)} parameters")


def _singleton_boolean(data: Any) -> bool:
    """What fhirpathpy's ``not()`` reads from a single item: a boolean, or true for anything else."""
    return data if isinstance(data, bool) else True


def _has_value(focus: list[Item], _resource: dict[str, Any]) -> list[Item]:
    data = focus[0][0] if len(focus) == 1 else None
    return [(len(focus) == 1 and data is not None and not isinstance(data, (dict, list)), None)]


def _distinct(focus: list[Item], _resource: dict[str, Any]) -> list[Item]:
    nodes = [path is not None for _, path in focus]
    if any(nodes) and not all(nodes):
        raise Unsupported("isDistinct() of elements and values together")
    keys = {json.dumps(data, sort_keys=True) for data, _ in focus}
    return [(len(keys) == len(focus), None)]


_PLAIN: dict[str, Compiled] = {
    "exists": lambda focus, _r: [(bool(focus), None)],
    "empty": lambda focus, _r: [(not focus, None)],
    "count": lambda focus, _r: [(len(focus), None)],
    "first": lambda focus, _r: focus[:1],
    "not": lambda focus, _r: [(not _singleton_boolean(focus[0][0]), None)] if len(focus) == 1 else [],
    "hasValue": _has_value,
    "isDistinct": _distinct,
}


def _kept(result: list[Item]) -> bool:
    """fhirpathpy's ``where`` keeps an item when its criterion's first element is truthy: an
    element always (a node object), a value by Python's truth."""
    if not result:
        return False
    data, path = result[0]
    return path is not None or bool(data)


def _with_criterion(name: str, criterion: Compiled) -> Compiled:
    if name == "select":
        return lambda focus, resource: [found for item in focus for found in criterion([item], resource)]
    if name == "all":

        def every(focus: list[Item], resource: dict[str, Any]) -> list[Item]:
            for item in focus:
                result = criterion([item], resource)
                if not (len(result) == 1 and result[0][0] == True):  # noqa: E712 - fhirpathpy's ``==``: 1 counts
                    return [(False, None)]
            return [(True, None)]

        return every

    def where(focus: list[Item], resource: dict[str, Any]) -> list[Item]:
        return [item for item in focus if _kept(criterion([item], resource))]

    if name == "exists":
        return lambda focus, resource: [(bool(where(focus, resource)), None)]
    return where


def _is(param: dict[str, Any]) -> Compiled:
    type_name = str(param.get("text"))
    if not is_resource_type(type_name) or type_name in ("Resource", "DomainResource"):
        raise Unsupported(f"is({type_name})")

    def check(focus: list[Item], _resource: dict[str, Any]) -> list[Item]:
        if not focus:
            return []
        if len(focus) > 1:
            raise Failed("is() of several items")
        data, path = focus[0]
        if path is None or not isinstance(data, dict) or "resourceType" not in data:
            raise Unsupported("is() of something other than a resource")
        return [(path == type_name, None)]

    return check


def _boolean(result: list[Item]) -> bool | None:
    """An operand of a boolean operator, as fhirpathpy takes it: nothing, or a single boolean."""
    if not result:
        return None
    if len(result) > 1 or not isinstance(result[0][0], bool):
        raise Failed("a boolean operator's operand is not a single boolean")
    value: bool = result[0][0]
    return value


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _xor(a: bool | None, b: bool | None) -> bool | None:
    return None if a is None or b is None else a != b


def _implies(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is True:
        return True
    return None if a is None or b is None else False


_LOGIC: dict[str, Callable[[bool | None, bool | None], bool | None]] = {
    "OrExpression": _or,
    "AndExpression": _and,
    "ImpliesExpression": _implies,
}


def _logic(operator: Callable[[bool | None, bool | None], bool | None], node: dict[str, Any]) -> Compiled:
    if node["type"] == "OrExpression" and node["terminalNodeText"] == ["xor"]:
        operator = _xor
    left, right = (_expression(child) for child in node["children"])

    def apply(focus: list[Item], resource: dict[str, Any]) -> list[Item]:
        a, b = _boolean(left(focus, resource)), _boolean(right(focus, resource))  # both, as fhirpathpy
        verdict = operator(a, b)
        return [] if verdict is None else [(verdict, None)]

    return apply


def _comparable(item: Item) -> Any:
    data, path = item
    if path == "Quantity" or isinstance(data, float):
        raise Unsupported("a Quantity or a decimal compared")
    return data


def _equality(node: dict[str, Any]) -> Compiled:
    negated = node["terminalNodeText"] == ["!="]
    if not negated and node["terminalNodeText"] != ["="]:
        raise Unsupported(str(node["terminalNodeText"]))  # ~, !~
    left, right = (_expression(child) for child in node["children"])

    def equal(focus: list[Item], resource: dict[str, Any]) -> list[Item]:
        a, b = left(focus, resource), right(focus, resource)
        if not a or not b:
            return []
        same = len(a) == len(b) and _comparable(a[0]) == _comparable(b[0])
        return [(same != negated, None)]

    return equal


#: The orderings compiled: two dates, or two dateTimes to the second with a zone (``per-1`` on a
#: Period with both ends). Of the same precision, FHIRPath compares them as instants; anything
#: else (precisions that differ, fractions of a second, quantities, numbers) is fhirpathpy's.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})")
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _instant(item: Item) -> date | datetime:
    data, path = item
    if path in ("date", "dateTime") and isinstance(data, str):
        if _DATE.fullmatch(data):
            return date.fromisoformat(data)
        if path == "dateTime" and _SECONDS.fullmatch(data):
            return datetime.fromisoformat(data.replace("Z", "+00:00"))
    raise Unsupported("an ordering of values other than two dates or two dateTimes to the second")


def _inequality(node: dict[str, Any]) -> Compiled:
    ordering = _ORDERINGS[node["terminalNodeText"][0]]
    left, right = (_expression(child) for child in node["children"])

    def compare(focus: list[Item], resource: dict[str, Any]) -> list[Item]:
        a, b = left(focus, resource), right(focus, resource)  # both, as fhirpathpy
        if not a or not b:
            return []
        if len(a) > 1 or len(b) > 1:
            raise Unsupported("an ordering of collections")
        first, second = _instant(a[0]), _instant(b[0])
        if type(first) is not type(second):
            raise Unsupported("a date ordered against a dateTime")
        return [(ordering(first, second), None)]

    return compare


def _string_operand(result: list[Item]) -> str:
    if len(result) > 1:
        raise Failed("a collection where a string is expected")
    if not result:
        return ""
    data = result[0][0]
    if not isinstance(data, str):
        raise Failed("not a string")
    return data


def _concatenation(node: dict[str, Any]) -> Compiled:
    left, right = (_expression(child) for child in node["children"])
    return lambda focus, resource: [
        (_string_operand(left(focus, resource)) + _string_operand(right(focus, resource)), None)
    ]
