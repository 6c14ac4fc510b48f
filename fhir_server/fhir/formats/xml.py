"""FHIR R4 XML format (https://hl7.org/fhir/R4/xml.html), converted to and from the JSON form.

The server stores and processes resources as JSON, so XML only exists at the HTTP boundary: this
module maps between the two representations without going through the pydantic models. The
XML representation is ordered and distinguishes attributes from elements, which JSON does not,
so both directions are driven by `fhirmodel.schema` (element order, repetition, primitive types).

XML from clients is untrusted: it is parsed without DTDs, entities or network access, documents
with a DOCTYPE are refused (before libxml2 reads it, for ASCII-compatible encodings), and nesting
depth is bounded.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lxml import etree

from fhirmodel.schema import (
    JSON_BOOLEAN_TYPES,
    JSON_NUMBER_TYPES,
    RESOURCE,
    Element,
    is_resource_type,
    type_info,
)

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
#: Attributes such as ``xsi:schemaLocation`` are legal on FHIR XML but carry no content.
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

#: Deeper documents are refused: real resources stay far below, and it bounds our recursion.
MAX_DEPTH = 64

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
#: Found before parsing in any ASCII-compatible encoding; the post-parse check covers the others.
_DOCTYPE = b"<!DOCTYPE"
_TEXT_RUN = re.compile(r">[^<]*<")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INTEGER_TYPES = JSON_NUMBER_TYPES - {"decimal"}
_XHTML = "xhtml"
#: The JSON ``_x`` object of a primitive holds exactly what the FHIR ``Element`` type defines.
_PRIMITIVE_EXTRAS = "Element"

# One parser per module: lxml serialises concurrent use of a parser with an internal lock.
_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


class XmlFormatError(ValueError):
    """Content that cannot be converted; the message names the element path and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class _Layout:
    """How one FHIR type maps to XML: which elements become attributes, which JSON keys exist."""

    name: str
    elements: dict[str, Element]
    attributes: frozenset[str]
    json_keys: frozenset[str]


@functools.cache
def _layout(type_name: str) -> _Layout:
    """Derive the XML-specific facts of a type once; the schema only knows the JSON shape."""
    info = type_info(type_name)
    is_resource = is_resource_type(type_name)
    # Element.id and Extension.url are XML attributes; Resource.id is an ordinary element.
    attributes = {"id"} if not is_resource and "id" in info.elements else set()
    if type_name == "Extension":
        attributes.add("url")
    keys = set(info.elements)
    keys.update(f"_{e.name}" for e in info.elements.values() if _has_json_extras(e, attributes))
    if is_resource:
        keys.add("resourceType")
    return _Layout(type_name, info.elements, frozenset(attributes), frozenset(keys))


def _has_json_extras(element: Element, attributes: set[str]) -> bool:
    """Primitives carry id/extensions in a ``_x`` sibling, except attributes and xhtml, which cannot."""
    return element.is_primitive and element.type != _XHTML and element.name not in attributes


def _resource_layout(resource_type: Any, path: str) -> _Layout:
    if not isinstance(resource_type, str) or not is_resource_type(resource_type):
        raise XmlFormatError(path, f"unknown resource type {resource_type!r}")
    return _layout(resource_type)


def _fhir(name: str) -> str:
    return f"{{{FHIR_NS}}}{name}"


def _check_depth(root: etree._Element, path: str) -> None:
    """Refuse documents nested beyond MAX_DEPTH, narrative markup included."""
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_DEPTH:
            raise XmlFormatError(path, f"nesting deeper than {MAX_DEPTH} levels")


