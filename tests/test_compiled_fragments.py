"""The compiled-filter cache of the SQLite store (``storage.sqlite.compiled``): it saves the
compiling, keeps a bounded number of entries, answers each scope with its own text (that part
is the storage contract's, ``test_a_query_asked_again_under_another_scope_answers_for_that_scope``)
and, an entry serving every expression of its shape, binds each use's own values."""

from __future__ import annotations

from collections.abc import Callable

from storage.query import (
    ANY_SYSTEM,
    EVERYTHING,
    NOTHING,
    OPEN_SCOPE,
    AccessScope,
    Chain,
    DateRange,
    Expr,
    Has,
    Missing,
    Not,
    NumberRange,
    Reference,
    ReferenceIdentifier,
    String,
    Token,
    TokenIn,
    TokenText,
    Uri,
    all_of,
    any_of,
)
from storage.sqlite.compiled import LARGEST, CompiledFragments
from storage.sqlite.compiler import SqlCompiler
from storage.sqlite.slots import Values


def _token(rtype: str, code: str) -> str | None:
    return "token"


class _Scope:
    def __init__(self, practitioners: Expr):
        self.practitioners = practitioners

    def filter(self, resource_type: str) -> Expr:
        return self.practitioners if resource_type == "Practitioner" else EVERYTHING


def _counting(builds: list[str]) -> Callable[[SqlCompiler, Expr], str]:
    def build(compiler: SqlCompiler, skeleton: Expr) -> str:
        builds.append("built")
        return compiler.condition(skeleton, "r", "DocumentReference")

    return build


def test_a_fragment_is_compiled_once_and_its_arguments_come_first() -> None:
    fragments = CompiledFragments(_token)
    expr = Token("status", "urn:s", "current")
    builds: list[str] = []
    first, sql = fragments.compile("k", expr, OPEN_SCOPE, _counting(builds))
    again, same = fragments.compile("k", expr, OPEN_SCOPE, _counting(builds))
    assert builds == ["built"] and same == sql and again.args == first.args
    assert again.arg(42) == f"?{len(first.args) + 1}"  # what the caller adds is numbered after
    assert again.args[:-1] == first.args and again.aliases == first.aliases


def test_an_entry_is_compiled_again_when_a_chained_scope_differs() -> None:
    fragments = CompiledFragments(_token)
    expr = Chain("author", ("Practitioner",), Token("identifier", "urn:s", "81"), scoped=True)
    builds: list[str] = []
    _, open_sql = fragments.compile("k", expr, _Scope(EVERYTHING), _counting(builds))
    _, closed_sql = fragments.compile("k", expr, _Scope(NOTHING), _counting(builds))
    _, closed_again = fragments.compile("k", expr, _Scope(NOTHING), _counting(builds))
    assert builds == ["built", "built"] and open_sql != closed_sql == closed_again


def test_the_least_recently_used_entries_go_beyond_the_bound() -> None:
    fragments = CompiledFragments(_token, entries=3)
    builds: list[str] = []
    exprs = [Token(f"param{n}", "urn:s", "code") for n in range(5)]  # five shapes
    for expr in exprs[:3]:
        fragments.compile("k", expr, OPEN_SCOPE, _counting(builds))
    fragments.compile("k", exprs[0], OPEN_SCOPE, _counting(builds))  # used again: kept
    for expr in exprs[3:]:
        fragments.compile("k", expr, OPEN_SCOPE, _counting(builds))
    assert len(fragments) == 3 and len(builds) == 5
    fragments.compile("k", exprs[0], OPEN_SCOPE, _counting(builds))
    assert len(builds) == 5  # still there
    fragments.compile("k", exprs[1], OPEN_SCOPE, _counting(builds))
    assert len(builds) == 6  # went first


