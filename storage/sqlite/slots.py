"""An expression's values taken out of it, so that one compiled text serves every value.

Why: the policy's filter names the patient (by INS and by Patient id) and the caller (the author
chains), and a search names its own values; kept by its full expression, a compiled filter served
only the requests about one patient from one caller. With 50 000 patients each request compiled
its filter again (12 % of a search's time at 1 000 000 documents). Kept by its *shape* — the
expression with every value replaced by a numbered :class:`Slot` — one text serves a profession's
readers of every patient, its arguments bound at each use.

What is a value: the fields listed in :data:`_SLOTTED`, when they hold a text or a number. What
is not: parameter names, target types, modes and prefixes, a value set's codes (one per profession,
kept as they are), and ``None`` or ``ANY_SYSTEM`` where a value may be, which change the text.
Equal values share one slot, so two expressions share a shape only if they repeat the same values
in the same places: nothing the compiler decides from comparing values (grouping the terms of a
disjunction by system) can differ between them. The compiler writes a value it transforms (folded,
bounded, gathered into one JSON argument) through :func:`derived`, computed at binding.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from storage.query import (
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
)

#: The fields of each value predicate that hold values (when a text or a number).
_SLOTTED: dict[type, frozenset[str]] = {
    Token: frozenset({"system", "code"}),
    TokenText: frozenset({"text"}),
    String: frozenset({"value"}),
    DateRange: frozenset({"low", "high"}),
    NumberRange: frozenset({"value", "low", "high", "system", "code"}),
    Reference: frozenset({"target_id", "url"}),
    ReferenceIdentifier: frozenset({"system", "value"}),
    Uri: frozenset({"value"}),
}
#: Every field of each predicate without sub-expressions, in declaration order (the shape's).
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {
    kind: tuple((f.name, f.name in _SLOTTED.get(kind, ())) for f in fields(kind))
    for kind in (*_SLOTTED, TokenIn, Missing, Everything, Nothing)
}
#: What a value is (``bool`` is never one: it is an ``int`` only to Python).
_VALUES = frozenset({str, int, float})

#: An expression's shape: its nodes in pre-order, each with the fields that are not values, and
#: the number of the slot of each that is.
Shape = tuple[Hashable, ...]


@dataclass(frozen=True)
class Slot:
    """Where the compiled text takes the value numbered ``index`` at binding."""

    index: int


@dataclass(frozen=True)
class Derived:
    """An argument computed from values at binding: ``function(*inputs)``, slots replaced."""

    function: Callable[..., Any]
    inputs: tuple[Any, ...]

    def value(self, values: Sequence[Any]) -> Any:
        return self.function(*(values[i.index] if type(i) is Slot else i for i in self.inputs))


def derived(function: Callable[..., Any], *inputs: Any) -> Any:
    """``function(*inputs)``: now, or at binding when an input is a slot."""
    if any(type(i) is Slot for i in inputs):
        return Derived(function, inputs)
    return function(*inputs)


def bound(args: Sequence[Any], values: Sequence[Any]) -> list[Any]:
    """A compiled text's arguments with the values of this use in its slots."""
    return [values[a.index] if type(a) is Slot else a.value(values) if type(a) is Derived else a for a in args]


class Values:
    """The values taken out of one statement's expressions, each distinct one numbered once, in
    the order met (the same walk numbers an expression and its skeleton alike)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._numbers: dict[tuple[type, Any], int] = {}

    def shape(self, expr: Expr) -> Shape:
        """The shape of ``expr`` (or of a skeleton), taking its values."""
        out: list[Any] = []
        self._shape(expr, out)
        return tuple(out)

    def skeleton(self, expr: Expr) -> Expr:
        """``expr`` with a :class:`Slot` for each of its values, taking them."""
        match expr:
            case And(items):
                return And(tuple(self.skeleton(i) for i in items))
            case Or(items):
                return Or(tuple(self.skeleton(i) for i in items))
            case Not(item):
                return Not(self.skeleton(item))
            case Chain(where=where) | Has(where=where):
                return replace(expr, where=self.skeleton(where))
        changes: dict[str, Any] = {
            name: Slot(self._number(value))
            for name, slotted in _FIELDS[type(expr)]
            if slotted and type(value := getattr(expr, name)) in _VALUES
        }
        return replace(expr, **changes) if changes else expr

    def _number(self, value: Any) -> int:
        key = (type(value), value)
        number = self._numbers.get(key)
        if number is None:
            number = self._numbers[key] = len(self.values)
            self.values.append(value)
        return number

    def _shape(self, expr: Expr, out: list[Any]) -> None:
        # Dispatch on the exact type, not ``match``: this walk runs at every use of an entry.
        kind = type(expr)
        out.append(kind)
        leaf = _FIELDS.get(kind)
        if leaf is not None:
            for name, slotted in leaf:
                value = getattr(expr, name)
                if slotted and type(value) in _VALUES:
                    value = self._number(value)
                elif slotted and type(value) is Slot:
                    value = value.index
                out.append(value)
        elif isinstance(expr, And | Or):
            out.append(len(expr.items))
            for item in expr.items:
                self._shape(item, out)
        elif isinstance(expr, Not):
            self._shape(expr.item, out)
        elif isinstance(expr, Chain):
            out += (expr.param, expr.target_types, expr.scoped)
            self._shape(expr.where, out)
        elif isinstance(expr, Has):
            out += (expr.source_type, expr.param, expr.scoped)
            self._shape(expr.where, out)
        else:
            raise TypeError(f"not an expression: {expr!r}")