def _parse(data: bytes, path: str) -> etree._Element:
    """Parse untrusted XML; every lxml failure becomes an XmlFormatError."""
    if _DOCTYPE in data:
        raise XmlFormatError(path, "DOCTYPE and entity declarations are not allowed")
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.LxmlError, ValueError) as exc:
        raise XmlFormatError(path, f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlFormatError(path, "DOCTYPE and entity declarations are not allowed")
    return root


# --------------------------------------------------------------------------- JSON -> XML


def json_to_xml(resource: dict[str, Any]) -> bytes:
    """Serialise a FHIR resource (JSON form) as an XML document in specification order."""
    if not isinstance(resource, dict):
        raise XmlFormatError("", "a resource must be a JSON object")
    layout = _resource_layout(resource.get("resourceType"), "")
    root = etree.Element(_fhir(layout.name), nsmap={None: FHIR_NS})
    _write_complex(root, resource, layout, layout.name, 1)
    # Leaves and narrative markup count too, so that xml_to_json accepts everything produced here.
    _check_depth(root, layout.name)
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8")


def _write_complex(node: etree._Element, obj: Any, layout: _Layout, path: str, depth: int) -> None:
    """Fill ``node`` with the children of ``obj`` in the order the specification mandates."""
    if depth > MAX_DEPTH:  # checked here too so that deep JSON cannot exhaust the Python stack
        raise XmlFormatError(path, f"nesting deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, dict):
        raise XmlFormatError(path, f"expected a JSON object for {layout.name}")
    unknown = sorted(obj.keys() - layout.json_keys)
    if unknown:
        raise XmlFormatError(f"{path}.{unknown[0]}", "unknown element")
    for name, element in layout.elements.items():
        value, extras = obj.get(name), obj.get(f"_{name}")
        if value is None and extras is None:
            continue
        child_path = f"{path}.{name}"
        if name in layout.attributes:
            _set(node, name, _format_primitive(value, element.type, child_path), child_path)
        elif element.type == _XHTML:
            node.append(_xhtml_to_xml(value, child_path))
        elif element.is_primitive:
            _write_primitives(node, element, value, extras, child_path, depth)
        else:
            for index, item in _items(element, value, child_path):
                item_path = f"{child_path}[{index}]" if element.is_list else child_path
                child = etree.SubElement(node, _fhir(name))
                if element.type == RESOURCE:
                    if not isinstance(item, dict):
                        raise XmlFormatError(item_path, "expected a resource")
                    inner = _resource_layout(item.get("resourceType"), item_path)
                    resource = etree.SubElement(child, _fhir(inner.name))
                    _write_complex(resource, item, inner, item_path, depth + 2)
                else:
                    _write_complex(child, item, _layout(element.type), item_path, depth + 1)


def _items(element: Element, value: Any, path: str) -> list[tuple[int, Any]]:
    """Occurrences of an element, checking that only repeating elements are arrays."""
    if element.is_list != isinstance(value, list):
        raise XmlFormatError(path, "expected an array" if element.is_list else "unexpected array")
    return list(enumerate(value if isinstance(value, list) else [value]))


def _write_primitives(node: etree._Element, element: Element, value: Any, extras: Any, path: str, depth: int) -> None:
    """Merge a primitive's values with its ``_x`` id/extensions, index by index in arrays."""
    if element.is_list:
        values = [] if value is None else value
        more = [] if extras is None else extras
        if not isinstance(values, list) or not isinstance(more, list):
            raise XmlFormatError(path, "expected an array")
        if values and more and len(values) != len(more):
            raise XmlFormatError(path, f"_{element.name} and {element.name} differ in length")
        count = max(len(values), len(more))
        pairs = [(values[i] if values else None, more[i] if more else None, f"{path}[{i}]") for i in range(count)]
    elif isinstance(value, list) or isinstance(extras, list):
        raise XmlFormatError(path, "unexpected array")
    else:
        pairs = [(value, extras, path)]
    for item, extra, item_path in pairs:
        if item is None and extra is None:
            raise XmlFormatError(item_path, "null without a value, id or extension")
        child = etree.SubElement(node, _fhir(element.name))
        if item is not None:
            _set(child, "value", _format_primitive(item, element.type, item_path), item_path)
        if extra is not None:
            _write_complex(child, extra, _layout(_PRIMITIVE_EXTRAS), item_path, depth + 1)


def _set(node: etree._Element, name: str, text: str, path: str) -> None:
    try:
        node.set(name, text)
    except ValueError as exc:  # control characters and the like have no XML representation
        raise XmlFormatError(path, str(exc)) from None


def _format_primitive(value: Any, type_name: str, path: str) -> str:
    """The XML lexical form of a JSON primitive, refusing JSON types the FHIR type does not allow."""
    if type_name in JSON_BOOLEAN_TYPES:
        if not isinstance(value, bool):
            raise XmlFormatError(path, f"expected a boolean for {type_name}")
        return "true" if value else "false"
    if type_name in JSON_NUMBER_TYPES:
        allowed = int if type_name in _INTEGER_TYPES else int | float | Decimal
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise XmlFormatError(path, f"expected a number for {type_name}")
        text = _number_text(value)
        if text is None or not _DECIMAL.fullmatch(text):
            raise XmlFormatError(path, f"{type_name} is not a finite number of sensible size")
        return text
    if not isinstance(value, str):
        raise XmlFormatError(path, f"expected a string for {type_name}")
    return value


def _number_text(value: int | float | Decimal) -> str | None:
    """repr() is the shortest text reading back as the same float; Decimal keeps the text it was given."""
    try:
        return repr(value) if isinstance(value, float) else str(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return None


def _xhtml_to_xml(value: Any, path: str) -> etree._Element:
    """Embed the narrative as real XHTML, parsed as untrusted XML like any client document."""
    if not isinstance(value, str):
        raise XmlFormatError(path, "expected an XHTML string")
    div = _parse(value.encode("utf-8"), path)
    if div.tag != f"{{{XHTML_NS}}}div":
        raise XmlFormatError(path, f"narrative must be an XHTML div in namespace {XHTML_NS}")
    return div


# --------------------------------------------------------------------------- XML -> JSON


def xml_to_json(data: bytes) -> dict[str, Any]:
    """Read a FHIR XML resource into its JSON form; refuses anything not in the specification."""
    root = _parse(data, "")
    name = _local_name(root, FHIR_NS, "")
    layout = _resource_layout(name, name)
    _check_depth(root, name)
    return _read_resource(root, layout, name)


def _local_name(node: etree._Element, namespace: str, path: str) -> str:
    qname = etree.QName(node)
    if qname.namespace != namespace:
        found = qname.namespace or "no namespace"
        raise XmlFormatError(path, f"element {qname.localname} is in {found}, expected {namespace}")
    return qname.localname


def _read_resource(node: etree._Element, layout: _Layout, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": layout.name}
    out.update(_read_complex(node, layout, path))
    return out


def _read_complex(node: etree._Element, layout: _Layout, path: str, skip: str = "") -> dict[str, Any]:
    """Children and attributes of ``node`` as a JSON object; ``skip`` is an attribute read elsewhere."""
    out: dict[str, Any] = {}
    for attribute, value in node.attrib.items():
        qname = etree.QName(attribute)
        if qname.namespace == _XSI_NS or attribute == skip:
            continue
        if qname.namespace or attribute not in layout.attributes:
            problem = "value attribute on a complex type" if attribute == "value" else "unknown attribute"
            raise XmlFormatError(f"{path}@{attribute}", problem)
        out[attribute] = value
    _refuse_text(node.text, path)
    occurrences: dict[str, list[tuple[Any, Any]]] = {}
    for child in node.iterchildren(tag=etree.Element):
        _refuse_text(child.tail, path)
        tag = etree.QName(child).localname
        element = layout.elements.get(tag)
        if element is None or tag in layout.attributes:
            raise XmlFormatError(f"{path}.{tag}", "unknown element")
        seen = occurrences.setdefault(tag, [])
        if seen and not element.is_list:
            raise XmlFormatError(f"{path}.{tag}", "element repeats but is not an array")
        child_path = f"{path}.{tag}[{len(seen)}]" if element.is_list else f"{path}.{tag}"
        seen.append(_read_element(child, element, child_path))
    # A primitive array and its ``_x`` array stay aligned with nulls; a side with nothing is omitted.
    for tag, pairs in occurrences.items():
        is_list = layout.elements[tag].is_list
        for key, column in ((tag, [v for v, _ in pairs]), (f"_{tag}", [e for _, e in pairs])):
            if any(item is not None for item in column):
                out[key] = column if is_list else column[0]
    return out


def _refuse_text(text: str | None, path: str) -> None:
    if text and text.strip():
        raise XmlFormatError(path, f"unexpected text {text.strip()[:40]!r}")


def _read_element(node: etree._Element, element: Element, path: str) -> tuple[Any, Any]:
    """One occurrence as (JSON value, ``_x`` object); only primitives have the second part."""
    if element.type == _XHTML:
        _local_name(node, XHTML_NS, path)
        return _xhtml_to_json(node), None
    _local_name(node, FHIR_NS, path)
    if element.is_primitive:
        raw = node.get("value")
        value = None if raw is None else _parse_primitive(raw, element.type, path)
        extras = _read_complex(node, _layout(_PRIMITIVE_EXTRAS), path, skip="value") or None
        if value is None and extras is None:
            raise XmlFormatError(path, "primitive element without value or extension")
        return value, extras
    if element.type == RESOURCE:
        return _read_contained(node, path), None
    return _read_complex(node, _layout(element.type), path), None


def _read_contained(node: etree._Element, path: str) -> dict[str, Any]:
    """A Resource-typed element wraps exactly one resource element named after its type."""
    if node.attrib:
        raise XmlFormatError(path, "attributes are not allowed on a resource container")
    _refuse_text(node.text, path)
    children = list(node.iterchildren(tag=etree.Element))
    if len(children) != 1:
        raise XmlFormatError(path, "expected exactly one resource")
    _refuse_text(children[0].tail, path)
    name = _local_name(children[0], FHIR_NS, path)
    return _read_resource(children[0], _resource_layout(name, path), path)


def _parse_primitive(raw: str, type_name: str, path: str) -> Any:
    """The JSON value of an XML ``value`` attribute: numbers and booleans are typed in JSON."""
    if type_name in JSON_BOOLEAN_TYPES:
        if raw not in ("true", "false"):
            raise XmlFormatError(path, f"invalid boolean {raw!r}")
        return raw == "true"
    if type_name in JSON_NUMBER_TYPES:
        pattern = _INTEGER if type_name in _INTEGER_TYPES else _DECIMAL
        if pattern.fullmatch(raw):
            try:
                # As json.loads does: integers stay int, a fraction or an exponent makes a float.
                return float(raw) if any(c in raw for c in ".eE") else int(raw)
            except ValueError:  # more digits than Python converts
                pass
        raise XmlFormatError(path, f"invalid {type_name} {raw[:40]!r}")
    return raw


def _xhtml_to_json(div: etree._Element) -> str:
    """The div as a string, written the way the HL7 reference serialiser writes narrative.

    The copy drops namespace declarations the div inherited from the document but does not use.
    lxml leaves quotes in text bare where the reference serialiser (which produced the JSON of the
    specification and of most servers) writes ``&quot;``; escaping them too keeps such narratives
    byte-identical through a JSON → XML → JSON round trip. In lxml's output ``<`` and ``>`` only
    delimit markup (comments and processing instructions were removed when parsing), so every
    ``>…<`` run is text.
    """
    markup = etree.tostring(copy.deepcopy(div), encoding="unicode", with_tail=False)
    return _TEXT_RUN.sub(lambda run: run.group().replace('"', "&quot;"), markup)
