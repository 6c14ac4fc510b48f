"""Validation of resources sent by clients, before anything is stored.

One walk over the client's JSON, guided by :mod:`fhirmodel.schema` (the FHIR R4 structure, read
from the fhir.resources R4B models, wire-identical to R4 for the served types), reporting every
problem it finds with a FHIRPath-like location:

- the JSON representation rules: no ``null``, ``{}``, ``[]``, ``""`` or whitespace-only strings;
  the JSON type of each primitive (no ``"yes"`` for a boolean);
- cardinality: required elements, and one element at most of a choice group (``value[x]``);
- the lexical rules of the primitive types (:mod:`fhirmodel.primitives`: dates that exist, codes,
  ids, URIs, integers in range, base64) and the codes of required bindings;
- references: their form, the target types the element allows, ref-1 for local references;
- contained resources (dom-2, dom-4, dom-5) and narrative safety (txt-1/txt-2: the narrative ends
  up in browsers, so anything active in it is refused).

Then extensions whose url is an extension profile in ``profiles/`` (the DMP closure,
``dmp-fermeture``) are checked against its StructureDefinition, and, on a resource with no
problem so far, the R4 FHIRPath invariants (``ig/invariants``).

Why not the fhir.resources models themselves: building a model object was half of a document's
validation time, and the walk must pass every node anyway. ``tests/test_validation_model.py``
holds it to finding whatever the models find, on mutations of real resources.

Attachment.url holding a ``urn:uuid:`` (IHE MHD uses them to point at a Binary of the same
transaction) needs no special handling: R4 ``url`` has no format beyond ``\\S*``; the test suite
pins this down.

Why one module of ~600 lines: the walk is one recursive traversal that applies, at each node, the
rules of that node's type; splitting it by rule would visit every node once per rule.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from lxml import etree

from fhir_server.fhir.invariants import InvariantSet
from fhir_server.fhir.profiles import load_profiles, violations
from fhirmodel.base64_chunks import compact_base64
from fhirmodel.errors import FhirError, outcome_issue
from fhirmodel.primitives import integer_problem, string_problem
from fhirmodel.schema import (
    JSON_BOOLEAN_TYPES,
    JSON_NUMBER_TYPES,
    RESOURCE,
    Element,
    is_resource_type,
    type_info,
)

#: Issues reported at most; a resource with more problems is far from valid anyway.
MAX_ISSUES = 20
#: Deeper JSON is refused before the model sees it: real resources stay far below, and it bounds
#: the recursion of the walk (and of the models) on hostile input.
MAX_DEPTH = 64

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_DIV = f"{{{XHTML_NS}}}div"
_IMG = f"{{{XHTML_NS}}}img"

#: Resource.id and every other ``id``: the FHIR R4 regex, with its length limit (the models check
#: the characters but not the length).
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: ``Type/id`` and ``Type/id/_history/vid``, relative or at the end of an absolute URL.
_LITERAL_REFERENCE = re.compile(
    r"(?:https?://\S*/)?([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
#: A conditional reference (``Patient?identifier=...``), resolved by the transaction.
_CONDITIONAL_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)\?\S+")
#: References resolved inside a transaction (``Bundle.entry.fullUrl``), which hold no type.
_BUNDLE_LOCAL_PREFIXES = ("urn:uuid:", "urn:oid:")
#: The ``_x`` object of a primitive holds what the FHIR ``Element`` type defines (id, extension).
_PRIMITIVE_EXTRAS = "Element"
_XHTML = "xhtml"
_BASE64 = "base64Binary"
_REFERENCE = "Reference"
_CONTAINED = "contained"

# txt-1 ("only the basic html formatting elements and attributes"), as the HL7 validator reads it.
# fmt: off
_NARRATIVE_ELEMENTS = frozenset({
    "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong", "small", "big",
    "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup",
    "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot",
    "tbody", "th", "td", "code", "samp", "img", "map", "area",
})
_NARRATIVE_ATTRIBUTES = frozenset({
    "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex",
    "span", "width", "align", "valign", "char", "charoff", "abbr", "axis", "headers", "scope", "rowspan", "colspan",
})
_NARRATIVE_ELEMENT_ATTRIBUTES = frozenset({
    "a.href", "a.name", "a.title", "a.type", "a.rel", "a.hreflang", "a.id", "img.src", "img.border", "img.alt",
    "img.height", "img.width", "img.usemap", "area.shape", "area.coords", "area.href", "area.nohref", "area.alt",
    "map.name", "blockquote.cite", "q.cite", "table.border", "table.summary", "table.width", "table.frame",
    "table.rules", "table.cellspacing", "table.cellpadding", "pre.space", "td.nowrap",
})
# fmt: on
#: Attributes holding a URL a browser may follow or load.
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "usemap"})
#: Script-capable URL schemes, checked after removing what browsers ignore (whitespace, controls).
_ACTIVE_SCHEMES = ("javascript:", "vbscript:", "data:")
#: Inline images are the one legitimate use of ``data:`` in a narrative.
_INLINE_IMAGE = "data:image/"
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")
#: CSS that runs code or loads from elsewhere; backslashes are refused because CSS escapes could
#: spell any of these in disguise.
_ACTIVE_STYLE = ("expression(", "javascript:", "vbscript:", "url(", "@import", "behavior:", "-moz-binding", "\\")

# One parser for the module: lxml serialises concurrent use of a parser with an internal lock.
_NARRATIVE_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
)


@dataclass(frozen=True, slots=True)
class _Property:
    """One JSON property of a type, with what the walk checks on it precomputed."""

    element: Element
    extras: bool  # the ``_x`` sibling holding the id/extensions of primitive ``x``
    codes: frozenset[str] | None  # required binding, for ``code`` elements
    targets: frozenset[str] | None  # allowed reference targets; None: any type


@dataclass(frozen=True, slots=True)
class _Choice:
    """A choice group (``value[x]``): the names of its elements, and whether one is required."""

    group: str
    names: tuple[str, ...]
    required: bool


@dataclass(frozen=True, slots=True)
class _Shape:
    """The JSON properties of a type, keyed by property name (``given`` and ``_given``), and what
    every instance must hold: its required elements and choice groups."""

    properties: dict[str, _Property]
    is_resource: bool
    required: tuple[Element, ...]
    choices: tuple[_Choice, ...]


@functools.cache
def _shape(type_name: str) -> _Shape:
    """Derive the walk's view of a type once; type_info itself is cached too."""
    properties: dict[str, _Property] = {}
    groups: dict[str, list[Element]] = {}
    elements = type_info(type_name).elements.values()
    for element in elements:
        codes = frozenset(element.enum) if element.enum and element.type == "code" else None
        restricted = element.type == _REFERENCE and element.targets and RESOURCE not in element.targets
        targets = frozenset(element.targets) if restricted else None
        properties[element.name] = _Property(element, False, codes, targets)
        if element.is_primitive and element.type != _XHTML:
            properties[f"_{element.name}"] = _Property(element, True, None, None)
        if element.choice is not None:
            groups.setdefault(element.choice, []).append(element)
    required = tuple(e for e in elements if e.required and e.choice is None)
    choices = tuple(
        _Choice(group, tuple(e.name for e in members), any(e.choice_required for e in members))
        for group, members in groups.items()
    )
    return _Shape(properties, is_resource_type(type_name), required, choices)


