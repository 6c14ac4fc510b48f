"""Compile the FHIRPath expressions of SearchParameters into fast value extractors.

Nearly every search expression is a plain path with a few well-known filters
(``.where(resolve() is Patient)``, ``.where(system='email')``, ``as dateTime``,
``.extension('url')``, ``.value.ofType(Identifier)``, ``[0]``). Those are compiled into a list of
steps walked over the JSON with the type schema at hand, so every value comes out with its FHIR
type (a ``Coding`` is told from an ``Identifier`` by the definition, not by guessing from its
keys). Anything else falls back to fhirpathpy, compiled once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirmodel.schema import RESOURCE, is_resource_type, type_info

#: A value found by an expression, with its FHIR type name (``None`` when not known).
Typed = tuple[Any, str | None]
Extractor = Callable[[dict[str, Any]], list[Typed]]


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _OfType:
    type: str


@dataclass(frozen=True)
class _ResolveIs:
    type: str


@dataclass(frozen=True)
class _WhereEq:
    field: str
    value: str


@dataclass(frozen=True)
class _Extension:
    url: str


@dataclass(frozen=True)
class _Index:
    index: int


@dataclass(frozen=True)
class _Resolve:
    """``resolve()``: at index time only contained resources (``#id``) can be resolved."""


_Step = _Field | _OfType | _ResolveIs | _WhereEq | _Extension | _Index | _Resolve

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<resolve>\.where\(\s*resolve\(\)\s+is\s+(?P<rtype>\w+)\s*\))
    | (?P<whereeq>\.where\(\s*(?P<wfield>\w+)\s*=\s*'(?P<wvalue>[^']*)'\s*\))
    | (?P<ext>\.extension\(\s*'(?P<url>[^']+)'\s*\))
    | (?P<resolveplain>\.resolve\(\s*\))
    | (?P<oftype>\.(?:ofType|as)\(\s*(?P<otype>\w+)\s*\))
    | (?P<as>(?<=\s)as\s+(?P<atype>\w+))  # the leading \s* has eaten the space before ``as``
    | (?P<index>\[(?P<n>\d+)\])
    | (?P<field>\.?(?P<fname>\w+))
    )""",
    re.VERBOSE,
)


def split_union(expression: str) -> list[str]:
    """Split ``a | b | (c | d)`` on its top-level bars."""
    return [part for part in _split_outside(expression, "|") if part]


def _split_outside(text: str, separator: str) -> list[str]:
    """``text`` split on the ``separator`` characters outside parentheses and quotes, each part stripped."""
    parts: list[str] = []
    depth, start = 0, 0
    in_str = False
    for i, ch in enumerate(text):
        if ch == "'":
            in_str = not in_str
        elif not in_str and ch == "(":
            depth += 1
        elif not in_str and ch == ")":
            depth -= 1
        elif not in_str and ch == separator and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _strip_parens(expr: str) -> str:
    while expr.startswith("(") and expr.endswith(")") and _balanced(expr[1:-1]):
        expr = expr[1:-1].strip()
    return expr


def _balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def _parse_steps(expr: str) -> list[_Step] | None:
    """Steps of a simple path, or ``None`` when the expression needs a real FHIRPath engine."""
    steps: list[_Step] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            return None
        if m["resolve"]:
            steps.append(_ResolveIs(m["rtype"]))
        elif m["whereeq"]:
            steps.append(_WhereEq(m["wfield"], m["wvalue"]))
        elif m["ext"]:
            steps.append(_Extension(m["url"]))
        elif m["resolveplain"]:
            steps.append(_Resolve())
        elif m["oftype"]:
            steps.append(_OfType(m["otype"]))
        elif m["as"]:
            steps.append(_OfType(m["atype"]))
        elif m["index"]:
            steps.append(_Index(int(m["n"])))
        else:
            steps.append(_Field(m["fname"]))
        pos = m.end()
    return steps


#: Where the values of an element are: ``(key, type)`` pairs to read from a node — one for a plain
#: element, one per concrete element of a choice (``value`` → ``valueQuantity``...) — or ``None``
#: when the node's type is not known and its keys are looked at instead.
_Keys = tuple[tuple[str, str], ...] | None


@functools.cache
def _element_keys(ntype: str | None, name: str) -> _Keys:
    """The keys of element ``name`` under a node of type ``ntype``. Cached: a path asks the same
    few questions of every resource it indexes, and the schema's answer never changes."""
    info = _info(ntype)
    if info is None:
        return None
    element = info.element(name)
    if element is not None:
        return ((name, element.type),)
    return tuple((choice.name, choice.type) for choice in info.choice_elements(name))


