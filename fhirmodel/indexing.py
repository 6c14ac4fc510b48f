"""Turn a resource into the typed search-index values every backend stores.

This is where FHIR data types meet search parameter types (R4 §3.1.1.4): a ``token`` over a
CodeableConcept indexes each coding, a ``string`` over a HumanName each name part, a ``date``
over a Period its range, and so on. The output is backend-neutral; each store lays it out its own
way (SQLite tables, MongoDB sub-documents).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from fhirmodel.dates import MAX_US, MIN_US, DateFormatError, date_range
from fhirmodel.fhirpath import Typed
from fhirmodel.schema import is_resource_type
from fhirmodel.searchparams import Only, SearchParam, SearchParamRegistry

# Index values are named tuples rather than dataclasses: a resource's index is tens of them, each
# made, hashed (to drop duplicates) and turned into a table row per write, and a tuple does each
# in C. Why it matters: the trail indexes an AuditEvent per request. A value's fields are its
# row's value columns, in order (``storage.sqlite.schema``).


class TokenValue(NamedTuple):
    system: str | None
    code: str | None
    text: str | None  # normalised display/text, for ``:text``


class StringValue(NamedTuple):
    norm: str  # accent- and case-folded, for the default prefix match
    exact: str


class DateValue(NamedTuple):
    low: int  # UTC microseconds, inclusive
    high: int  # exclusive


class NumberValue(NamedTuple):
    value: float


class QuantityValue(NamedTuple):
    value: float
    system: str | None
    code: str | None


class ReferenceValue(NamedTuple):
    target_type: str | None
    target_id: str | None
    url: str | None  # absolute or canonical URL not resolvable locally
    identifier_system: str | None = None
    identifier_value: str | None = None


class UriValue(NamedTuple):
    value: str


IndexValue = TokenValue | StringValue | DateValue | NumberValue | QuantityValue | ReferenceValue | UriValue


def normalize_string(text: str) -> str:
    """Fold case and accents: ``Élodie`` and ``elodie`` match, as FHIR string search asks."""
    if text.isascii():  # no accent to drop: NFKD leaves ASCII as it is (20x faster)
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def parse_reference(ref: str, base_url: str | None) -> tuple[str | None, str | None, str | None]:
    """Split a reference string into ``(type, id, url)``; local references lose the base URL."""
    if base_url and ref.startswith(base_url.rstrip("/") + "/"):
        ref = ref[len(base_url.rstrip("/")) + 1 :]
    if "://" in ref or ref.startswith(("urn:", "#")):
        return None, None, ref
    segments = ref.split("/")
    if "_history" in segments:
        segments = segments[: segments.index("_history")]
    if len(segments) == 2 and is_resource_type(segments[0]) and segments[1]:
        return segments[0], segments[1], None
    return None, None, ref


def patient_id_in(literal: str) -> str | None:
    """The id in ``Patient/x`` (relative, absolute or versioned); None for anything else."""
    parts = literal.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" else None


def _text_of(value: dict[str, Any]) -> str | None:
    text = value.get("text") or value.get("display")
    return normalize_string(text) if isinstance(text, str) else None


def _tokens(value: Any, vtype: str | None) -> list[TokenValue]:
    if isinstance(value, bool):
        return [TokenValue(None, "true" if value else "false", None)]
    if isinstance(value, str | int | float):
        return [TokenValue(None, str(value), None)]
    if not isinstance(value, dict):
        return []
    if vtype == "CodeableConcept" or (vtype is None and "coding" in value):
        text = _text_of(value)
        codings = [c for c in value.get("coding") or () if isinstance(c, dict)]
        out = [TokenValue(c.get("system"), c.get("code"), _text_of(c) or text) for c in codings]
        if text and all(t.text != text for t in out):
            # ``:text`` matches CodeableConcept.text as well as each Coding.display (R4 §3.1.1.5.5);
            # when every coding carries its own display, the concept's text needs a row of its own.
            out.append(TokenValue(None, None, text))
        return out
    if vtype in ("Identifier", "ContactPoint") or (vtype is None and "value" in value and "code" not in value):
        # ContactPoint's system (phone, email...) plays the part of the token system, as in HAPI.
        type_text = _text_of(value["type"]) if isinstance(value.get("type"), dict) else None
        return [TokenValue(value.get("system"), value.get("value"), type_text)]
    # Coding, and anything shaped like one.
    return [TokenValue(value.get("system"), value.get("code"), _text_of(value))]


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _strings(value: Any, vtype: str | None) -> list[StringValue]:
    texts: list[str] = []
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, dict):
        parts = _ADDRESS_PARTS if vtype == "Address" or "city" in value or "line" in value else _NAME_PARTS
        for part in parts:
            item = value.get(part)
            texts.extend(t for t in (item if isinstance(item, list) else [item]) if isinstance(t, str))
    return [StringValue(normalize_string(t), t) for t in texts]


def _dates(value: Any, vtype: str | None) -> list[DateValue]:
    try:
        if isinstance(value, str):
            return [DateValue(*date_range(value))]
        if isinstance(value, dict):
            if "start" in value or "end" in value:  # Period
                low = date_range(value["start"])[0] if value.get("start") else MIN_US
                high = date_range(value["end"])[1] if value.get("end") else MAX_US
                return [DateValue(low, high)]
            events = value.get("event")  # Timing
            if isinstance(events, list):
                return [DateValue(*date_range(e)) for e in events if isinstance(e, str)]
    except DateFormatError:
        return []
    return []


def _number(value: Any) -> float | None:
    """A finite number, or None. Why finite: ``NaN`` (a string ``"NaN"``, a ``Decimal``) or an
    overflowing decimal (``1e999``, infinite as a double) matches no search, a ``NaN`` row is
    refused by the index's ``NOT NULL``, and a deferred row (JSON) cannot hold either."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(Decimal(value))
        except InvalidOperation:
            return None
    return number if number is not None and math.isfinite(number) else None


