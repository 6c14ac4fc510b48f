"""The shape of FHIR R4 types, read once from the fhir.resources models.

The server keeps resources as the client's JSON and never serialises through the models on the
hot path, yet several parts need to know what an element *is*: the XML converter (element order,
which elements repeat, which are primitives), search-value extraction (is this node a Coding or an
Identifier?), validation (required bindings) and `_summary`. This module answers those questions
from the models' field metadata, so there is one source of truth and no hand-written table.

The R4B models are wire-identical to R4 for the types this server serves (see the issue notes).
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass

from fhir.resources.R4B import get_fhir_model_class

#: FHIR primitive type name for each fhir_core annotation marker class.
_PRIMITIVE_MARKERS = {
    "Base64Binary": "base64Binary",
    "Boolean": "boolean",
    "Canonical": "canonical",
    "Code": "code",
    "Date": "date",
    "DateTime": "dateTime",
    "Decimal": "decimal",
    "Id": "id",
    "Instant": "instant",
    "Integer": "integer",
    "Integer64": "integer64",
    "Markdown": "markdown",
    "Oid": "oid",
    "PositiveInt": "positiveInt",
    "String": "string",
    "Time": "time",
    "UnsignedInt": "unsignedInt",
    "Uri": "uri",
    "Url": "url",
    "Uuid": "uuid",
    "Xhtml": "xhtml",
}
_PLAIN_PRIMITIVES = {bool: "boolean", int: "integer", str: "string", float: "decimal"}

#: Primitive types whose JSON form is a number or a boolean rather than a string.
JSON_NUMBER_TYPES = frozenset({"integer", "integer64", "positiveInt", "unsignedInt", "decimal"})
JSON_BOOLEAN_TYPES = frozenset({"boolean"})

#: Types whose JSON value is a full resource (``contained``, ``Bundle.entry.resource`` ...).
RESOURCE = "Resource"


@dataclass(frozen=True)
class Element:
    """One element of a type, as it appears in JSON."""

    name: str
    type: str
    is_list: bool
    is_primitive: bool
    required: bool
    summary: bool
    choice: str | None  # the choice group (``value`` for ``valueQuantity``), if any
    choice_required: bool  # one element of the choice group must be present
    enum: tuple[str, ...] | None  # codes of a required binding the models know of
    targets: tuple[str, ...]  # allowed reference targets, if a Reference


@dataclass(frozen=True)
class TypeInfo:
    """A complex type, backbone element or resource: its elements in specification order."""

    name: str
    elements: dict[str, Element]

    def element(self, name: str) -> Element | None:
        return self.elements.get(name)

    def choice_elements(self, base: str) -> list[Element]:
        """The concrete elements of a choice group (``value`` → ``valueQuantity``, ...)."""
        return [e for e in self.elements.values() if e.choice == base]


def _unwrap(annotation: typing.Any) -> tuple[typing.Any, bool]:
    """Strip Optional and List from an annotation; tell whether it was a list."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Union or (origin is not None and type(None) in args):
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:
                annotation = non_none[0]
                continue
            # Union[str, List[str]] (fhir_comments) or similar: not an element we describe.
            return annotation, is_list
        if origin is list:
            is_list = True
            annotation = args[0]
            continue
        return annotation, is_list


def _type_name(annotation: typing.Any) -> tuple[str, bool]:
    """FHIR type name of an unwrapped annotation, and whether it is a primitive."""
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in typing.get_args(annotation)[1:]:
            name = _PRIMITIVE_MARKERS.get(type(marker).__name__)
            if name:
                return name, True
        base = typing.get_args(annotation)[0]
        return _PLAIN_PRIMITIVES.get(base, "string"), True
    if annotation in _PLAIN_PRIMITIVES:
        return _PLAIN_PRIMITIVES[annotation], True
    name = getattr(annotation, "__name__", str(annotation))
    if name.endswith("Type"):
        name = name[: -len("Type")]
    return name, False


@functools.cache
def type_info(type_name: str) -> TypeInfo:
    """Describe a complex type, backbone element or resource by its model class name."""
    model = get_fhir_model_class(type_name)
    fields = model.model_fields
    by_alias = {f.alias or n: f for n, f in fields.items()}
    elements: dict[str, Element] = {}
    for name in model.elements_sequence():
        field = by_alias.get(name) or fields.get(name)
        if field is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        inner, is_list = _unwrap(field.annotation)
        tname, primitive = _type_name(inner)
        enum = extra.get("enum_values")
        elements[name] = Element(
            name=name,
            type=tname,
            is_list=is_list,
            is_primitive=primitive,
            required=bool(extra.get("element_required")) or _is_required(field),
            summary=bool(extra.get("summary_element_property")),
            choice=typing.cast("str | None", extra.get("one_of_many")),
            choice_required=bool(extra.get("one_of_many_required")),
            enum=tuple(typing.cast("list[str]", enum)) if enum else None,
            targets=tuple(typing.cast("list[str]", extra.get("enum_reference_types") or ())),
        )
    return TypeInfo(name=type_name, elements=elements)


def _is_required(field: typing.Any) -> bool:
    """A field without a default in the model is mandatory (1..1 or 1..*)."""
    return bool(field.is_required())


@functools.cache
def is_resource_type(name: str) -> bool:
    """True for a concrete resource type name (``Patient``), false for data types and unknowns."""
    if not name[:1].isupper() or name in ("Resource", "DomainResource"):
        return False
    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError):
        return False
    return bool(model.has_resource_base()) and getattr(model, "__resource_type__", None) == name
