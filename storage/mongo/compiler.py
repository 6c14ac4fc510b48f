"""Compile a :mod:`storage.query` expression into a MongoDB query document.

A value predicate is one ``$elemMatch`` on the index array of its type (see
:mod:`storage.mongo.layout`); ``And``/``Or``/``Not`` become ``$and``/``$or``/``$nor``.

Chains and ``_has`` relate two resources. SQLite answers them with correlated sub-queries;
MongoDB's correlated ``$lookup`` pipelines are not usable everywhere (sharded ``from`` needs
5.1, and ``mongomock``, which the tests run on, has none), so a join is evaluated as a
*semi-join against the candidates*: the resources that satisfy the join-free part of the
condition (:func:`relaxed`, the same base: type, watermark, deletion) are fetched (keys and
references only), the related resources of those candidates that satisfy the join's own
condition — **with the caller's scope for their type** — are looked up with one indexed query per
join, and the join becomes an exact ``$in`` over the keys that satisfied it. The final query,
run by the store for the total and the page, thus holds the whole ``query AND scope`` condition:
nothing is ever filtered after paging. All of it runs in the caller's session, so inside a
transaction it reads one snapshot.

The cost: a join materialises key lists as large as its candidates (a search that names the
patient: that patient's resources; a search naming nobody: every resource of the type). See
``docs/mongodb.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from fhirmodel.indexing import contained_param, contained_prefix
from storage.mongo.layout import FIELD_OF_TYPE, PATIENT_PARAMS, SEVERAL_PATIENTS
from storage.query import (
    ANY_SYSTEM,
    EVERYTHING,
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
    any_of,
    in_contained,
)

#: The last code point: ``v <= x < v + TOP`` is "x starts with v" on an index.
TOP = "\U0010ffff"
#: A filter no document satisfies.
NEVER: dict[str, Any] = {"_id": {"$in": []}}

#: The scope filter of a resource type, as an expression.
ScopeFilter = Callable[[str], Expr]
#: The type of a search parameter of a resource type, or None when unknown.
ParamType = Callable[[str, str], str | None]
#: Runs a query (filter, projection) on the resources in the caller's session.
Finder = Callable[[dict[str, Any], dict[str, Any]], Iterable[dict[str, Any]]]


def both(*filters: dict[str, Any]) -> dict[str, Any]:
    """The conjunction of query documents (empty ones vanish)."""
    parts = [f for f in filters if f]
    if any(f is NEVER for f in parts):
        return NEVER
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def either(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The disjunction of query documents (``NEVER`` vanishes, an empty one wins)."""
    parts = [f for f in filters if f is not NEVER]
    if not parts:
        return NEVER
    if any(not f for f in parts):
        return {}
    return parts[0] if len(parts) == 1 else {"$or": parts}


def shard_hint(expr: Expr, rtype: str) -> set[str] | None:
    """The patient keys (:func:`storage.mongo.layout.patient_key`) every resource of ``rtype``
    satisfying ``expr`` has one of, or None when the expression does not tell: with it, a
    sharded cluster sends the query to those keys' shards only instead of every shard.

    Only literal references tell: a resource whose ``subject`` is ``Patient/x`` is keyed ``x``
    (or :data:`SEVERAL_PATIENTS`); one found by the patient's identifier may be keyed by a
    literal reference beside it, which the query does not know.
    """
    match expr:
        case Reference(param, "Patient", target_id, None) if param in PATIENT_PARAMS and target_id:
            return {target_id, SEVERAL_PATIENTS}
        case Token("_id", _, code) if rtype == "Patient" and code:
            return {code}
        case Nothing():
            return set()
        case And(items):
            hints = [h for h in (shard_hint(i, rtype) for i in items) if h is not None]
            return set.intersection(*hints) if hints else None
        case Or(items):
            union: set[str] = set()
            for item in items:
                hint = shard_hint(item, rtype)
                if hint is None:
                    return None
                union |= hint
            return union
    return None


def has_joins(expr: Expr) -> bool:
    match expr:
        case Chain() | Has():
            return True
        case And(items) | Or(items):
            return any(has_joins(i) for i in items)
        case Not(item):
            return has_joins(item)
    return False


def relaxed(expr: Expr) -> Expr:
    """A join-free condition every resource satisfying ``expr`` satisfies (a superset): what can
    be asked of an index before the joins are known."""
    match expr:
        case Chain() | Has():
            return EVERYTHING
        case And(items):
            return all_of(*(relaxed(i) for i in items))
        case Or(items):
            return any_of(*(relaxed(i) for i in items))
        case Not(item):
            return EVERYTHING if has_joins(item) else expr
    return expr


