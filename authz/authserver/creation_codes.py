"""DMP creation codes (R20, CONTRACT §3): how a patient creates their own DMP.

A professional or the administration obtains a code for an INS and hands it to the patient; the
patient presents INS + code once to create their DMP. One code per INS at a time (a new one
replaces the previous), valid 30 days, kept as a salted digest, refused after five wrong guesses.

The proof that a code was consumed is a *marker* record written in the transaction that creates
the DMP and removed before it commits: the DMP policy lets a patient create their own DMP only
while that marker exists (:func:`creation_code_consumed`). No transaction ever commits it, so no
other request can see it, and the right it gives dies with the request that consumed the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from authz.authserver import otp
from authz.authserver.accounts import Ident, ins_key, subject_of
from storage.interface import Store

CODE_KIND = "dmp-creation-code"
CONSUMED_KIND = "dmp-creation-consumed"
CODE_LIFETIME = 30 * 24 * 3600
MAX_CODE_FAILURES = 5

#: A code as held: its record's value and expiry, put back as they were if the creation fails.
Held = tuple[bytes, int | None]


@dataclass
class CreationCodes:
    store: Store
    clock: Callable[[], float]

    def issue(self, ins: Ident, issued_by: str) -> dict[str, Any]:
        code, salt = otp.creation_code(), otp.salt()
        expires = int(self.clock()) + CODE_LIFETIME
        value = {
            "salt": salt,
            "code": otp.salted_digest(salt, otp.normalise_creation_code(code)),
            "issued_by": issued_by,
            "failures": 0,
        }
        self.store.put_record(CODE_KIND, ins_key(ins), orjson.dumps(value), expires=expires)
        return {
            "ins": subject_of(ins),
            "creation_code": code,
            "expires_in": CODE_LIFETIME,
            "expires_at": datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z"),
        }

    def consume(self, ins: Ident, code: str) -> Held | None:
        """Inside the caller's transaction: the code's record, now deleted, when ``code`` is the
        live code of ``ins``; None otherwise (a wrong guess is counted; never raises, so that the
        count commits)."""
        key = ins_key(ins)
        held = self.store.get_record(CODE_KIND, key)
        if held is None:
            return None
        if held[1] is not None and held[1] <= self.clock():
            self.store.delete_record(CODE_KIND, key)
            return None
        value = orjson.loads(held[0])
        if otp.same(otp.salted_digest(value["salt"], otp.normalise_creation_code(code)), value["code"]):
            self.store.delete_record(CODE_KIND, key)
            return held
        value["failures"] += 1
        if value["failures"] >= MAX_CODE_FAILURES:
            self.store.delete_record(CODE_KIND, key)
        else:
            self.store.put_record(CODE_KIND, key, orjson.dumps(value), expires=held[1])
        return None

    def restore(self, ins: Ident, held: Held) -> None:
        """Put a consumed code back (the creation it was for failed)."""
        self.store.put_record(CODE_KIND, ins_key(ins), held[0], expires=held[1])


def mark_consumed(store: Store, ins: Ident, now: float) -> None:
    # The expiry is a safety net only: the marker is removed before its transaction commits.
    store.put_record(CONSUMED_KIND, ins_key(ins), b"{}", expires=int(now) + 60)


def unmark_consumed(store: Store, ins: Ident) -> None:
    store.delete_record(CONSUMED_KIND, ins_key(ins))


def creation_code_consumed(store: Store, ins: Ident) -> bool:
    """Whether the current transaction consumed a creation code for ``ins`` (see the module)."""
    return store.get_record(CONSUMED_KIND, ins_key(ins)) is not None