def _is_concrete_resource_type(name: Any) -> TypeGuard[str]:
    return isinstance(name, str) and is_resource_type(name)


class _IssueLimitReached(Exception):
    """Stops the walk once more than MAX_ISSUES problems are known: more would not help the client."""


class _Walk:
    """One pass over a resource's JSON, collecting issues in document order."""

    def __init__(self, bundle_types: Mapping[str, str] | None = None) -> None:
        self.bundle_types = bundle_types or {}  # fullUrl -> the type of the Bundle entry it names
        self.issues: list[tuple[str, str, str]] = []  # (expression, code, message)
        self.too_deep = False

    def add(self, path: str, code: str, message: str) -> None:
        self.issues.append((path, code, message))
        if len(self.issues) > MAX_ISSUES:
            raise _IssueLimitReached

    def resource(self, obj: Any, path: str, depth: int, scope: frozenset[str] | None) -> None:
        """A resource: top level, contained (``scope`` = its container's contained ids) or in a
        Bundle or Parameters (``scope`` None: it is its own container)."""
        if not isinstance(obj, dict):
            self.add(path, "structure", f"{path}: expected a resource (a JSON object)")
            return
        resource_type = obj.get("resourceType")
        if not _is_concrete_resource_type(resource_type):
            self.add(path, "structure", f"{path}: {_resource_type_problem(resource_type)}")
            return
        if scope is None:
            contained = obj.get(_CONTAINED)
            scope = frozenset(
                c["id"]
                for c in (contained if isinstance(contained, list) else ())
                if isinstance(c, dict) and isinstance(c.get("id"), str)
            )
        else:
            self._contained_rules(obj, path)
        self.object(obj, resource_type, path, depth, scope)

    def _contained_rules(self, obj: dict[str, Any], path: str) -> None:
        """dom-2, dom-4 and dom-5: a contained resource is a plain part of its container."""
        if _CONTAINED in obj:
            self.add(
                f"{path}.contained",
                "invariant",
                f"{path}.contained: a contained resource cannot contain resources (dom-2)",
            )
        meta = obj.get("meta")
        if not isinstance(meta, dict):
            return
        for name in ("versionId", "lastUpdated"):
            if name in meta:
                self.add(
                    f"{path}.meta.{name}",
                    "invariant",
                    f"{path}.meta.{name}: a contained resource has no version of its own (dom-4)",
                )
        if "security" in meta:
            self.add(
                f"{path}.meta.security",
                "invariant",
                f"{path}.meta.security: a contained resource cannot carry security labels (dom-5)",
            )

    def object(self, obj: dict[str, Any], type_name: str, path: str, depth: int, scope: frozenset[str]) -> None:
        """A complex value of type ``type_name``: check and descend into each property."""
        if depth > MAX_DEPTH:
            self.too_deep = True
            self.add(path, "structure", f"{path}: nested deeper than {MAX_DEPTH} levels")
            return
        if not obj:
            self.add(path, "structure", f"{path}: empty object (ele-1: an element must have content)")
            return
        shape = _shape(type_name)
        for key, value in obj.items():
            child = f"{path}.{key}"
            prop = shape.properties.get(key)
            if prop is None:
                if not (shape.is_resource and key == "resourceType"):
                    self.add(child, "structure", f"{child}: unknown element '{key}' in {type_name}")
                continue
            if not prop.element.is_list:
                if value is None:
                    self.add(child, "structure", f"{child}: null is not allowed")
                else:
                    self.item(value, prop, child, depth + 1, scope)
                continue
            if not isinstance(value, list):
                self.add(child, "structure", f"{child}: expected an array")
                continue
            if not value:
                self.add(child, "structure", f"{child}: empty array (remove the element instead)")
                continue
            partner = self._primitive_partner(obj, key, prop, child)
            for index, item in enumerate(value):
                item_path = f"{child}[{index}]"
                if item is None:
                    if not prop.element.is_primitive:
                        self.add(item_path, "structure", f"{item_path}: null is not allowed")
                    elif partner is None or index >= len(partner) or partner[index] is None:
                        self.add(
                            item_path,
                            "structure",
                            f"{item_path}: null is only allowed where the matching item of the other "
                            f"array ('{prop.element.name}' / '_{prop.element.name}') has content",
                        )
                    continue
                self.item(item, prop, item_path, depth + 1, scope)
        self._cardinality(obj, shape, path)

    def _cardinality(self, obj: dict[str, Any], shape: _Shape, path: str) -> None:
        """The required elements present (a primitive's value or its ``_x``), and one element at
        most of each choice group, one at least of a required one."""
        for element in shape.required:
            if element.name not in obj and not (element.is_primitive and f"_{element.name}" in obj):
                self.add(f"{path}.{element.name}", "required", f"{path}.{element.name}: required element is missing")
        for choice in shape.choices:
            given = [name for name in choice.names if name in obj or f"_{name}" in obj]
            if len(given) > 1:
                where = f"{path}.{given[1]}"
                self.add(where, "structure", f"{where}: {choice.group}[x] is given twice ({', '.join(given)})")
            elif not given and choice.required:
                where = f"{path}.{choice.group}[x]"
                self.add(where, "required", f"{where}: required element is missing")

    def _primitive_partner(self, obj: dict[str, Any], key: str, prop: _Property, path: str) -> list[Any] | None:
        """For a primitive array ``x``/``_x``: the other array, which must be as long."""
        if not prop.element.is_primitive:
            return None
        partner_key = prop.element.name if prop.extras else f"_{prop.element.name}"
        partner = obj.get(partner_key)
        if not isinstance(partner, list):
            return None
        if not prop.extras and len(partner) != len(obj[key]):
            self.add(path, "structure", f"{path}: '{key}' and '{partner_key}' must have the same length")
        return partner

    def item(self, value: Any, prop: _Property, path: str, depth: int, scope: frozenset[str]) -> None:
        """One value (of a single element, or one item of an array)."""
        element = prop.element
        if element.type == RESOURCE:
            contained = element.name == _CONTAINED
            self.resource(value, path, depth, scope if contained else None)
        elif prop.extras or not element.is_primitive:
            if not isinstance(value, dict):
                self.add(path, "structure", f"{path}: expected a JSON object, got {_json_kind(value)}")
                return
            self.object(value, _PRIMITIVE_EXTRAS if prop.extras else element.type, path, depth, scope)
            if element.type == _REFERENCE and not prop.extras:
                self.reference(value, prop, path, scope)
        else:
            self.primitive(value, prop, path)

    def primitive(self, value: Any, prop: _Property, path: str) -> None:
        """A primitive value: its JSON type, then the rules for its FHIR type."""
        fhir_type = prop.element.type
        if fhir_type in JSON_BOOLEAN_TYPES:
            if type(value) is not bool:
                self.add(path, "structure", f"{path}: expected a JSON boolean, got {_json_kind(value)}")
            return
        if fhir_type in JSON_NUMBER_TYPES:
            if type(value) is int:
                if (problem := integer_problem(fhir_type, value)) is not None:
                    self.add(path, "value", f"{path}: {problem}")
                return
            if fhir_type == "decimal" and type(value) is float and math.isfinite(value):
                return
            wanted = "a JSON number" if fhir_type == "decimal" else "a JSON integer"
            self.add(path, "structure", f"{path}: expected {wanted}, got {_json_kind(value)}")
            return
        if type(value) is not str:
            self.add(path, "structure", f"{path}: expected a JSON string, got {_json_kind(value)}")
        elif not value:
            self.add(path, "value", f'{path}: empty string "" (ele-1: remove the element instead)')
        elif value.isspace():
            self.add(path, "value", f"{path}: a value cannot consist of whitespace only")
        elif prop.codes is not None and value not in prop.codes:
            self.add(path, "code-invalid", f"{path}: {_quote(value)} is not one of {_code_list(prop)}")
        elif fhir_type == _BASE64 and not _is_base64(value):
            self.add(path, "value", f"{path}: not valid base64 (RFC 4648: A-Z a-z 0-9 + /, padded with =)")
        elif fhir_type == "id" and not _ID.fullmatch(value):
            self.add(path, "value", f"{path}: {_quote(value)} is not a valid id ([A-Za-z0-9-.]{{1,64}})")
        elif (problem := string_problem(fhir_type, value)) is not None:
            self.add(path, "value", f"{path}: {_quote(value)} is {problem}")
        elif fhir_type == _XHTML:
            problems = _narrative_problems(value)
            if problems:
                self.add(path, "invariant", f"{path}: unsafe or invalid narrative: {'; '.join(problems)}")

    def reference(self, value: dict[str, Any], prop: _Property, path: str, scope: frozenset[str]) -> None:
        """ref-1 for local references, and the target types the element allows."""
        reference = value.get("reference")
        declared = value.get("type")
        referenced: str | None = None
        if isinstance(reference, str) and reference:
            if reference.startswith("#"):
                if reference != "#" and reference[1:] not in scope:
                    self.add(
                        f"{path}.reference",
                        "invariant",
                        f"{path}.reference: {_quote(reference)} matches no contained resource (ref-1)",
                    )
            elif not reference.startswith(_BUNDLE_LOCAL_PREFIXES):
                referenced = self._referenced_type(reference, path)
            else:  # known when the resource is checked as an entry of its Bundle
                referenced = self.bundle_types.get(reference)
        if referenced is not None:
            self._check_target(referenced, prop, f"{path}.reference")
        if _is_concrete_resource_type(declared):
            self._check_target(declared, prop, f"{path}.type")
            if referenced is not None and referenced != declared:
                self.add(
                    f"{path}.type",
                    "value",
                    f"{path}.type: {declared} contradicts the reference to a {referenced}",
                )

    def _referenced_type(self, reference: str, path: str) -> str | None:
        """The resource type a literal reference names; None when it does not tell."""
        match = _LITERAL_REFERENCE.fullmatch(reference) or _CONDITIONAL_REFERENCE.fullmatch(reference)
        if match is None:
            if "://" not in reference:
                self.add(
                    f"{path}.reference",
                    "value",
                    f"{path}.reference: {_quote(reference)} is not a valid reference "
                    "(Type/id, an absolute URL, #id or urn:uuid:)",
                )
            return None
        name = match.group(1)
        if _is_concrete_resource_type(name):
            return name
        # An absolute URL need not be a FHIR server's; a relative reference must name a type.
        if "://" not in reference:
            self.add(f"{path}.reference", "value", f"{path}.reference: {name} is not a resource type")
        return None

    def _check_target(self, resource_type: str, prop: _Property, path: str) -> None:
        if prop.targets is not None and resource_type not in prop.targets:
            allowed = ", ".join(sorted(prop.targets))
            self.add(path, "value", f"{path}: a reference to {resource_type} is not allowed here ({allowed})")


