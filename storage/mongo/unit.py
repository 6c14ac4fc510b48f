"""The unit of work of the MongoDB store: a session transaction, with savepoints.

MongoDB's multi-document transactions give atomicity for a whole ``Store.transaction()``
(snapshot reads, ``majority`` writes), but they have no savepoints, and the store's contract
has one: a failing inner ``transaction()`` (one entry of a batch) is undone alone. So every write
made inside a nested unit first records the document it replaces (an *undo journal*, in memory);
when the inner unit fails, the journal is played backwards inside the same outer transaction.

A transaction MongoDB aborts because another one wrote the same document first
(``TransientTransactionError``) cannot be run again here — its body is the caller's code — so it
surfaces as :class:`~storage.interface.VersionConflict`: the FHIR answer to a concurrent write.
A commit whose outcome is unknown is retried, as MongoDB's drivers do.

Without transactions (a standalone ``mongod``, accepted only with
``DMP_MONGO_ALLOW_STANDALONE=1``), the outermost unit is journaled too and undone the same way on
failure: best effort, and *not* atomic — another reader sees the writes before they are undone,
and a crash in between leaves them. That is what the operator accepts with the setting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from storage.interface import VersionConflict

#: (collection, ``_id``, the document before the write or None when there was none).
Undo = tuple[str, Any, dict[str, Any] | None]


@dataclass
class _State:
    session: ClientSession | None = None
    depth: int = 0
    frames: list[list[Undo]] = field(default_factory=list)


class UnitOfWork:
    """Per thread: the current session and the undo frames of the open units."""

    def __init__(self, client: MongoClient[Any], db: Database[Any], *, transactions: bool):
        self.client = client
        self.db = db
        self.transactions = transactions
        self._local = threading.local()

    def _state(self) -> _State:
        state: _State | None = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _State()
        return state

    @property
    def session(self) -> ClientSession | None:
        """The session every read and write of the current thread goes through (None outside)."""
        return self._state().session

    @property
    def active(self) -> bool:
        return self._state().depth > 0

    @contextmanager
    def unit(self) -> Iterator[None]:
        state = self._state()
        if state.depth:
            yield from self._nested(state)
            return
        session = self.client.start_session() if self.transactions else None
        if session is not None:
            session.start_transaction(
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
                read_preference=ReadPreference.PRIMARY,
            )
        state.session, state.depth, state.frames = session, 1, [[]]
        try:
            try:
                yield
            except BaseException:
                if session is not None:
                    session.abort_transaction()
                else:
                    self._undo(state.frames[0])
                raise
            else:
                if session is not None:
                    _commit(session)
        except PyMongoError as exc:
            if exc.has_error_label("TransientTransactionError"):
                raise VersionConflict("a concurrent write changed the same data: nothing was written, retry") from exc
            raise
        finally:
            state.session, state.depth, state.frames = None, 0, []
            if session is not None:
                session.end_session()

    def _nested(self, state: _State) -> Iterator[None]:
        state.depth += 1
        state.frames.append([])
        try:
            yield
        except BaseException:
            self._undo(state.frames.pop())
            raise
        else:
            done = state.frames.pop()
            if self._journaled(state, len(state.frames)):
                state.frames[-1].extend(done)
        finally:
            state.depth -= 1

    def _journaled(self, state: _State, depth: int) -> bool:
        """Whether writes at ``depth`` need an undo record: inside a savepoint, or always when
        there is no transaction to abort."""
        return depth > 1 or not self.transactions

    def remember(self, collection: str, key: Any, before: dict[str, Any] | None) -> None:
        """Record the document a write is about to replace (``before``; None: it creates one)."""
        state = self._state()
        if state.depth and self._journaled(state, state.depth):
            state.frames[-1].append((collection, key, before))

    def _undo(self, frame: list[Undo]) -> None:
        session = self.session
        for collection, key, before in reversed(frame):
            coll = self.db[collection]
            # Delete then insert, rather than an upsert: the write may have moved the document to
            # another patient key (another shard), where an upsert filtered on the old one misses.
            coll.delete_one({"_id": key}, session=session)
            if before is not None:
                coll.insert_one(before, session=session)


#: How many times a commit whose outcome is unknown (a network error, an election) is retried.
COMMIT_RETRIES = 3


def _commit(session: ClientSession) -> None:
    """Commit, retrying while the outcome is unknown: committing again is safe (MongoDB's own
    convenient transaction API does the same)."""
    for attempt in range(COMMIT_RETRIES + 1):
        try:
            session.commit_transaction()
            return
        except PyMongoError as exc:
            if attempt == COMMIT_RETRIES or not exc.has_error_label("UnknownTransactionCommitResult"):
                raise