def _quantities(value: Any) -> list[QuantityValue]:
    if isinstance(value, dict):
        number = _number(value.get("value"))
        if number is not None:
            return [QuantityValue(number, value.get("system"), value.get("code") or value.get("unit"))]
    number = _number(value)
    return [QuantityValue(number, None, None)] if number is not None else []


def _references(value: Any, base_url: str | None) -> list[ReferenceValue]:
    if isinstance(value, str):  # canonical or uri used as a reference
        rtype, rid, url = parse_reference(value, base_url)
        return [ReferenceValue(rtype, rid, url)]
    if not isinstance(value, dict):
        return []
    out: list[ReferenceValue] = []
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        rtype, rid, url = parse_reference(ref, base_url)
        out.append(ReferenceValue(rtype, rid, url))
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        out.append(ReferenceValue(None, None, None, ident.get("system"), ident.get("value")))
    return out


def _uris(value: Any) -> list[UriValue]:
    return [UriValue(value)] if isinstance(value, str) else []


def values_for(param: SearchParam, typed: list[Typed], base_url: str | None) -> list[IndexValue]:
    """Index values of one parameter from the values its expression found."""
    out: list[IndexValue] = []
    for value, vtype in typed:
        match param.type:
            case "token":
                out.extend(t for t in _tokens(value, vtype) if t.code is not None or t.text)
            case "string":
                out.extend(_strings(value, vtype))
            case "date":
                out.extend(_dates(value, vtype))
            case "number":
                number = _number(value)
                if number is not None:
                    out.append(NumberValue(number))
            case "quantity":
                out.extend(_quantities(value))
            case "reference":
                out.extend(_references(value, base_url))
            case "uri":
                out.extend(_uris(value))
            case "composite":
                out.extend(_composites(param, (value, vtype), base_url))
    return list(dict.fromkeys(out))  # drop duplicates, keep order


def _composites(param: SearchParam, element: Typed, base_url: str | None) -> list[TokenValue]:
    """A composite's values for one element its expression found: every combination of its
    components' values, as tokens whose code is the combination's key (:func:`composite_key`), so
    that the components of one element match together (:mod:`fhirmodel.composite`)."""
    per_component = []
    for component in param.components:
        values = values_for(replace(param, type=component.type), component.extractor(element), base_url)
        per_component.append([k for v in values for k in component_keys(v)])
    return [TokenValue(None, composite_key(c), None) for c in itertools.product(*per_component)]


def _escape(part: str) -> str:
    return part.replace("\\", "\\\\").replace("$", "\\$")


def composite_key(parts: Sequence[str]) -> str:
    """The index key of one combination of a composite's component values, each in a search form
    (:mod:`fhirmodel.composite`)."""
    return "$".join(_escape(part) for part in parts)


