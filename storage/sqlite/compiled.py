"""The SQL of a filter compiled once and kept, per store, for the requests that ask it again.

Why: the access filter of a professional on a patient (the patient, by reference or INS; the
author chains to Practitioner and PractitionerRole; the ~100 document types of the profession;
the masked label) compiles into ~3 KB of SQL and 50 arguments, and compiling it was the largest
Python part of a read or a search — for the same text each time: a clinician who opens a record
lists its documents and reads several of them, every request under the same filter.

An entry is keyed by what the text is made of: the statement's kind and the *shape* of its
expression (:mod:`storage.sqlite.slots`: the expression without its values, which are bound at
each use), so one entry serves the searches of every patient and every caller of one profession.
The compiler also asks the caller's scope for the filters of the types a scoped chain reaches (a
chained Practitioner is searched within what the caller may see of Practitioners): their shapes
are kept with the entry and taken again, values and all, at every use, and an entry whose shapes
differ is compiled anew. So a cached text is always the text this caller's scope would have
compiled, with this request's values; the cache saves time, never decides.
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
from storage.sqlite.slots import Shape, Values, bound

#: Entries kept per store (least recently used out first): a few KB each.
ENTRIES = 512
#: The largest entry kept, its text, text arguments and shape together (characters, 8 per element
#: of the shape): a filter is a few KB; a search for a thousand ids is larger, and asked once.
#: So the cache stays under 16 MB (typically a few MB: the profession's set of types is one
#: string, shared by its entries).
LARGEST = 32 * 1024

#: What writes a fragment, given a compiler and the expression's skeleton.
Build = Callable[[SqlCompiler, Expr], str]


@dataclass(frozen=True)
class _Fragment:
    sql: str
    args: tuple[Any, ...]  # values, and the slots and derived values of the expression's
    aliases: int
    scopes: tuple[tuple[str, Shape], ...]  # the scope filters the compilation asked for
    families: frozenset[IndexFamily]  # the index tables it reads


class CompiledFragments:
    """A bounded, thread-safe LRU of compiled SQL fragments (see the module's docstring)."""

    def __init__(self, param_type: ParamType, entries: int = ENTRIES):
        self._param_type = param_type
        self._entries = entries
        self._kept: OrderedDict[Hashable, _Fragment] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, kind: Hashable, expr: Expr, scope: AccessScope, build: Build) -> tuple[SqlCompiler, str]:
        """The fragment ``build`` writes for ``expr`` in a statement of ``kind``, and a compiler
        holding its arguments, bound to ``expr``'s values (what the caller adds next is numbered
        after them)."""
        values = Values()
        key = (kind, values.shape(expr))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
        if kept is not None and any(values.shape(scope.filter(rtype)) != shape for rtype, shape in kept.scopes):
            kept = None
        if kept is None:
            values = Values()
            kept = self._compiled(key, expr, values, scope, build)
        args = bound(kept.args, values.values)
        compiler = SqlCompiler.resume(self._param_type, scope.filter, args, kept.aliases, kept.families)
        return compiler, kept.sql

    def _compiled(
        self, key: tuple[Hashable, Shape], expr: Expr, values: Values, scope: AccessScope, build: Build
    ) -> _Fragment:
        """``build``'s fragment of ``expr``'s skeleton, compiled now, recording the shapes of the
        scope filters it asks for (their values taken after ``expr``'s, as :meth:`compile` takes
        them again); kept unless it is too large."""
        skeleton = values.skeleton(expr)
        asked: dict[str, tuple[Expr, Shape]] = {}

        def recorded(rtype: str) -> Expr:
            if rtype not in asked:
                filtered = values.skeleton(scope.filter(rtype))
                asked[rtype] = (filtered, values.shape(filtered))
            return asked[rtype][0]

        compiler = SqlCompiler(self._param_type, recorded)
        sql = build(compiler, skeleton)
        fragment = _Fragment(
            sql,
            tuple(compiler.args),
            compiler.aliases,
            tuple((rtype, shape) for rtype, (_, shape) in asked.items()),
            frozenset(compiler.families),
        )
        size = len(sql) + sum(len(a) for a in fragment.args if isinstance(a, str)) + 8 * len(key[1])
        if size <= LARGEST:
            with self._lock:
                self._kept[key] = fragment
                self._kept.move_to_end(key)
                while len(self._kept) > self._entries:
                    self._kept.popitem(last=False)
        return fragment

    def __len__(self) -> int:
        return len(self._kept)