class MongoCompiler:
    """Query documents over the ``resources`` collection, for one caller's scope."""

    def __init__(self, param_type: ParamType, scope: ScopeFilter, find: Finder):
        self._param_type = param_type
        self._scope = scope
        self._find = find

    def filter(self, expr: Expr, rtype: str, base: dict[str, Any]) -> dict[str, Any]:
        """A query document that, together with ``base``, selects exactly the resources of
        ``base`` (all of type ``rtype``) that satisfy ``expr``."""
        loose = self._build(relaxed(expr), rtype, [])
        if not has_joins(expr) or loose is NEVER:
            return loose
        candidates = list(self._find(both(base, loose), {"_id": 1, "ref": 1}))
        return both(loose, self._build(expr, rtype, candidates))

    def typed_filter(self, types: Iterable[str], base: dict[str, Any]) -> dict[str, Any]:
        """Resources of any of ``types``, each within the scope of its own type (includes of
        ``*``, history of everything)."""
        branches = []
        for rtype in types:
            typed = both(base, {"type": rtype})
            branches.append(both({"type": rtype}, self.filter(self._scope(rtype), rtype, typed)))
        return either(branches)

    # -- the expression, joins resolved against the candidates ---------------------------------

    def _build(self, expr: Expr, rtype: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        match expr:
            case Everything():
                return {}
            case Nothing():
                return NEVER
            case And(items):
                return both(*(self._build(i, rtype, candidates) for i in items))
            case Or(items):
                return either([self._build(i, rtype, candidates) for i in items])
            case Not(item):
                inner = self._build(item, rtype, candidates)
                if inner is NEVER:
                    return {}
                return NEVER if not inner else {"$nor": [inner]}
            case Missing(param, missing):
                return self._missing(rtype, param, missing)
            case Chain():
                return self._chain(expr, rtype, candidates)
            case Has():
                return self._has(expr, rtype, candidates)
        return self._leaf(expr)

    def _scoped(self, where: Expr, rtype: str) -> Expr:
        """A related resource is seen only within the caller's scope for its type."""
        return all_of(where, self._scope(rtype))

    def _chain(self, chain: Chain, rtype: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """The candidates whose ``param`` references a live target that satisfies the chain (or a
        contained one: :func:`storage.query.in_contained`)."""
        targets: dict[str, set[str]] = {}
        for candidate in candidates:
            for value in candidate.get("ref") or ():
                if value.get("p") == chain.param and value.get("tt") in chain.target_types and value.get("k"):
                    targets.setdefault(value["tt"], set()).add(value["k"])
        found: list[str] = []
        for ttype in sorted(targets):
            where = self._scoped(chain.where, ttype) if chain.scoped else chain.where
            base = {"_id": {"$in": sorted(targets[ttype])}, "type": ttype, "deleted": False}
            condition = self.filter(where, ttype, base)
            if condition is not NEVER:
                found.extend(str(d["_id"]) for d in self._find(both(base, condition), {"_id": 1}))
        branches = [{"ref": {"$elemMatch": {"p": chain.param, "k": {"$in": sorted(found)}}}}] if found else []
        inside = in_contained(chain)
        if not isinstance(inside, Nothing):
            branches.append(self._build(inside, rtype, candidates))
        return either(branches)

    def _has(self, has: Has, rtype: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """The candidates some live ``source_type`` resource references through ``param`` and
        that satisfies the condition."""
        keys = sorted(str(c["_id"]) for c in candidates)
        if not keys:
            return NEVER
        where = self._scoped(has.where, has.source_type) if has.scoped else has.where
        base = {
            "type": has.source_type,
            "deleted": False,
            "ref": {"$elemMatch": {"p": has.param, "k": {"$in": keys}}},
        }
        condition = self.filter(where, has.source_type, base)
        if condition is NEVER:
            return NEVER
        wanted, hit = set(keys), set()
        for source in self._find(both(base, condition), {"ref": 1}):
            for value in source.get("ref") or ():
                if value.get("p") == has.param and value.get("k") in wanted:
                    hit.add(value["k"])
        return {"_id": {"$in": sorted(hit)}} if hit else NEVER

    def _field(self, rtype: str, param: str) -> str | None:
        rtype, param = contained_param(param) or (rtype, param)
        ptype = self._param_type(rtype, param)
        return FIELD_OF_TYPE.get(ptype) if ptype else None

    def _missing(self, rtype: str, param: str, missing: bool) -> dict[str, Any]:
        field = self._field(rtype, param)
        if field is None:
            return {} if missing else NEVER
        present: dict[str, Any] = {field: {"$elemMatch": {"p": param}}}
        if field == "ref":  # a reference to a contained resource is a value too
            prefix = contained_prefix(param)
            present = {"$or": [present, {"tok": {"$elemMatch": {"p": {"$gte": prefix, "$lt": prefix + TOP}}}}]}
        return {"$nor": [present]} if missing else present

    # -- value predicates ------------------------------------------------------------------------

    def _leaf(self, expr: Expr) -> dict[str, Any]:
        """One index value of the resource satisfies the predicate."""
        field, match = _value_match(expr)
        if match is None:
            return NEVER
        return {field: {"$elemMatch": match}}


def _value_match(expr: Expr) -> tuple[str, dict[str, Any] | None]:
    """The index array of a value predicate and the condition on one of its entries."""
    match expr:
        case Token(param, system, code):
            token: dict[str, Any] = {"p": param}
            if code is not None:
                token["c"] = code
            if system is None:
                token["s"] = None
            elif system is not ANY_SYSTEM:
                token["s"] = system
            return "tok", token
        case TokenText(param, text):
            return "tok", {"p": param, "t": {"$gte": text, "$lt": text + TOP}}
        case TokenIn(param, codes):
            if not codes:
                return "tok", None
            return "tok", {"p": param, "$or": [{"c": code, "s": system} for system, code in sorted(codes)]}
        case String(param, value, mode):
            if mode == "exact":
                return "str", {"p": param, "e": value}
            if mode == "contains":
                return "str", {"p": param, "n": {"$regex": re.escape(value)}}
            return "str", {"p": param, "n": {"$gte": value, "$lt": value + TOP}}
        case DateRange(param, prefix, low, high):
            return "date", {"p": param, **_date(prefix, low, high)}
        case NumberRange():
            number: dict[str, Any] = {"p": expr.param, **_number(expr)}
            if expr.quantity and expr.system is not None:
                number["s"] = expr.system
            if expr.quantity and expr.code is not None:
                number["c"] = expr.code
            return ("qty" if expr.quantity else "num"), number
        case Reference(param, target_type, target_id, url):
            if url is not None:
                return "ref", {"p": param, "u": url}
            reference: dict[str, Any] = {"p": param, "ti": target_id}
            if target_type is not None:
                reference["tt"] = target_type
            return "ref", reference
        case ReferenceIdentifier(param, system, value):
            identifier: dict[str, Any] = {"p": param, "iv": value}
            if system is not None:
                identifier["is"] = system
            return "ref", identifier
        case Uri(param, value, mode):
            if mode == "below":
                return "uri", {"p": param, "v": {"$gte": value, "$lt": value + TOP}}
            if mode == "above":  # the stored URI is a prefix of the searched one
                return "uri", {"p": param, "v": {"$in": [value[:n] for n in range(len(value) + 1)]}}
            return "uri", {"p": param, "v": value}
    raise TypeError(f"not a value predicate: {expr!r}")


def _date(prefix: str, low: int, high: int) -> dict[str, Any]:
    match prefix:
        case "eq":
            return {"lo": {"$gte": low}, "hi": {"$lte": high}}
        case "ne":
            return {"$or": [{"lo": {"$lt": low}}, {"hi": {"$gt": high}}]}
        case "gt":
            return {"hi": {"$gt": high}}
        case "lt":
            return {"lo": {"$lt": low}}
        case "ge":
            return {"hi": {"$gt": low}}
        case "le":
            return {"lo": {"$lt": high}}
        case "sa":
            return {"lo": {"$gte": high}}
        case "eb":
            return {"hi": {"$lte": low}}
    return {"lo": {"$lt": high}, "hi": {"$gt": low}}  # ap: overlaps the (widened) search range


def _number(expr: NumberRange) -> dict[str, Any]:
    match expr.prefix:
        case "eq" | "ap":
            return {"v": {"$gte": expr.low, "$lt": expr.high}}
        case "ne":
            return {"$or": [{"v": {"$lt": expr.low}}, {"v": {"$gte": expr.high}}]}
        case "gt" | "sa":
            return {"v": {"$gt": expr.value}}
        case "lt" | "eb":
            return {"v": {"$lt": expr.value}}
        case "ge":
            return {"v": {"$gte": expr.value}}
    return {"v": {"$lte": expr.value}}  # le