def component_keys(value: IndexValue) -> list[str]:
    """Every form a search may name one indexed component value by."""
    match value:
        case TokenValue(system=system, code=code) if code is not None:
            return [code, f"{system or ''}|{code}"]
        case ReferenceValue(target_type=rtype, target_id=rid, url=url):
            if url is not None:
                return [url]
            return [rid, f"{rtype}/{rid}"] if rtype and rid else [rid] if rid else []
        case UriValue(value=uri):
            return [uri]
    return []


def extract_index(
    registry: SearchParamRegistry, resource: dict[str, Any], base_url: str | None, only: Only | None = None
) -> dict[str, list[IndexValue]]:
    """Every search parameter's index values for ``resource`` (parameters with none are left out),
    and those of the contained resources its references point at (:func:`contained_name`); with
    ``only``, the resource's own parameters it accepts, and nothing of the contained resources."""
    index = _own_index(registry, resource, base_url, only)
    if only is None:
        index.update(_contained_index(registry, resource, resource, base_url, 1))
    return index


def _own_index(
    registry: SearchParamRegistry, resource: dict[str, Any], base_url: str | None, only: Only | None = None
) -> dict[str, list[IndexValue]]:
    index: dict[str, list[IndexValue]] = {}
    rtype = resource["resourceType"]
    params = registry.for_type(rtype).values() if only is None else registry.accepted(rtype, only)
    for param in params:
        values = values_for(param, param.extractor(resource), base_url)
        if values:
            index[param.code] = values
    return index


#: How many references deep contained resources are indexed: a DocumentReference's contained
#: PractitionerRole and, through it, the contained Practitioner it names (chains go 3 deep).
CONTAINED_DEPTH = 3


def contained_name(param: str, target_type: str, code: str) -> str:
    """The index name of the values of parameter ``code`` of a contained ``target_type`` that the
    container's reference parameter ``param`` points at.

    Why: R4 evaluates a chained parameter inside contained resources too (search.html, "Contained
    resources"). An MHD author is usually a contained Practitioner or PractitionerRole, so
    ``author.given`` must read them; indexing them on their container under the name of the chain
    that asks for them (``author:Practitioner.given``) lets any backend answer the chain from the
    container's own index rows (:func:`storage.query.in_contained`). A reference between contained
    resources nests the name: ``author:PractitionerRole.practitioner:Practitioner.given``.
    """
    return f"{contained_prefix(param)}{target_type}.{code}"


def contained_prefix(param: str) -> str:
    """What every :func:`contained_name` under reference parameter ``param`` starts with."""
    return f"{param}:"


def contained_param(name: str) -> tuple[str, str] | None:
    """``(type, code)`` of the innermost parameter a :func:`contained_name` names; None for the
    name of an ordinary parameter."""
    head, dot, code = name.rpartition(".")
    _, colon, rtype = head.rpartition(":")
    if not dot or not colon or not is_resource_type(rtype):
        return None
    return rtype, code


def _contained_index(
    registry: SearchParamRegistry, node: dict[str, Any], container: dict[str, Any], base_url: str | None, depth: int
) -> dict[str, list[IndexValue]]:
    """The index values of the contained resources ``node``'s references point at, by
    :func:`contained_name`. A contained resource is read among its siblings: its own ``#id``
    references name the container's other contained resources."""
    siblings = [c for c in container.get("contained") or () if isinstance(c, dict) and c.get("id")]
    if not siblings or depth > CONTAINED_DEPTH:
        return {}
    by_ref = {f"#{c['id']}": c for c in siblings}
    index: dict[str, list[IndexValue]] = {}
    for code, param in registry.for_type(node["resourceType"]).items():
        if param.type != "reference":
            continue
        for value, _ in param.extractor(node):
            target = by_ref.get(str(value.get("reference"))) if isinstance(value, dict) else None
            rtype = target.get("resourceType") if target else None
            if target is None or not isinstance(rtype, str):
                continue
            among_siblings = {**target, "contained": siblings}
            found = _own_index(registry, among_siblings, base_url)
            found.update(_contained_index(registry, among_siblings, container, base_url, depth + 1))
            for name, values in found.items():
                index.setdefault(contained_name(code, rtype, name), []).extend(values)
    return {name: list(dict.fromkeys(values)) for name, values in index.items()}