def test_a_fragment_too_large_is_not_kept() -> None:
    fragments = CompiledFragments(_token)
    many = any_of(*(Token("_id", "urn:s", str(n)) for n in range(LARGEST // 8)))
    builds: list[str] = []
    for _ in range(2):
        fragments.compile("k", many, OPEN_SCOPE, _counting(builds))
    assert len(builds) == 2 and len(fragments) == 0


def _direct(expr: Expr, scope: AccessScope) -> tuple[str, list[object]]:
    """What compiling ``expr`` afresh writes, without the cache."""
    compiler = SqlCompiler(_token, scope.filter)
    return compiler.condition(expr, "r", "DocumentReference"), compiler.args


def _everything_of(ins: str, pid: str, day: int, word: str) -> Expr:
    """One expression of every kind of predicate and value, its values drawn from the arguments."""
    readable = TokenIn("type", frozenset({("http://loinc.org", "11488-4"), ("http://loinc.org", "34133-9")}))
    return all_of(
        any_of(
            ReferenceIdentifier("subject", "urn:oid:1.2.250.1.213.1.4.8", ins), Reference("subject", "Patient", pid)
        ),
        any_of(Chain("author", ("Practitioner",), Token("identifier", "urn:rpps", ins)), readable),
        Not(Token("security", "urn:dmp", f"MASKED-{word}")),
        any_of(*(Token("_id", ANY_SYSTEM, f"{pid}-{n}") for n in range(3))),  # one JSON argument
        any_of(*(Reference("related", "DocumentReference", f"{pid}-{n}") for n in range(2))),
        Token("status", None, word),
        Token("category", f"urn:{word}", None),
        String("description", word.upper(), "exact"),
        String("description", word, "start"),
        String("description", word, "contains"),
        TokenText("type", word),
        Uri("url", f"http://{word}/", "below"),
        Uri("url", f"http://{word}/", "above"),
        Uri("url", f"http://{word}/x", "eq"),
        DateRange("date", "ge", day, day + 86_400),
        DateRange("period", "ap", day - 1, day + 1),
        NumberRange("value", "ge", float(day), float(day), float(day), quantity=True, system="urn:ucum", code="mg"),
        Reference("location", None, None, url=f"http://{word}/Location/1"),
        Missing("relatesto", True),
        Has("AuditEvent", "entity", Token("action", "urn:action", word)),
    )


def test_one_entry_serves_every_expression_of_its_shape_with_its_own_values() -> None:
    fragments = CompiledFragments(_token)
    builds: list[str] = []
    first = _everything_of("1111", "pat-a", 1_000_000, "alpha")
    second = _everything_of("2222", "pat-b", 2_000_000, "beta")
    compiled_first, sql_first = fragments.compile("k", first, OPEN_SCOPE, _counting(builds))
    compiled_second, sql_second = fragments.compile("k", second, OPEN_SCOPE, _counting(builds))
    assert builds == ["built"] and sql_first == sql_second
    assert (sql_first, compiled_first.args) == _direct(first, OPEN_SCOPE)
    assert (sql_second, compiled_second.args) == _direct(second, OPEN_SCOPE)
    assert not {"1111", "pat-a", "alpha", 1_000_000} & set(compiled_second.args)


def test_values_repeated_in_one_place_and_not_in_another_are_two_shapes() -> None:
    """Values of one system are grouped into one ``IN``, values of two are not: the text differs,
    so the shapes must (equal values share a slot)."""
    fragments = CompiledFragments(_token)
    builds: list[str] = []
    one_system = any_of(Token("code", "urn:a", "x"), Token("code", "urn:a", "y"))
    two_systems = any_of(Token("code", "urn:a", "x"), Token("code", "urn:b", "y"))
    for expr in (one_system, two_systems, one_system, two_systems):
        compiler, sql = fragments.compile("k", expr, OPEN_SCOPE, _counting(builds))
        assert (sql, compiler.args) == _direct(expr, OPEN_SCOPE)
    assert builds == ["built", "built"]


def test_a_chained_scope_of_the_same_shape_shares_the_entry_with_its_own_values() -> None:
    fragments = CompiledFragments(_token)
    builds: list[str] = []
    expr = Chain("author", ("Practitioner",), Token("identifier", "urn:s", "81"), scoped=True)
    for caller in ("10001", "10002"):
        scope = _Scope(Token("active", "urn:rpps", caller))
        compiler, sql = fragments.compile("k", expr, scope, _counting(builds))
        assert (sql, compiler.args) == _direct(expr, scope) and caller in compiler.args
    assert builds == ["built"]


def test_the_shape_of_a_skeleton_is_the_shape_of_its_expression() -> None:
    """The cache keys an entry by the shape of the expression and checks the scopes' shapes taken
    from their skeletons: both walks must number the values alike."""
    expr = _everything_of("1111", "pat-a", 1_000_000, "alpha")
    taken, again = Values(), Values()
    assert taken.shape(expr) == again.shape(again.skeleton(expr))
    assert taken.values == again.values and "pat-a-2" in taken.values


def test_a_candidate_is_not_probed_again_for_the_predicate_whose_exact_driver_named_it() -> None:
    compiler = SqlCompiler(_token, OPEN_SCOPE.filter)
    patient, current = Reference("patient", "Patient", "p1"), Token("status", ANY_SYSTEM, "current")
    driver, rest = compiler.driven(all_of(current, patient), "Consent")
    assert driver is not None and "target_id" in driver and rest == current
    driver, rest = compiler.driven(patient, "Consent")
    assert driver is not None and rest == EVERYTHING
    # In the documents' lean index the binding drives, the patient parameter is probed.
    subject = Reference("subject", "Patient", "p1")
    driver, rest = compiler.driven(all_of(current, patient, subject), "DocumentReference")
    assert driver is not None and "rec_reference" in driver and rest == all_of(current, patient)
    # A value set's driver matches pairs another way than its probe: the probe stays.
    readable = all_of(TokenIn("type", frozenset({("http://loinc.org", "11488-4")})), Not(current))
    driver, rest = compiler.driven(readable, "Consent")
    assert driver is not None and rest == readable
    # Nothing drives: everything is checked.
    driver, rest = compiler.driven(Not(current), "Consent")
    assert driver is None and rest == Not(current)
