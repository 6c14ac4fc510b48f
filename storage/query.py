"""The backend-neutral query a store executes.

A search is a tree of predicates over search-parameter index values. The same tree type carries
the access **filter** the policy hands down, so the store runs ``query AND filter`` as one
statement: totals, paging, includes, chains and ``_has`` never see what the filter excludes.
Every backend compiles this tree its own way (SQL for SQLite, a query document for MongoDB).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from fhirmodel.indexing import contained_name

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


class _AnySystem:
    """Marker: a token search without ``|`` matches whatever the system."""

    def __repr__(self) -> str:
        return "ANY_SYSTEM"


ANY_SYSTEM = _AnySystem()


@dataclass(frozen=True)
class Token:
    """``code``, ``system|code``, ``|code`` (system must be absent) or ``system|`` (code=None)."""

    param: str
    system: str | _AnySystem | None
    code: str | None


@dataclass(frozen=True)
class TokenText:
    """``:text``: the display or text starts with (folded) ``text``."""

    param: str
    text: str


@dataclass(frozen=True)
class TokenIn:
    """``:in``: the coding is one of ``codes`` (pairs of system and code, from a ValueSet)."""

    param: str
    codes: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class String:
    param: str
    value: str  # already folded for "start"/"contains"
    mode: Literal["start", "exact", "contains"]


@dataclass(frozen=True)
class DateRange:
    """A date search: ``prefix`` applied to the search range ``[low, high)`` (UTC microseconds)."""

    param: str
    prefix: Prefix
    low: int
    high: int


@dataclass(frozen=True)
class NumberRange:
    """A number or quantity search: ``value`` with its implicit precision ``[low, high)``.

    For a quantity, ``system`` and ``code`` narrow the unit (``None`` = not constrained).
    """

    param: str
    prefix: Prefix
    value: float
    low: float
    high: float
    quantity: bool = False
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Reference:
    """A reference to ``target_type/target_id`` (type ``None`` = any type), or an external ``url``."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None = None


@dataclass(frozen=True)
class ReferenceIdentifier:
    """``:identifier`` on a reference: ``Reference.identifier`` matches."""

    param: str
    system: str | None
    value: str


@dataclass(frozen=True)
class Uri:
    param: str
    value: str
    mode: Literal["eq", "below", "above"]


@dataclass(frozen=True)
class Missing:
    """``:missing=true`` (no value indexed for ``param``) or ``false``."""

    param: str
    missing: bool


@dataclass(frozen=True)
class Chain:
    """``param.target_param=...``: some referenced resource of ``target_types`` matches ``where``.

    A client's chain only sees targets within the caller's scope (``scoped``); a policy may build
    an unscoped one to ask about resources the caller cannot see ("refers to a hidden document").
    """

    param: str
    target_types: tuple[str, ...]
    where: Expr
    scoped: bool = True


@dataclass(frozen=True)
class Has:
    """``_has:Source:param:...``: some ``source_type`` resource referencing this one via ``param``
    matches ``where``.

    Like :class:`Chain`, a client's ``_has`` only sees sources within the caller's scope
    (``scoped``); a policy may build an unscoped one to ask about resources the caller cannot see
    ("a document of another patient points at this content").
    """

    source_type: str
    param: str
    where: Expr
    scoped: bool = True


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


@dataclass(frozen=True)
class Everything:
    """No restriction."""


@dataclass(frozen=True)
class Nothing:
    """Matches no resource: what a policy returns for a type the caller may not see at all."""


Leaf = (
    Token
    | TokenText
    | TokenIn
    | String
    | DateRange
    | NumberRange
    | Reference
    | ReferenceIdentifier
    | Uri
    | Missing
    | Chain
    | Has
)
Expr = Leaf | And | Or | Not | Everything | Nothing

EVERYTHING = Everything()
NOTHING = Nothing()


