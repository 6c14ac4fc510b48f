"""Parse FHIR search parameters (R4 §3.1.1) into a :class:`storage.query.Query`.

Knows the syntax — modifiers, prefixes, ``system|code``, escapes, comma-ORs, chains, ``_has``,
``_include`` and the result parameters — and turns it into the backend-neutral tree, using the
SearchParameter definitions for types and targets. Unknown or unsupported parameters are an
error under ``Prefer: handling=strict`` and are ignored (and reported) otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from fhir_server.fhir.numbers import natural
from fhirmodel.dates import DateFormatError, date_range, now_us
from fhirmodel.errors import FhirError, bad_request
from fhirmodel.indexing import normalize_string, parse_reference
from fhirmodel.schema import is_resource_type
from fhirmodel.searchparams import SearchParam, SearchParamRegistry, Through
from fhirmodel.terminology import Terminology
from storage.query import (
    ANY_SYSTEM,
    Chain,
    DateRange,
    Expr,
    Has,
    Include,
    Missing,
    Not,
    NumberRange,
    Prefix,
    Query,
    Reference,
    ReferenceIdentifier,
    SortKey,
    String,
    Token,
    TokenIn,
    TokenText,
    Uri,
    all_of,
    any_of,
)

PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})
#: Result parameters handled outside the query tree (R4 §3.1.1.5), plus paging and format.
RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_format", "_pretty"}
)
PAGING_PARAMS = frozenset({"_getpages", "_getpagesoffset"})
MAX_CHAIN_DEPTH = 3
#: Values (comma-separated alternatives included) one search may hold in all: each becomes a term
#: of the store's query, and a query of thousands of free-text terms takes seconds to plan.
MAX_VALUES = 1000


@dataclass
class ParsedSearch:
    query: Query
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    #: The parameters actually applied, normalised, for the ``self`` link.
    applied: list[tuple[str, str]] = field(default_factory=list)
    #: Parameters ignored in lenient mode, for an OperationOutcome warning.
    ignored: list[str] = field(default_factory=list)


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` except where escaped with a backslash; unescape ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            buf.append(nxt if nxt in ",|$\\" else ch + nxt)
            i += 2
            continue
        if ch == sep:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _split_unescaped_once(value: str, sep: str) -> list[str]:
    """Split on the first unescaped ``sep`` (keeps escapes for the next step)."""
    i = 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == sep:
            return [value[:i], value[i + 1 :]]
        i += 1
    return [value]


def _or_values(value: str) -> list[str]:
    """Comma-separated alternatives, escapes kept for the value parser."""
    out: list[str] = []
    rest = value
    while True:
        parts = _split_unescaped_once(rest, ",")
        out.append(parts[0])
        if len(parts) == 1:
            return out
        rest = parts[1]


def _check_values(params: list[tuple[str, str]]) -> None:
    """At most :data:`MAX_VALUES` values in a search (an escaped comma counts too: it is a bound)."""
    values = sum(value.count(",") + 1 for _, value in params)
    if values > MAX_VALUES:
        raise FhirError(400, f"a search holds at most {MAX_VALUES} values ({values} sent)", "too-costly")


def _unescape(value: str) -> str:
    return split_escaped(value, "\x00")[0]


class SearchParser:
    def __init__(self, registry: SearchParamRegistry, terminology: Terminology, base_url: str, max_count: int):
        self.registry = registry
        self.terminology = terminology
        self.base_url = base_url
        self.max_count = max_count

    # -- entry point ---------------------------------------------------------------------------

    def parse(
        self,
        resource_type: str,
        params: list[tuple[str, str]],
        *,
        strict: bool,
        default_count: int,
    ) -> ParsedSearch:
        conditions: list[Expr] = []
        applied: list[tuple[str, str]] = []
        ignored: list[str] = []
        sort: tuple[SortKey, ...] = ()
        includes: list[Include] = []
        count = default_count
        total = True
        summary: str | None = None
        elements: tuple[str, ...] | None = None

        _check_values(params)
        for name, value in params:
            if name in PAGING_PARAMS or name in ("_format", "_pretty"):
                continue
            try:
                if name == "_count":
                    count = self._count(value)
                elif name == "_sort":
                    sort = self._sort(resource_type, value)
                elif name in ("_include", "_revinclude") or name.startswith(("_include:", "_revinclude:")):
                    includes.append(self._include(resource_type, name, value))
                elif name == "_summary":
                    if value not in SUMMARY_MODES:
                        raise bad_request(f"_summary must be one of {', '.join(sorted(SUMMARY_MODES))}")
                    summary = value
                elif name == "_elements":
                    elements = tuple(e.strip() for e in value.split(",") if e.strip())
                elif name == "_total":
                    if value not in TOTAL_MODES:
                        raise bad_request("_total must be none, estimate or accurate")
                    total = value != "none"
                else:
                    conditions.append(self._condition(resource_type, name, value, depth=0))
            except _Unsupported as exc:
                if strict:
                    raise bad_request(str(exc), code="not-supported") from None
                ignored.append(f"{name}: {exc}")
                continue
            applied.append((name, value))

        if summary == "count":
            count = 0
        query = Query(
            resource_type=resource_type,
            where=all_of(*conditions),
            sort=sort,
            count=count,
            total=total or summary == "count",
            includes=tuple(includes),
        )
        return ParsedSearch(query, summary, elements, applied, ignored)

    def criteria(self, resource_type: str, query_string_params: list[tuple[str, str]]) -> Expr:
        """The condition of conditional create/update/delete and conditional references."""
        _check_values(query_string_params)
        conditions = []
        for name, value in query_string_params:
            if name in RESULT_PARAMS or name in PAGING_PARAMS:
                continue
            try:
                conditions.append(self._condition(resource_type, name, value, depth=0))
            except _Unsupported as exc:
                raise bad_request(f"{name}: {exc}", code="not-supported") from None
        if not conditions:
            raise bad_request("conditional operation without search criteria")
        return all_of(*conditions)

    # -- result parameters -------------------------------------------------------------------

    def _count(self, value: str) -> int:
        count = natural(value)
        if count is None:
            raise bad_request(f"_count must be a non-negative integer, not '{value}'")
        return min(count, self.max_count)

    def _sort(self, resource_type: str, value: str) -> tuple[SortKey, ...]:
        keys = []
        for item in value.split(","):
            item = item.strip()
            desc = item.startswith("-")
            code = item[1:] if desc else item
            param = self.registry.get(resource_type, code)
            if param is None:
                raise bad_request(f"cannot sort {resource_type} by unknown parameter '{code}'")
            keys.append(SortKey(code, desc))
        return tuple(keys)

    def _include(self, resource_type: str, name: str, value: str) -> Include:
        reverse = name.startswith("_revinclude")
        iterate = name.endswith((":iterate", ":recurse"))
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise bad_request(f"{name}={value}: expected SourceType:param[:TargetType]")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if not is_resource_type(source) or self.registry.get(source, "_id") is None:
            raise bad_request(f"{name}: unknown resource type '{source}'")
        if code == "*":
            return Include(source, None, target, reverse, iterate)
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            raise bad_request(f"{name}: '{source}:{code}' is not a reference search parameter")
        if not reverse and not iterate and source != resource_type:
            raise bad_request(f"_include must start from {resource_type} (or use :iterate)")
        if target is not None and param.targets and target not in param.targets:
            raise bad_request(f"{name}: {source}.{code} cannot refer to {target}")
        return Include(source, code, target, reverse, iterate)

    # -- conditions ----------------------------------------------------------------------------

    def _condition(self, rtype: str, name: str, value: str, depth: int) -> Expr:
        if depth > MAX_CHAIN_DEPTH:
            raise bad_request("chains and _has are limited to three levels")
        if name.startswith("_has:"):
            return self._has(rtype, name, value, depth)
        head, _, chain_rest = name.partition(".")
        code, _, modifier = head.partition(":")
        param = self.registry.get(rtype, code)
        if param is None:
            raise _Unsupported(f"unknown search parameter '{code}' for {rtype}")
        if chain_rest:
            return self._chain(rtype, param, modifier, chain_rest, value, depth)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad_request(f"{name} must be true or false")
            return self._missing(param, value == "true", depth)
        if (
            modifier
            and modifier not in param.modifiers
            and not (param.type == "reference" and is_resource_type(modifier))
        ):
            raise _Unsupported(f"modifier ':{modifier}' is not supported on {param.type} parameter '{code}'")
        if modifier == "not":
            return Not(self._matching(param, "", value, depth))
        if modifier == "not-in":
            return Not(self._matching(param, "in", value, depth))
        return self._matching(param, modifier, value, depth)

    def _matching(self, param: SearchParam, modifier: str, value: str, depth: int) -> Expr:
        """One of the comma-separated values, in the resource's own index or, where the
        parameter's expression goes through ``resolve()``, in the stored resource it reaches
        (:class:`fhirmodel.searchparams.Through`)."""
        own = [self._value(param, modifier, v) for v in _or_values(value)]
        suffix = f":{modifier}" if modifier else ""
        reached = [
            Chain(t.reference, (t.target,), self._condition(t.target, f"{t.param}{suffix}", value, depth + 1))
            for t in _throughs(param, depth)
        ]
        return any_of(*own, *reached)

    @staticmethod
    def _missing(param: SearchParam, missing: bool, depth: int) -> Expr:
        """``:missing``: no value of the parameter, in the resource nor in what it reaches."""
        reached = [Chain(t.reference, (t.target,), Missing(t.param, False)) for t in _throughs(param, depth)]
        if not reached:
            return Missing(param.code, missing)
        present = any_of(Missing(param.code, False), *reached)
        return Not(present) if missing else present

    def _chain(self, rtype: str, param: SearchParam, modifier: str, rest: str, value: str, depth: int) -> Expr:
        if param.type != "reference":
            raise bad_request(f"'{param.code}' is not a reference parameter and cannot be chained")
        if modifier and not is_resource_type(modifier):
            raise bad_request(f"chain on '{param.code}:{modifier}': unknown resource type")
        candidates = [modifier] if modifier else [t for t in param.targets if t != "Resource"]
        next_code = rest.partition(".")[0].partition(":")[0]
        targets = tuple(t for t in candidates if self.registry.get(t, next_code) is not None)
        if not targets:
            raise _Unsupported(f"cannot chain '{param.code}.{rest}' from {rtype}")
        if len(targets) > 1:
            branches = [self._condition(t, rest, value, depth + 1) for t in targets]
            return any_of(*(Chain(param.code, (t,), b) for t, b in zip(targets, branches, strict=True)))
        return Chain(param.code, targets, self._condition(targets[0], rest, value, depth + 1))

    def _has(self, rtype: str, name: str, value: str, depth: int) -> Expr:
        parts = name.split(":", 3)
        if len(parts) != 4:
            raise bad_request(f"{name}: expected _has:Type:reference:parameter")
        _, source, ref_code, rest = parts
        if not is_resource_type(source) or self.registry.get(source, "_id") is None:
            raise bad_request(f"{name}: unknown resource type '{source}'")
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise bad_request(f"{name}: '{source}:{ref_code}' is not a reference search parameter")
        if ref.targets and rtype not in ref.targets:
            raise bad_request(f"{name}: {source}.{ref_code} does not refer to {rtype}")
        return Has(source, ref_code, self._condition(source, rest, value, depth + 1))

    # -- values by type ------------------------------------------------------------------------

    def _value(self, param: SearchParam, modifier: str, raw: str) -> Expr:
        if raw == "":
            raise bad_request(f"empty value for parameter '{param.code}'")
        match param.type:
            case "token":
                return self._token(param, modifier, raw)
            case "string":
                text = _unescape(raw)
                if modifier == "exact":
                    return String(param.code, text, "exact")
                return String(param.code, normalize_string(text), "contains" if modifier == "contains" else "start")
            case "date":
                prefix, rest = _prefix(raw)
                try:
                    low, high = date_range(rest)
                except DateFormatError as exc:
                    raise bad_request(f"{param.code}: {exc}") from None
                if prefix == "ap":
                    margin = max(abs(now_us() - low) // 10, 86_400_000_000)
                    low, high = low - margin, high + margin
                return DateRange(param.code, prefix, low, high)
            case "number":
                prefix, rest = _prefix(raw)
                return self._number(param, prefix, rest)
            case "quantity":
                prefix, rest = _prefix(raw)
                pieces = split_escaped(rest, "|")
                if len(pieces) not in (1, 3):
                    raise bad_request(f"{param.code}: expected number|system|code")
                number = self._number(param, prefix, pieces[0])
                assert isinstance(number, NumberRange)
                system = pieces[1] or None if len(pieces) == 3 else None
                code = pieces[2] or None if len(pieces) == 3 else None
                return NumberRange(param.code, number.prefix, number.value, number.low, number.high, True, system, code)
            case "reference":
                return self._reference(param, modifier, raw)
            case "uri":
                mode = modifier if modifier in ("below", "above") else "eq"
                return Uri(param.code, _unescape(raw), mode)  # type: ignore[arg-type]
        raise _Unsupported(f"{param.type} parameters are not supported")

    def _token(self, param: SearchParam, modifier: str, raw: str) -> Expr:
        if modifier == "text":
            return TokenText(param.code, normalize_string(_unescape(raw)))
        if modifier == "in":
            codes = self.terminology.expand(_unescape(raw))
            if codes is None:
                raise bad_request(f"{param.code}:in: ValueSet '{raw}' is not known to this server", code="not-found")
            return TokenIn(param.code, codes)
        if modifier == "of-type":
            pieces = split_escaped(raw, "|")
            if len(pieces) != 3:
                raise bad_request(f"{param.code}:of-type: expected system|code|value")
            raise _Unsupported("':of-type' is not supported")
        pieces = [_unescape(p) for p in _split_unescaped_once(raw, "|")]
        if len(pieces) == 1:
            return Token(param.code, ANY_SYSTEM, pieces[0])
        system, code = pieces
        return Token(param.code, system or None, code or None)

    def _number(self, param: SearchParam, prefix: Prefix, text: str) -> Expr:
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise bad_request(f"{param.code}: '{text}' is not a number") from None
        if not number.is_finite():
            raise bad_request(f"{param.code}: '{text}' is not a finite number")
        exponent = number.as_tuple().exponent
        half = Decimal(5) * Decimal(10) ** (int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
        low, high = number - half, number + half
        if prefix == "ap":
            margin = abs(number) / 10
            low, high = number - margin, number + margin
        return NumberRange(param.code, prefix, float(number), float(low), float(high))

    def _reference(self, param: SearchParam, modifier: str, raw: str) -> Expr:
        value = _unescape(raw)
        if modifier == "identifier":
            pieces = _split_unescaped_once(raw, "|")
            if len(pieces) == 1:
                return ReferenceIdentifier(param.code, None, _unescape(pieces[0]))
            return ReferenceIdentifier(param.code, _unescape(pieces[0]) or None, _unescape(pieces[1]))
        rtype, rid, url = parse_reference(value, self.base_url)
        if url is not None:
            if "/" not in value and ":" not in value:
                rtype, rid, url = None, value, None
            else:
                return Reference(param.code, None, None, url)
        if modifier:  # a type modifier
            if rtype is not None and rtype != modifier:
                raise bad_request(f"{param.code}:{modifier}={value}: type mismatch")
            rtype = modifier
        if rtype is not None and param.targets and rtype not in param.targets and "Resource" not in param.targets:
            raise bad_request(f"{param.code} cannot refer to {rtype}")
        return Reference(param.code, rtype, rid)


def _throughs(param: SearchParam, depth: int) -> tuple[Through, ...]:
    """The stored targets ``param`` reaches, as chains one level deeper, while chains may go on."""
    return param.through if depth < MAX_CHAIN_DEPTH else ()


class _Unsupported(Exception):
    """A parameter this server does not know or support: an error only in strict mode."""


_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


def _prefix(raw: str) -> tuple[Prefix, str]:
    m = _PREFIX_RE.match(raw)
    if m:
        return m.group(1), raw[2:]  # type: ignore[return-value]
    return "eq", raw