def _children(node: Any, ntype: str | None, name: str) -> list[Typed]:
    """The values of element ``name`` under ``node``, choice types included, with their types."""
    if not isinstance(node, dict):
        return []
    keys = _element_keys(ntype, name)
    if keys is None:  # an unknown type: the keys tell a choice's types (``valueQuantity``)
        return [
            typed
            for key, value in node.items()
            if key == name or (key.startswith(name) and key[len(name) : len(name) + 1].isupper())
            for typed in _typed_values(value, key[len(name) :] or None)
        ]
    out: list[Typed] = []
    for key, vtype in keys:
        value = node.get(key)
        if value is not None:
            out.extend(_typed_values(value, vtype))
    return out


def _typed_values(value: Any, vtype: str | None) -> list[Typed]:
    items = value if isinstance(value, list) else (value,)
    if vtype == RESOURCE:
        return [
            (item, item.get("resourceType")) if isinstance(item, dict) else (item, vtype)
            for item in items
            if item is not None
        ]
    return [(item, vtype) for item in items if item is not None]


def _info(type_name: str | None) -> Any:
    if not type_name or not type_name[:1].isupper():
        return None
    try:
        return type_info(type_name)
    except (KeyError, ValueError, AttributeError):
        return None


def _type_matches(value: Any, vtype: str | None, wanted: str) -> bool:
    if vtype is None:
        return False
    return vtype.lower() == wanted.lower() or (vtype == "uri" and wanted == "oid")


def _reference_type(value: Any) -> str | None:
    """The target type of a Reference, from its ``reference`` or ``type``."""
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        segments = ref.split("?")[0].split("/")
        if "_history" in segments:
            segments = segments[: segments.index("_history")]
        if len(segments) >= 2 and is_resource_type(segments[-2]):
            return segments[-2]
    rtype = value.get("type")
    return rtype if isinstance(rtype, str) else None