def _narrative_problems(div: str) -> list[str]:
    """What makes a narrative unsafe or invalid (txt-1, txt-2), in document order."""
    # Refused before libxml2 reads it: a DTD is the doorway to entity expansion attacks.
    if "<!DOCTYPE" in div:
        return ["a DOCTYPE is not allowed"]
    try:
        root = etree.fromstring(div.encode("utf-8"), _NARRATIVE_PARSER)
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XHTML ({exc.msg})"]
    if root.tag != _DIV:
        return [f"the root must be a div in namespace {XHTML_NS}"]
    problems: list[str] = []
    for node in root.iter():
        if node.tag is etree.ProcessingInstruction:
            problems.append("processing instructions are not allowed")
        elif isinstance(node.tag, str):  # not a comment
            problems.extend(_element_problems(node))
    if not "".join(root.itertext()).strip() and root.find(f".//{_IMG}") is None:
        problems.append("the narrative has no content (txt-2)")
    return list(dict.fromkeys(problems))


def _element_problems(node: etree._Element) -> list[str]:
    """txt-1 for one element: known formatting element, known attributes, no active content."""
    qname = etree.QName(node)
    if qname.namespace != XHTML_NS:
        return [f"element {qname.localname} is not XHTML"]
    name = qname.localname
    if name not in _NARRATIVE_ELEMENTS:
        return [f"element <{name}> is not allowed"]
    problems = []
    for attribute, value in node.attrib.items():
        attribute_name = etree.QName(attribute)
        local = attribute_name.localname
        if attribute_name.namespace == _XML_NS:
            local = f"xml:{local}"
        elif attribute_name.namespace is not None:
            problems.append(f"attribute {local} of <{name}> is not allowed")
            continue
        if local not in _NARRATIVE_ATTRIBUTES and f"{name}.{local}" not in _NARRATIVE_ELEMENT_ATTRIBUTES:
            problems.append(f"attribute {local} of <{name}> is not allowed")
        elif local in _URL_ATTRIBUTES and _is_active_url(value, inline_image=(name, local) == ("img", "src")):
            problems.append(f"<{name} {local}> holds a script or data URL")
        elif local == "style" and any(marker in value.lower() for marker in _ACTIVE_STYLE):
            problems.append(f"the style of <{name}> uses active or external CSS")
    return problems


