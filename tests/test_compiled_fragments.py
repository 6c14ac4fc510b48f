"""The compiled-filter cache of the SQLite store (``storage.sqlite.compiled``): it saves the
compiling, keeps a bounded number of entries, and answers each scope with its own text (that part
is the storage contract's, ``test_a_query_asked_again_under_another_scope_answers_for_that_scope``)."""

from __future__ import annotations

from collections.abc import Callable

from storage.query import EVERYTHING, NOTHING, OPEN_SCOPE, Chain, Expr, Token
from storage.sqlite.compiled import LARGEST, CompiledFragments
from storage.sqlite.compiler import SqlCompiler


def _token(rtype: str, code: str) -> str | None:
    return "token"


class _Scope:
    def __init__(self, practitioners: Expr):
        self.practitioners = practitioners

    def filter(self, resource_type: str) -> Expr:
        return self.practitioners if resource_type == "Practitioner" else EVERYTHING


def _counting(expr: Expr, builds: list[str]) -> Callable[[SqlCompiler], str]:
    def build(compiler: SqlCompiler) -> str:
        builds.append("built")
        return compiler.condition(expr, "r", "DocumentReference")

    return build


def test_a_fragment_is_compiled_once_and_its_arguments_come_first() -> None:
    fragments = CompiledFragments(_token)
    expr = Token("status", "urn:s", "current")
    builds: list[str] = []
    first, sql = fragments.compile(("k", expr), OPEN_SCOPE, _counting(expr, builds))
    again, same = fragments.compile(("k", expr), OPEN_SCOPE, _counting(expr, builds))
    assert builds == ["built"] and same == sql and again.args == first.args
    assert again.arg(42) == f"?{len(first.args) + 1}"  # what the caller adds is numbered after
    assert again.args[:-1] == first.args and again.aliases == first.aliases


def test_an_entry_is_compiled_again_when_a_chained_scope_differs() -> None:
    fragments = CompiledFragments(_token)
    expr = Chain("author", ("Practitioner",), Token("identifier", "urn:s", "81"), scoped=True)
    builds: list[str] = []
    _, open_sql = fragments.compile(("k", expr), _Scope(EVERYTHING), _counting(expr, builds))
    _, closed_sql = fragments.compile(("k", expr), _Scope(NOTHING), _counting(expr, builds))
    _, closed_again = fragments.compile(("k", expr), _Scope(NOTHING), _counting(expr, builds))
    assert builds == ["built", "built"] and open_sql != closed_sql == closed_again


def test_the_least_recently_used_entries_go_beyond_the_bound() -> None:
    fragments = CompiledFragments(_token, entries=3)
    builds: list[str] = []
    exprs = [Token("status", "urn:s", str(n)) for n in range(5)]
    for expr in exprs[:3]:
        fragments.compile(expr, OPEN_SCOPE, _counting(expr, builds))
    fragments.compile(exprs[0], OPEN_SCOPE, _counting(exprs[0], builds))  # used again: kept
    for expr in exprs[3:]:
        fragments.compile(expr, OPEN_SCOPE, _counting(expr, builds))
    assert len(fragments) == 3 and len(builds) == 5
    fragments.compile(exprs[0], OPEN_SCOPE, _counting(exprs[0], builds))
    assert len(builds) == 5  # still there
    fragments.compile(exprs[1], OPEN_SCOPE, _counting(exprs[1], builds))
    assert len(builds) == 6  # went first


def test_a_fragment_too_large_is_not_kept() -> None:
    fragments = CompiledFragments(_token)
    many = Token("_id", "urn:s", "x" * (LARGEST + 1))
    builds: list[str] = []
    for _ in range(2):
        fragments.compile(many, OPEN_SCOPE, _counting(many, builds))
    assert len(builds) == 2 and len(fragments) == 0