def _contained(root: dict[str, Any], reference: Any) -> Typed | None:
    """The contained resource a ``#id`` Reference points at, with its type."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    for item in root.get("contained") or ():
        if isinstance(item, dict) and f"#{item.get('id')}" == ref:
            return item, item.get("resourceType")
    return None


def _walk(steps: list[_Step], start: list[Typed], root: dict[str, Any]) -> list[Typed]:
    current = start
    for step in steps:
        if isinstance(step, _Field):
            current = [c for node, ntype in current for c in _children(node, ntype, step.name)]
        elif isinstance(step, _OfType):
            current = [(v, t) for v, t in current if _type_matches(v, t, step.type)]
        elif isinstance(step, _ResolveIs):
            current = [(v, t) for v, t in current if _reference_type(v) == step.type]
        elif isinstance(step, _Resolve):
            current = [c for c in (_contained(root, v) for v, _ in current) if c is not None]
        elif isinstance(step, _WhereEq):
            current = [(v, t) for v, t in current if isinstance(v, dict) and v.get(step.field) == step.value]
        elif isinstance(step, _Extension):
            current = [
                (ext, "Extension")
                for node, _ in current
                if isinstance(node, dict)
                for ext in node.get("extension") or ()
                if isinstance(ext, dict) and ext.get("url") == step.url
            ]
        else:
            current = current[step.index : step.index + 1]
    return current


def _compile_path(resource_type: str, expr: str) -> Extractor | None:
    """A simple-path extractor for one union member, or ``None`` when it needs fhirpathpy."""
    expr = _strip_parens(expr)
    steps = _parse_steps(expr)
    if not steps or not isinstance(steps[0], _Field):
        return None
    root = steps[0].name
    if root not in (resource_type, "Resource", "DomainResource"):
        return None
    rest = steps[1:]
    keys, vtype = _static_fields(resource_type, rest)
    rest = rest[len(keys) :]

    def extract(resource: dict[str, Any]) -> list[Typed]:
        nodes: list[Any] = [resource]
        for key in keys:  # the leading fields whose types the schema knows: plain lookups
            found: list[Any] = []
            for node in nodes:
                value = node.get(key) if isinstance(node, dict) else None
                if isinstance(value, list):
                    found.extend(item for item in value if item is not None)
                elif value is not None:
                    found.append(value)
            if not found:
                return []
            nodes = found
        return _walk(rest, [(node, vtype) for node in nodes], resource)

    return extract


def _static_fields(resource_type: str, steps: list[_Step]) -> tuple[tuple[str, ...], str | None]:
    """The keys of the leading field steps whose element has one known type (no choice, not a
    resource), and the type the last of them reaches: those steps need no type looked up per node."""
    keys: list[str] = []
    ntype: str | None = resource_type
    for step in steps:
        if not isinstance(step, _Field):
            break
        found = _element_keys(ntype, step.name)
        if found is None or len(found) != 1 or found[0][1] == RESOURCE:
            break
        keys.append(found[0][0])
        ntype = found[0][1]
    return tuple(keys), ntype


#: ``iif(<path>.exists(), <path>[.first()], true|false)``: a value, or a default when it is absent
#: (the DMP's ``archived``, false unless the patient archived the document).
_IIF = re.compile(r"iif\((?P<args>.*)\)", re.DOTALL)
_EXISTS, _FIRST = ".exists()", ".first()"
_BOOLEANS = {"true": True, "false": False}


def _compile_iif(resource_type: str, expr: str) -> Extractor | None:
    """``iif(criterion, result, otherwise)`` whose criterion is a simple path's ``exists()``, its
    result a simple path (or its ``first()``) and its otherwise a boolean; ``None`` for any other."""
    matched = _IIF.fullmatch(_strip_parens(expr))
    args = _split_outside(matched["args"], ",") if matched else []
    if len(args) != 3 or not args[0].endswith(_EXISTS) or args[2] not in _BOOLEANS:
        return None
    first = args[1].endswith(_FIRST)
    criterion = _compile_path(resource_type, args[0][: -len(_EXISTS)])
    result = _compile_path(resource_type, args[1][: -len(_FIRST)] if first else args[1])
    if criterion is None or result is None:
        return None
    otherwise = _BOOLEANS[args[2]]

    def extract(resource: dict[str, Any]) -> list[Typed]:
        if not criterion(resource):
            return [(otherwise, "boolean")]
        found = result(resource)
        return found[:1] if first else found

    return extract


def _compile_fhirpath(expr: str) -> Extractor:
    import fhirpathpy  # imported lazily: only the rare complex expressions need it
    from fhirpathpy.models import models

    compiled = fhirpathpy.compile(expr, models["r4"])  # the R4 model resolves choice types

    def extract(resource: dict[str, Any]) -> list[Typed]:
        return [(v, None) for v in compiled(resource, {}) if v is not None]

    return extract


#: Values reached from one typed value (a composite's element) by a relative path.
RelativeExtractor = Callable[[Typed], list[Typed]]


def compile_relative(expression: str) -> RelativeExtractor | None:
    """A path relative to a value (a composite search parameter's component, ``code`` under a
    ``relatesTo``), walked from that value with its type; ``None`` when it is no simple path."""
    steps = _parse_steps(_strip_parens(expression))
    if not steps:
        return None

    def extract(start: Typed) -> list[Typed]:
        return _walk(steps, [start], {})  # no resolve() in a component: no root needed

    return extract


def compile_expression(resource_type: str, expression: str) -> Extractor | None:
    """Compile the members of ``expression`` that apply to ``resource_type``.

    Returns ``None`` when no member of the union is about that type. A member without a type
    root (IHE MHD writes ``(extension('...').value.ofType(Identifier))``) is a path from the
    resource itself, so it applies to every type the parameter is defined on.
    """
    members: list[str] = []
    for member in split_union(expression):
        root = re.match(r"\(*\s*(\w+)(\s*\()?", member)
        if root is None:
            continue
        if root[1] in (resource_type, "Resource", "DomainResource"):
            members.append(member)
        elif root[2] and re.search(rf"\b{resource_type}\.", member):
            members.append(member)  # a function at the root (``iif(Type.x.exists(), ...)``)
        elif root[1][:1].islower():
            members.append(f"{resource_type}.{_strip_parens(member)}")
    if not members:
        return None
    extractors: list[Extractor] = []
    for member in members:
        simple = _compile_path(resource_type, member) or _compile_iif(resource_type, member)
        extractors.append(simple or _compile_fhirpath(member))
    if len(extractors) == 1:
        return extractors[0]

    def extract_all(resource: dict[str, Any]) -> list[Typed]:
        return [value for extractor in extractors for value in extractor(resource)]

    return extract_all