def _is_active_url(value: str, *, inline_image: bool) -> bool:
    url = _URL_NOISE.sub("", value).lower()
    if inline_image and url.startswith(_INLINE_IMAGE):
        return False
    return url.startswith(_ACTIVE_SCHEMES)


def _is_base64(value: str) -> bool:
    """Whether a base64Binary value decodes (whitespace allowed, as R4 allows it): one that does
    not would later be served as an empty or truncated document."""
    compact = compact_base64(value)
    if len(compact) % 4:  # whole quads only: strict decoding still takes a stray "=" after one
        return False
    try:
        binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return False
    return True


def _resource_type_problem(resource_type: Any) -> str:
    if isinstance(resource_type, str):
        return f"unknown resourceType {_quote(resource_type)}"
    return "no resourceType string"


def _json_kind(value: Any) -> str:
    """The JSON type of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_quote(value)}"
    return "an array" if isinstance(value, list) else "an object"


def _quote(value: str) -> str:
    """A client value, shortened, as a JSON string literal (escapes included)."""
    return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)


def _code_list(prop: _Property) -> str:
    codes = prop.element.enum or ()
    shown = ", ".join(codes[:12])
    return f"the required codes ({shown}{', ...' if len(codes) > 12 else ''})"


class ResourceValidator:
    """Validates resources sent for storage against FHIR R4 and this server's served types."""

    def __init__(self, served_types: frozenset[str], invariants: InvariantSet | None = None):
        self.served_types = served_types
        self.invariants = invariants  # the R4 FHIRPath invariants (ig/invariants), checked last

    def validate(
        self, resource: Any, *, expected_type: str | None = None, bundle_types: Mapping[str, str] | None = None
    ) -> None:
        """Raise FhirError(422 or 400, ...) naming every problem found; return None when valid.

        400 when the body is not a resource of a served type (or not the type the URL names):
        the request itself is wrong. 422 when it is one, but not a valid one.

        ``bundle_types`` (``fullUrl`` -> resource type) checks a resource of a transaction before
        its ``urn:uuid:`` references are rewritten: their targets are then checked as the
        ``Type/id`` they will become, so the resource need not be validated again once rewritten.
        """
        resource_type = self._resource_type(resource, expected_type)
        walk = _Walk(bundle_types)
        with contextlib.suppress(_IssueLimitReached):
            walk.resource(resource, resource_type, 0, None)
        issues = list(walk.issues)
        if len(issues) <= MAX_ISSUES and not walk.too_deep:
            issues.extend(_extension_issues(resource, resource_type))
            if not issues and self.invariants is not None:  # on a structurally valid resource only
                issues.extend(self.invariants.broken(resource))
        if not issues:
            return
        outcome = [outcome_issue("error", code, message, [path]) for path, code, message in issues[:MAX_ISSUES]]
        if len(issues) > MAX_ISSUES:
            outcome.append(
                outcome_issue("information", "informational", f"only the first {MAX_ISSUES} problems are reported")
            )
        path, code, message = issues[0]
        more = f" (and {len(issues) - 1} more problems)" if len(issues) > 1 else ""
        raise FhirError(422, f"{resource_type} is not valid: {message}{more}", code, expression=[path], issues=outcome)

    def _resource_type(self, resource: Any, expected_type: str | None) -> str:
        """The resource type, once the body is known to be a resource this request may carry."""
        if not isinstance(resource, dict):
            raise FhirError(400, "the body is not a FHIR resource (a JSON object)", "structure")
        resource_type = resource.get("resourceType")
        if not _is_concrete_resource_type(resource_type):
            problem = _resource_type_problem(resource_type)
            raise FhirError(400, f"the body is not a FHIR resource: {problem}", "structure")
        if resource_type not in self.served_types:
            raise FhirError(400, f"resource type {resource_type} is not served here", "not-supported")
        if expected_type is not None and resource_type != expected_type:
            raise FhirError(
                400,
                f"resource type {resource_type} does not match the URL's {expected_type}",
                "invalid",
                expression=["resourceType"],
            )
        return resource_type


def _extension_issues(resource: dict[str, Any], resource_type: str) -> list[tuple[str, str, str]]:
    """Where an extension defined by a profile in ``profiles/`` breaks its definition."""
    profiles = load_profiles()
    issues = []
    for path, extension in _extensions(resource, resource_type):
        url = extension.get("url")
        profile = profiles.get(url) if isinstance(url, str) else None
        if profile is None or profile.type != "Extension":
            continue
        for problem in violations(profile, extension):
            issues.append((f"{path}.{problem.location}", "invalid", f"{path}.{problem.message}"))
    return issues


def _extensions(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every extension object below ``node`` (sub-extensions included), with its location."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _extensions(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("extension", "modifierExtension") and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield f"{path}.{key}[{index}]", item
        yield from _extensions(value, f"{path}.{key}")
