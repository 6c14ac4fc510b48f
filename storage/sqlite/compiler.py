"""Compile a :mod:`storage.query` expression into SQL over the index tables.

Every predicate has two forms: a *condition* correlated to a resource alias (``EXISTS`` over the
``(res, param)`` index, cheap for a candidate row) and, where it can, a *driver*: a sub-select of
resource keys that starts from the value index. A conjunction uses its most selective driver as
``pk IN (...)`` and the rest as conditions, so a search by patient touches that patient's rows,
not the whole table — whatever the filter the policy adds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirmodel.indexing import contained_param, contained_prefix, normalize_string
from storage.query import (
    ANY_SYSTEM,
    And,
    Chain,
    DateRange,
    Everything,
    Expr,
    Has,
    Missing,
    Not,
    Nothing,
    NumberRange,
    Or,
    Reference,
    ReferenceIdentifier,
    String,
    Token,
    TokenIn,
    TokenText,
    Uri,
    all_of,
    in_contained,
)
from storage.sqlite.schema import INDEX_KINDS, IndexFamily, family_of
from storage.sqlite.slots import derived

#: The last code point: ``v <= x < v + TOP`` is "x starts with v" on an index.
TOP = "\U0010ffff"

#: The ``(code, system)`` rows of a JSON array of pairs bound at ``{}``.
_PAIRS_SQL = "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each({})"
#: Distinct code sets whose JSON is kept: the professions of the matrix, and a few ``:in`` value sets.
_PAIRS_CACHED = 64

#: Which kind of index table (:data:`storage.sqlite.schema.INDEX_KINDS`) holds each search parameter type.
KIND_OF_TYPE = {
    **{kind: kind for kind in INDEX_KINDS},
    "composite": "token",  # one token per element's combination (fhirmodel.composite)
}

#: The scope filter of a resource type, as an expression (given by the store per query).
ScopeFilter = Callable[[str], Expr]
#: The type of a search parameter of a resource type, or None when unknown.
ParamType = Callable[[str, str], str | None]


class SqlCompiler:
    """Collects SQL text and its bound arguments for one statement.

    Arguments are numbered (``?1``, ``?2``...), so fragments can be built in any order and
    assembled freely without their values going out of step with the text. Numbered rather than
    named: SQLite looks a name up among all the names before it, which made preparing a search of
    thousands of values quadratic.
    """

    def __init__(self, param_type: ParamType, scope: ScopeFilter):
        self.args: list[Any] = []
        #: The index families whose tables the statement reads: the store writes the deferred
        #: rows of those (:attr:`IndexFamily.deferred`) before it runs the statement.
        self.families: set[IndexFamily] = set()
        self._param_type = param_type
        self._scope = scope
        self._aliases = 0

    @classmethod
    def resume(
        cls,
        param_type: ParamType,
        scope: ScopeFilter,
        args: Iterable[Any],
        aliases: int,
        families: frozenset[IndexFamily],
    ) -> SqlCompiler:
        """A compiler that goes on after a fragment compiled earlier (:mod:`storage.sqlite.compiled`):
        its arguments first, its aliases taken, the families it reads."""
        compiler = cls(param_type, scope)
        compiler.args = list(args)
        compiler._aliases = aliases
        compiler.families = set(families)
        return compiler

    def family(self, rtype: str) -> IndexFamily:
        """The index tables of ``rtype``, which the statement being written reads."""
        family = family_of(rtype)
        self.families.add(family)
        return family

    @property
    def aliases(self) -> int:
        """How many aliases this compiler has handed out."""
        return self._aliases

    def _alias(self, prefix: str) -> str:
        self._aliases += 1
        return f"{prefix}{self._aliases}"

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"?{len(self.args)}"

    # -- the two forms ---------------------------------------------------------------------

    def condition(self, expr: Expr | _OneOf, alias: str, rtype: str) -> str:
        """SQL boolean: the resource ``alias`` (of type ``rtype``) satisfies ``expr``.

        Probes name their index (``INDEXED BY ..._res``): left to itself the planner may pick a
        value index whose only usable column is ``param`` and scan every row of a parameter for
        each candidate, which is linear in the database size.
        """
        match expr:
            case Everything():
                return "1"
            case Nothing():
                return "0"
            case And(items):
                return "(" + " AND ".join(self.condition(i, alias, rtype) for i in _cheapest_first(items)) + ")"
            case Or(items):
                return any_sql([self.condition(i, alias, rtype) for i in _cheapest_first(_grouped(items))])
            case Not(item):
                return f"NOT {self.condition(item, alias, rtype)}"
            case Missing(param, missing):
                kind = self._kind(rtype, param)
                if kind is None:
                    return "1" if missing else "0"
                family, i = self.family(rtype), self._alias("m")
                exists = (
                    f"EXISTS (SELECT 1 FROM {family.table(kind)} {i} INDEXED BY {family.probe_index(kind)}"
                    f" WHERE {i}.res = {alias}.pk AND {i}.param = {self.arg(param)})"
                )
                if kind == "reference":  # a reference to a contained resource is a value too
                    exists = f"({exists} OR {self._names_contained(param, alias, rtype)})"
                return f"NOT {exists}" if missing else exists
            case Chain():
                return self._chain_condition(expr, alias, rtype)
            case Has():
                return self._has_condition(expr, alias, rtype)
            case _:
                kind, where = self._leaf(expr, "i0", probe=True)
                family, i = self.family(rtype), self._alias("i")
                where = where.replace("i0.", f"{i}.")
                return (
                    f"EXISTS (SELECT 1 FROM {family.table(kind)} {i} INDEXED BY {family.probe_index(kind)}"
                    f" WHERE {i}.res = {alias}.pk AND {where})"
                )

    def driven(self, expr: Expr, rtype: str) -> tuple[str | None, Expr]:
        """A driver for ``expr`` (:meth:`driver`), and what a candidate it names is still to be
        checked against: ``expr`` without the conjunct that drives when that driver is exact.

        Why: the driver of a value predicate selects the resources its condition would find by
        probing each candidate's rows (the same SQL), so probing again was one look-up per
        candidate for nothing — of the ~7 a search by patient makes, in its page and its count."""
        items = expr.items if isinstance(expr, And) else (expr,)
        for item in _by_selectivity(items):
            sql = self.driver(item, rtype)
            if sql is not None:
                return sql, all_of(*(i for i in items if i is not item)) if _exact(item) else expr
        return None, expr

    def driver(self, expr: Expr | _OneOf, rtype: str) -> str | None:
        """SQL sub-select of the ``pk`` of resources of ``rtype`` that may satisfy ``expr``, starting
        from an index; ``None`` when the expression cannot narrow the candidates."""
        match expr:
            case And():
                return self.driven(expr, rtype)[0]
            case Or(items):
                parts = []
                for term in _grouped(items):
                    sql = self.driver(term, rtype)
                    if sql is None:
                        return None
                    parts.append(sql)
                return union_sql(parts)
            case Everything() | Nothing() | Not() | Missing():
                return None
            case Token("_id", system, code) if code is not None and _any_system(system):
                return self._by_id(rtype, (code,))
            case _OneOf(Token("_id", system), values) if _any_system(system):
                return self._by_id(rtype, values)
            case Chain(param, target_types, where, scoped):
                family = self.family(rtype)
                if family.target_index(param) is None:
                    return None  # no index from a target to these references: checked on candidates
                t, i = self._alias("t"), self._alias("c")
                references = family.table("reference")
                branches = []
                for ttype in target_types:
                    inner = self._filtered(where, ttype) if scoped else where
                    narrowed = self.driver(inner, ttype)
                    restrict = f" AND {t}.pk IN ({narrowed})" if narrowed else ""
                    branches.append(
                        f"SELECT {i}.res FROM {self.family(ttype).resources} {t} JOIN {references} {i}"
                        f" ON {i}.target_type = {t}.type AND {i}.target_id = {t}.id"
                        f" WHERE {t}.type = {self.arg(ttype)} AND {t}.deleted = 0"
                        f" AND {self.param_is(i, rtype, param)}{restrict}"
                        f" AND {self.condition(inner, t, ttype)}"
                    )
                inside = in_contained(expr)
                if not isinstance(inside, Nothing):
                    contained = self.driver(inside, rtype)
                    if contained is None:
                        return None
                    branches.append(contained)
                return union_sql(branches) if branches else None
            case Has():
                return None
            case _:
                family = self.family(rtype)
                if family.lean and not _drives_lean(expr, family):
                    return None  # no value index to start from: a condition on the candidates
                kind, cond = self._leaf(expr, "d0", rtype=rtype)
                d = self._alias("d")
                return f"SELECT {d}.res FROM {family.table(kind)} {d} WHERE " + cond.replace("d0.", f"{d}.")

    def _by_id(self, rtype: str, ids: tuple[str, ...]) -> str:
        """The resources of ``rtype`` whose id is one of ``ids``, from the resource table's own key,
        whatever the family: a lean family has no value index of ``_id``, and where there is one it
        is one more B-tree to read. Not deleted, as ``_id``'s index rows are."""
        r, resources = self._alias("r"), self.family(rtype).resources
        if len(ids) == 1:
            source, named = f"{resources} {r}", f"{r}.id = {self.arg(ids[0])}"
        else:  # from the ids: left to itself, the planner read every resource of the type for them
            j = self._alias("j")
            source = f"json_each({self.arg(derived(_json_array, *ids))}) {j} CROSS JOIN {resources} {r}"
            named = f"{r}.id = {j}.value"
        return f"SELECT {r}.pk AS res FROM {source} WHERE {r}.type = {self.arg(rtype)} AND {named} AND {r}.deleted = 0"

    def param_is(self, rows: str, rtype: str, param: str) -> str:
        """SQL boolean: the index rows ``rows`` (of resources of ``rtype``) are ``param``'s. For the
        binding or a key of a lean family, its name as a literal, as the partial index names it: the
        planner needs to see it to use the index, and the same name also given as a bound argument
        made SQLite check it on the table's rows — a search by patient took 0.30 ms instead of 0.08.
        The name is then the schema's, not the caller's."""
        family = self.family(rtype)
        if family.lean and family.keyed(param):
            return f"{rows}.param = '{param}'"
        return f"{rows}.param = {self.arg(param)}"

    def reverse(
        self, source_type: str, param: str | None, rows: str, source: str, scope_filter: Expr
    ) -> tuple[str, str]:
        """How to find the references of ``param`` (any when None) that resources of
        ``source_type`` (alias ``source``, their reference rows ``rows``) hold to given targets:
        ``(index clause, condition)`` to add to the look-up.

        From the targets through the value index of references, but a lean family has one for its
        binding and its reference keys only: any other parameter's references are looked for among
        the resources the binding in ``scope_filter`` names (every search of such a family is bound
        to a patient but the open scope's, which reads every resource of the type)."""
        family = self.family(source_type)
        if param is not None and (index := family.target_index(param)) is not None:
            return f"INDEXED BY {index}", ""
        if not family.lean:
            return f"INDEXED BY {family.index('reference_target')}", ""
        narrowed = self.driver(scope_filter, source_type)
        return "", f" AND {source}.pk IN ({narrowed})" if narrowed else ""

    def one_of(self, column: str, values: Iterable[Any]) -> str:
        """SQL boolean: ``column`` is one of ``values``, however many: they travel as one JSON
        argument, so neither the expression tree nor the count of bound arguments grows with them."""
        return f"{column} IN (SELECT value FROM json_each({self.arg(derived(_json_array, *values))}))"

    def any_reference_to(self, alias: str, targets: Iterable[tuple[str, str]]) -> str:
        """SQL boolean: the reference index row ``alias`` points at one of ``targets``
        (``(type, id)`` pairs), one ``IN`` per type (a ``_revinclude`` of a page of a thousand)."""
        by_type: dict[str, list[str]] = {}
        for rtype, rid in targets:
            by_type.setdefault(rtype, []).append(rid)
        return any_sql(
            [
                f"({alias}.target_type = {self.arg(rtype)} AND {self.one_of(f'{alias}.target_id', ids)})"
                for rtype, ids in sorted(by_type.items())
            ]
        )

    # -- helpers -----------------------------------------------------------------------------

    def _filtered(self, where: Expr, rtype: str) -> Expr:
        """A related resource is seen only within the caller's scope for its type."""
        return all_of(where, self._scope(rtype))

    def _names_contained(self, param: str, alias: str, rtype: str) -> str:
        """Whether reference parameter ``param`` of ``alias`` points at a contained resource: such
        references have no row of their own, but the target's values are indexed under its name
        (every contained target has its ``_id``, a token)."""
        prefix, family = contained_prefix(param), self.family(rtype)
        c = self._alias("k")
        return (
            f"EXISTS (SELECT 1 FROM {family.table('token')} {c} INDEXED BY {family.probe_index('token')}"
            f" WHERE {c}.res = {alias}.pk"
            f" AND {c}.param >= {self.arg(prefix)} AND {c}.param < {self.arg(prefix + TOP)})"
        )

    def _kind(self, rtype: str, param: str) -> str | None:
        """The kind of index table of ``param`` (of a contained resource's, for a contained name)."""
        rtype, param = contained_param(param) or (rtype, param)
        ptype = self._param_type(rtype, param)
        return KIND_OF_TYPE.get(ptype) if ptype else None

    def _chain_condition(self, expr: Chain, alias: str, rtype: str) -> str:
        """A stored target of the chain matches, or a contained one (:func:`in_contained`).

        Where the target's condition names its targets (an identifier, an id, a reference: the
        policy's "this patient" and "authored by me" chains), the targets are found once per
        statement, as an uncorrelated ``IN`` SQLite evaluates once and keeps: each candidate then
        costs a look-up of its reference rows only. Resolved per candidate instead — its target
        found by type and id, the target's rows probed — the chains were about a dozen page reads
        per document, most of an ITI-67 search's."""
        family = self.family(rtype)
        branches, references = [], family.table("reference")
        for ttype in expr.target_types:
            t, i = self._alias("t"), self._alias("c")
            inner = self._filtered(expr.where, ttype) if expr.scoped else expr.where
            targets = self.family(ttype).resources
            head = f"EXISTS (SELECT 1 FROM {references} {i} INDEXED BY {family.probe_index('reference')}"
            mine = f"{i}.res = {alias}.pk AND {i}.param = {self.arg(expr.param)}"
            named, rest = self.driven(inner, ttype) if _rank(inner) == 0 else (None, inner)
            if named is None:
                branches.append(
                    f"{head} JOIN {targets} {t} ON {t}.type = {i}.target_type AND {t}.id = {i}.target_id"
                    f" WHERE {mine} AND {t}.type = {self.arg(ttype)} AND {t}.deleted = 0"
                    f" AND {self.condition(inner, t, ttype)})"
                )
            else:
                branches.append(
                    f"{head} WHERE {mine} AND {i}.target_type = {self.arg(ttype)} AND {i}.target_id IN"
                    f" (SELECT {t}.id FROM {targets} {t} WHERE {t}.pk IN ({named}) AND {t}.type = {self.arg(ttype)}"
                    f" AND {t}.deleted = 0 AND {self.condition(rest, t, ttype)}))"
                )
        inside = in_contained(expr)
        if not isinstance(inside, Nothing):
            branches.append(self.condition(inside, alias, rtype))
        return any_sql(branches) if branches else "0"

    def _has_condition(self, expr: Has, alias: str, rtype: str) -> str:
        s, i = self._alias("s"), self._alias("h")
        inner = self._filtered(expr.where, expr.source_type) if expr.scoped else expr.where
        if isinstance(inner, Nothing):  # no source can match: no look-up (nor a plan for one)
            return "0"
        references = self.family(expr.source_type).table("reference")
        indexed, narrowed = self.reverse(expr.source_type, expr.param, i, s, inner)
        return (
            f"EXISTS (SELECT 1 FROM {references} {i} {indexed}"
            f" JOIN {self.family(expr.source_type).resources} {s} ON {s}.pk = {i}.res"
            f" WHERE {i}.target_id = {alias}.id AND {i}.target_type = {self.arg(rtype)}"
            f" AND {self.param_is(i, expr.source_type, expr.param)}{narrowed}"
            f" AND {s}.type = {self.arg(expr.source_type)}"
            f" AND {s}.deleted = 0 AND {self.condition(inner, s, expr.source_type)})"
        )

    def _leaf(self, expr: Expr | _OneOf, a: str, *, probe: bool = False, rtype: str | None = None) -> tuple[str, str]:
        """The kind of index table of a value predicate and its condition on the index row alias ``a``:
        for a ``probe`` of one candidate's own rows, or for a driver (of a resource of ``rtype``) that
        starts from the values."""
        arg = self.arg
        named = self.param_is(a, rtype, _param_of(expr)) if rtype is not None else f"{a}.param = {arg(_param_of(expr))}"
        match expr:
            case _OneOf(Token(_, system), values):
                parts = [named, self.one_of(f"{a}.code", values)]
                if system is not ANY_SYSTEM:
                    parts.append(f"{a}.system = {arg(system)}")
                return "token", " AND ".join(parts)
            case _OneOf(Reference(_, target_type), values):
                parts = [named, self.one_of(f"{a}.target_id", values)]
                if target_type is not None:
                    parts.append(f"{a}.target_type = {arg(target_type)}")
                return "reference", " AND ".join(parts)
            case Token(_, system, code):
                parts = [named]
                if code is not None:
                    parts.append(f"{a}.code = {arg(code)}")
                if system is None:
                    parts.append(f"{a}.system IS NULL")
                elif system is not ANY_SYSTEM:
                    parts.append(f"{a}.system = {arg(system)}")
                return "token", " AND ".join(parts)
            case TokenText(_, text):
                return "token", (f"{named} AND {a}.text >= {arg(text)} AND {a}.text < {arg(derived(_above, text))}")
            case TokenIn(_, codes):
                if not codes:
                    return "token", "0"
                if probe:
                    # A candidate's own rows are one or two: their code looked up in one text of
                    # the codes of their system. The IN below builds a temporary index of the ~100
                    # pairs at every run, which was most of a read's query time (220 µs against
                    # 15 µs this way); one text of every pair, system included, cost 1.3–3.3 µs a
                    # row to scan (0.4–0.6 µs by system): a thousand documents' search pays it twice.
                    systems = _codes_by_system(codes)
                    if not systems:
                        return "token", "0"
                    cases = " ".join(f"WHEN {arg(system)} THEN {arg(keys)}" for system, keys in systems)
                    return "token", (
                        named + f" AND instr(CASE {a}.system {cases} END, char(30) || {a}.code || char(30)) > 0"
                        f" AND instr({a}.code, char(30)) = 0"
                    )
                # One JSON argument however many codes (the policy's readable types are ~100):
                # an OR of pairs cost ~0.5 ms of Python per query to build, and SQLite as much to prepare.
                pairs = _PAIRS_SQL.format(arg(_code_system_pairs(codes)))
                return "token", f"{named} AND ({a}.code, {a}.system) IN ({pairs})"
            case String(_, value, mode):
                head = f"{named} AND "
                if mode == "exact":  # the folded form too: the value index is on it
                    norm = arg(derived(normalize_string, value))
                    return "string", head + f"{a}.norm = {norm} AND {a}.exact = {arg(value)}"
                if mode == "contains":
                    return "string", head + f"instr({a}.norm, {arg(value)}) > 0"
                return "string", head + f"{a}.norm >= {arg(value)} AND {a}.norm < {arg(derived(_above, value))}"
            case DateRange(_, prefix, low, high):
                return "date", f"{named} AND " + self._date(a, prefix, low, high)
            case NumberRange():
                kind = "quantity" if expr.quantity else "number"
                parts = [named, self._number(a, expr)]
                if expr.quantity and expr.system is not None:
                    parts.append(f"{a}.system = {arg(expr.system)}")
                if expr.quantity and expr.code is not None:
                    parts.append(f"{a}.code = {arg(expr.code)}")
                return kind, " AND ".join(parts)
            case Reference(_, target_type, target_id, url):
                parts = [named]
                if url is not None:
                    parts.append(f"{a}.url = {arg(url)}")
                else:
                    parts.append(f"{a}.target_id = {arg(target_id)}")
                    if target_type is not None:
                        parts.append(f"{a}.target_type = {arg(target_type)}")
                return "reference", " AND ".join(parts)
            case ReferenceIdentifier(_, system, value):
                parts = [named, f"{a}.id_value = {arg(value)}"]
                if system is not None:
                    parts.append(f"{a}.id_system = {arg(system)}")
                return "reference", " AND ".join(parts)
            case Uri(_, value, mode):
                head = f"{named} AND "
                if mode == "below":
                    return "uri", head + f"{a}.value >= {arg(value)} AND {a}.value < {arg(derived(_above, value))}"
                if mode == "above":
                    return "uri", head + f"substr({arg(value)}, 1, length({a}.value)) = {a}.value"
                return "uri", head + f"{a}.value = {arg(value)}"
        raise TypeError(f"not a value predicate: {expr!r}")

    def _date(self, a: str, prefix: str, low: int, high: int) -> str:
        arg = self.arg
        match prefix:
            case "eq":
                return f"{a}.low >= {arg(low)} AND {a}.high <= {arg(high)}"
            case "ne":
                return f"NOT ({a}.low >= {arg(low)} AND {a}.high <= {arg(high)})"
            case "gt":
                return f"{a}.high > {arg(high)}"
            case "lt":
                return f"{a}.low < {arg(low)}"
            case "ge":
                return f"{a}.high > {arg(low)}"
            case "le":
                return f"{a}.low < {arg(high)}"
            case "sa":
                return f"{a}.low >= {arg(high)}"
            case "eb":
                return f"{a}.high <= {arg(low)}"
            case _:  # ap: overlaps the search range, already widened by the parser
                return f"{a}.low < {arg(high)} AND {a}.high > {arg(low)}"

    def _number(self, a: str, expr: NumberRange) -> str:
        arg = self.arg
        v = f"{a}.value"
        match expr.prefix:
            case "eq" | "ap":
                return f"{v} >= {arg(expr.low)} AND {v} < {arg(expr.high)}"
            case "ne":
                return f"NOT ({v} >= {arg(expr.low)} AND {v} < {arg(expr.high)})"
            case "gt" | "sa":
                return f"{v} > {arg(expr.value)}"
            case "lt" | "eb":
                return f"{v} < {arg(expr.value)}"
            case "ge":
                return f"{v} >= {arg(expr.value)}"
            case _:  # le
                return f"{v} <= {arg(expr.value)}"


