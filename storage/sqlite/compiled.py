"""The SQL of a filter compiled once and kept, per store, for the requests that ask it again.

Why: the access filter of a professional on a patient (the patient, by reference or INS; the
author chains to Practitioner and PractitionerRole; the ~100 document types of the profession;
the masked label) compiles into ~3 KB of SQL and 50 arguments, and compiling it was the largest
Python part of a read or a search — for the same text each time: a clinician who opens a record
lists its documents and reads several of them, every request under the same filter.

An entry is keyed by what the text is made of: the expression, the resource type, the
statement's shape. The compiler also asks the caller's scope for the filters of the types a
scoped chain reaches (a chained Practitioner is searched within what the caller may see of
Practitioners): those answers are kept with the entry and asked again at every use, and an entry
whose answers differ is compiled anew. So a cached text is always the text this caller's scope
would have compiled; the cache saves time, never decides.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from storage.query import AccessScope, Expr
from storage.sqlite.compiler import ParamType, SqlCompiler
from storage.sqlite.schema import IndexFamily

#: Entries kept per store (least recently used out first): a few KB each.
ENTRIES = 512
#: The largest fragment kept, its text and text arguments together (characters): a filter is a
#: few KB; a search for a thousand ids is larger, and asked once. So the cache stays under 16 MB
#: (typically a few MB: the profession's set of types is one string, shared by its entries).
LARGEST = 32 * 1024


@dataclass(frozen=True)
class _Fragment:
    sql: str
    args: tuple[Any, ...]
    aliases: int
    scopes: tuple[tuple[str, Expr], ...]  # the scope filters the compilation asked for
    families: frozenset[IndexFamily]  # the index tables it reads


class CompiledFragments:
    """A bounded, thread-safe LRU of compiled SQL fragments (see the module's docstring)."""

    def __init__(self, param_type: ParamType, entries: int = ENTRIES):
        self._param_type = param_type
        self._entries = entries
        self._kept: OrderedDict[Hashable, _Fragment] = OrderedDict()
        self._lock = threading.Lock()

    def compile(
        self, key: Hashable, scope: AccessScope, build: Callable[[SqlCompiler], str]
    ) -> tuple[SqlCompiler, str]:
        """The fragment ``build`` writes for ``key``, and a compiler holding its arguments (what the
        caller adds next is numbered after them)."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
        if kept is None or any(scope.filter(rtype) != expr for rtype, expr in kept.scopes):
            kept = self._compiled(key, scope, build)
        compiler = SqlCompiler.resume(self._param_type, scope.filter, kept.args, kept.aliases, kept.families)
        return compiler, kept.sql

    def _compiled(self, key: Hashable, scope: AccessScope, build: Callable[[SqlCompiler], str]) -> _Fragment:
        """``build``'s fragment, compiled now, recording the scope filters it asks for; kept
        unless it is too large."""
        asked: dict[str, Expr] = {}

        def recorded(rtype: str) -> Expr:
            asked[rtype] = scope.filter(rtype)
            return asked[rtype]

        compiler = SqlCompiler(self._param_type, recorded)
        sql = build(compiler)
        fragment = _Fragment(
            sql, tuple(compiler.args), compiler.aliases, tuple(asked.items()), frozenset(compiler.families)
        )
        if len(sql) + sum(len(a) for a in fragment.args if isinstance(a, str)) <= LARGEST:
            with self._lock:
                self._kept[key] = fragment
                self._kept.move_to_end(key)
                while len(self._kept) > self._entries:
                    self._kept.popitem(last=False)
        return fragment

    def __len__(self) -> int:
        return len(self._kept)