def all_of(*items: Expr) -> Expr:
    """Conjunction, simplified: ``Everything`` vanishes, ``Nothing`` wins, nested Ands flatten."""
    flat: list[Expr] = []
    for item in items:
        if isinstance(item, Nothing):
            return NOTHING
        if isinstance(item, Everything):
            continue
        flat.extend(item.items if isinstance(item, And) else (item,))
    if not flat:
        return EVERYTHING
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def any_of(*items: Expr) -> Expr:
    """Disjunction, simplified like :func:`all_of`."""
    flat: list[Expr] = []
    for item in items:
        if isinstance(item, Everything):
            return EVERYTHING
        if isinstance(item, Nothing):
            continue
        flat.extend(item.items if isinstance(item, Or) else (item,))
    if not flat:
        return NOTHING
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def in_contained(chain: Chain) -> Expr:
    """The resources whose own contained resources satisfy ``chain``: a contained target of one of
    its types, referenced by its parameter, meets its condition.

    R4 evaluates chains inside contained resources as well as across stored ones. Contained
    targets are indexed on their container under :func:`fhirmodel.indexing.contained_name`, so the
    condition is the chain's own with every parameter renamed into that target, and the target's
    ``_id`` (which every contained resource has) saying that there is one at all, so that a
    negation inside the chain is not satisfied by a container without such a target. Values of two
    contained targets of the same type and parameter share their names: a conjunction inside one
    chain may be met by two of them together.
    """
    return any_of(
        *(
            all_of(
                Missing(contained_name(chain.param, rtype, "_id"), False),
                _renamed(chain.where, contained_name(chain.param, rtype, "")),
            )
            for rtype in chain.target_types
        )
    )


def _renamed(expr: Expr, prefix: str) -> Expr:
    """``expr`` about a contained resource whose index names start with ``prefix``."""
    match expr:
        case And(items):
            return all_of(*(_renamed(i, prefix) for i in items))
        case Or(items):
            return any_of(*(_renamed(i, prefix) for i in items))
        case Not(item):
            return Not(_renamed(item, prefix))
        case Everything() | Nothing():
            return expr
        case Has():
            return NOTHING  # nothing stored refers to a resource contained in another
        case _:
            return replace(expr, param=prefix + expr.param)


class AccessScope(Protocol):
    """What a caller may see, per resource type, as a predicate the store adds to every query."""

    def filter(self, resource_type: str) -> Expr: ...


class OpenScope:
    """No restriction: for the server's own internal work, never for a client request."""

    def filter(self, resource_type: str) -> Expr:
        return EVERYTHING


OPEN_SCOPE = OpenScope()


class ClosedScope:
    """Nothing at all: what a request sees until access control has decided otherwise."""

    def filter(self, resource_type: str) -> Expr:
        return NOTHING


CLOSED_SCOPE = ClosedScope()


@dataclass(frozen=True)
class SortKey:
    param: str
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """``_include`` (``reverse=False``: follow ``source_type.param`` from the matches) or
    ``_revinclude`` (``reverse=True``: resources of ``source_type`` whose ``param`` points at a
    match). ``target_type`` narrows the referenced type; ``iterate`` applies it to what was
    included too."""

    source_type: str
    param: str | None  # None = every reference parameter (``*``)
    target_type: str | None = None
    reverse: bool = False
    iterate: bool = False


#: Where a search's or a history's pages stop (what is written after the first page is not in the
#: next): a number, or one per part of the store (SQLite's main file and its trail's), as the
#: store gave it; the caller only hands it back.
Watermark = int | list[int]


@dataclass(frozen=True)
class Query:
    resource_type: str
    where: Expr = EVERYTHING
    sort: tuple[SortKey, ...] = ()
    offset: int = 0
    count: int = 20
    total: bool = True
    includes: tuple[Include, ...] = field(default=())
    #: Only resources created up to this sequence number: keeps paging stable under inserts.
    watermark: Watermark | None = None
    #: Also match deleted resources, by the index of their last live version (their content is
    #: ``None``): for the server's own housekeeping (a purge must find revoked Consents and
    #: deleted documents too), never for a client's search.
    deleted: bool = False