def _above(text: str) -> str:
    """The bound above every text that starts with ``text``."""
    return text + TOP


def _json_array(*values: Any) -> str:
    return json.dumps(values)


@lru_cache(maxsize=_PAIRS_CACHED)
def _code_system_pairs(codes: frozenset[tuple[str, str]]) -> str:
    """The ``[code, system]`` pairs of a :class:`TokenIn` as one JSON array, sorted so that equal
    sets give equal text; cached because the policy hands the same few sets (one per profession)
    to every query."""
    return json.dumps(sorted([code, system] for system, code in codes))


#: What separates the codes of :func:`_codes_by_system`: ASCII's record separator, which no code
#: of a terminology holds.
_RECORD = "\x1e"


@lru_cache(maxsize=_PAIRS_CACHED)
def _codes_by_system(codes: frozenset[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The pairs of a :class:`TokenIn` as, per system, one text of its codes: ``RS code RS code RS``.

    Exact: the system is compared whole (``CASE``), and a row's code holding no record separator
    (the probe asks it) is found in its system's text only as a whole code of the set, since a
    code here holds none either — a pair whose code would is left out, and so is one without a
    system (as the IN form never matches a ``NULL`` system): no crafted code spans two codes."""
    kept: dict[str, list[str]] = {}
    for system, code in codes:
        if system is not None and _RECORD not in code:
            kept.setdefault(system, []).append(code)
    return tuple((system, _RECORD + _RECORD.join(sorted(kept[system])) + _RECORD) for system in sorted(kept))


@dataclass(frozen=True)
class _OneOf:
    """Several values of one token (same system) or one reference (same target type) asked
    together: ``like`` is one of them, its value left out. Compiled as one ``IN``, so a search
    for a thousand ids or patients is one index probe per value, not a thousand sub-queries for
    the planner to weigh."""

    like: Token | Reference
    values: tuple[str, ...]


def _grouped(items: tuple[Expr, ...]) -> list[Expr | _OneOf]:
    """The terms of a disjunction, with values of one token or reference merged (:class:`_OneOf`)."""
    groups: dict[Token | Reference, list[str]] = {}
    rest: list[Expr | _OneOf] = []
    for item in items:
        match item:
            case Token(param, system, code) if code is not None and system is not None:
                groups.setdefault(Token(param, system, None), []).append(code)
            case Reference(param, target_type, target_id, None) if target_id is not None:
                groups.setdefault(Reference(param, target_type, None), []).append(target_id)
            case _:
                rest.append(item)
    for like, values in groups.items():
        if len(values) == 1:
            rest.append(
                Token(like.param, like.system, values[0])
                if isinstance(like, Token)
                else Reference(like.param, like.target_type, values[0])
            )
        else:
            rest.append(_OneOf(like, tuple(values)))
    return rest


#: Value predicates whose driver is the very condition a probe of a candidate would check (a
#: value set's is not: a candidate's rows are matched against its pairs in another form).
_EXACT = (Token, TokenText, String, DateRange, NumberRange, Reference, ReferenceIdentifier, Uri)


def _exact(item: Expr) -> bool:
    """Whether ``item``'s driver selects just the resources a probe of ``item`` would accept: a
    value predicate's, or a disjunction of them (the policy's "this patient, by reference or by
    INS", which otherwise was probed again on each of the patient's documents)."""
    if isinstance(item, Or):
        return all(isinstance(term, _EXACT) for term in _grouped(item.items))
    return isinstance(item, _EXACT)


#: Terms of one compound SELECT at most: SQLite refuses more than 500 (SQLITE_MAX_COMPOUND_SELECT).
_UNION_TERMS = 100


def any_sql(conditions: list[str]) -> str:
    """SQL boolean: any of ``conditions``, parenthesised as a balanced tree.

    Why: SQLite parses ``a OR b OR c ...`` into a tree as deep as the list is long and refuses one
    deeper than 1000 ("Expression tree is too large"); balanced, a million terms are 20 deep.
    """
    if len(conditions) <= 1:
        return conditions[0] if conditions else "0"
    middle = len(conditions) // 2
    return f"({any_sql(conditions[:middle])} OR {any_sql(conditions[middle:])})"


def union_sql(selects: list[str]) -> str:
    """The ``UNION ALL`` of sub-selects of one column ``res``, however many: beyond
    :data:`_UNION_TERMS` they are grouped into nested sub-selects, each a compound SQLite accepts.
    ``ALL``: a driver only feeds an ``IN``, which ignores duplicates; removing them was a temporary
    B-tree per search."""
    selects = [f"SELECT res FROM ({s})" if " UNION " in s else s for s in selects]  # one term each
    if len(selects) <= _UNION_TERMS:
        return " UNION ALL ".join(selects)
    groups = [selects[i : i + _UNION_TERMS] for i in range(0, len(selects), _UNION_TERMS)]
    return union_sql([f"SELECT res FROM ({' UNION ALL '.join(group)})" for group in groups])


#: Token parameters whose values name one resource or a handful: as selective as a reference.
_IDENTIFYING_TOKENS = frozenset({"_id", "identifier"})


def _rank(item: Expr) -> int:
    """How likely a predicate is to narrow the candidates (lower is narrower), without statistics.

    A disjunction is only as narrow as its widest branch, a conjunction as its narrowest: the
    policy's "this patient, by reference or by INS" must drive a query rather than a
    low-cardinality ``status=active`` that matches every patient's rows. A whole string value
    comes before a code, which the index of every type shares: the Subscriptions of a DMP (by
    their exact criteria) were found from ``status=active``, i.e. from every active Consent of
    the database — 0.1 s per document created at 1 000 000 documents.
    """
    match item:
        case Reference(target_id=tid) if tid is not None:
            return 0
        case ReferenceIdentifier():
            return 0
        case Token(param=param, code=code) if code is not None and param in _IDENTIFYING_TOKENS:
            return 0
        case String(mode="exact"):
            return 1
        case Token(code=code) if code is not None:
            return 2
        case Reference() | Uri(mode="eq"):
            return 3
        case Chain():
            return 4
        case String() | TokenIn() | TokenText():
            return 5
        case DateRange() | NumberRange():
            return 6
        case And(items):
            return min(_rank(i) for i in items)
        case Or(items):
            return max(_rank(i) for i in items)
        case _:
            return 7


def _probes(item: Expr | _OneOf) -> int:
    """About how many index look-ups evaluating ``item`` for one candidate takes: a chain looks
    up its reference, the target and the target's own conditions."""
    match item:
        case And(items) | Or(items):
            return sum(_probes(i) for i in items)
        case Not(inner):
            return _probes(inner)
        case Chain(_, target_types, where, _):
            return len(target_types) * (2 + _probes(where))
        case Has(_, _, where, _):
            return 2 + _probes(where)
        case _:
            return 1


def _cheapest_first(items: Iterable[Expr | _OneOf]) -> list[Expr | _OneOf]:
    """The terms of a conjunction or a disjunction, the cheaper to evaluate first (stable).

    Why: SQLite stops evaluating an ``AND`` at its first false term and an ``OR`` at its first
    true one, in the order written. The policy's filter of a professional is "authored by me —
    through three reference chains — or of a type my profession may read and not masked": for the
    many documents of the second kind the chains were all evaluated first (a read's visibility
    query took 74–87 µs that way, 55–64 µs this way); the order changes nothing else."""
    return sorted(items, key=_probes)


def _drives_lean(expr: Expr | _OneOf, family: IndexFamily) -> bool:
    """Whether a value predicate can start a search in a lean family (:class:`storage.sqlite.schema.IndexFamily`): a
    reference of its binding, by its target or its identifier, a code of one of its token keys, a
    target of one of its reference keys, or a date where dates have their index."""
    match expr:
        case Reference(param=param, target_id=tid, url=None) if tid is not None:
            return family.target_index(param) is not None
        case _OneOf(like=Reference(param=param)):
            return family.target_index(param) is not None
        case ReferenceIdentifier(param=param):
            return param == family.binding
        case Token(param=param, code=code) if code is not None:
            return ("token", param) in family.keys
        case _OneOf(like=Token(param=param)):
            return ("token", param) in family.keys
        case DateRange():
            return family.dated
    return False


def _any_system(system: object) -> bool:
    """Whether a token's system matches the one of an ``_id`` row (none)."""
    return system is None or system is ANY_SYSTEM


def _param_of(expr: Expr | _OneOf) -> str:
    return expr.like.param if isinstance(expr, _OneOf) else expr.param  # type: ignore[union-attr]


def _by_selectivity(items: tuple[Expr, ...]) -> list[Expr]:
    """Order conjuncts so the likely most selective one drives the query."""
    return sorted(items, key=_rank)


#: How deep :func:`links_lazy` follows the scope's filters of linked types before it assumes they do.
_SCOPE_DEPTH = 3


def links_lazy(expr: Expr, scope: ScopeFilter, *, unscoped_only: bool = False, depth: int = 0) -> bool:
    """Whether a statement of ``expr`` may read the index rows of resources of a lazy family
    (:attr:`IndexFamily.lazy`) through a link — a chain to one of its types, a ``_has`` from one —
    here or in the scope's filter of a scoped link's types, which the statement holds too; with
    ``unscoped_only``, through a link that is not scoped (the policy's own), which may read
    resources beyond the caller's scope for their type."""
    match expr:
        case And(items) | Or(items):
            return any(links_lazy(item, scope, unscoped_only=unscoped_only, depth=depth) for item in items)
        case Not(item):
            return links_lazy(item, scope, unscoped_only=unscoped_only, depth=depth)
        case Chain(target_types=types, where=where, scoped=scoped) | Has(source_type=types, where=where, scoped=scoped):
            linked = (types,) if isinstance(types, str) else types
            if (not scoped or not unscoped_only) and any(family_of(rtype).lazy for rtype in linked):
                return True
            if links_lazy(where, scope, unscoped_only=unscoped_only, depth=depth):
                return True
            if not scoped:
                return False
            return depth >= _SCOPE_DEPTH or any(
                links_lazy(scope(t), scope, unscoped_only=unscoped_only, depth=depth + 1) for t in linked
            )
    return False
