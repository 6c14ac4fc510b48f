"""What the authorisation server leaves in the trail (R17, R21): logins, and changes of the
credentials that open a record, each in the trail of the record concerned so that its patient
sees them. An unknown identifier at login leaves nothing: it names no account, and anyone could
fill a stranger's trail with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz.audit import account_event
from authz.authserver.accounts import Account, Ident
from fhirmodel.dates import us_to_instant
from storage.interface import Store
from storage.query import OPEN_SCOPE, Query, Token


@dataclass(frozen=True)
class AccountTrail:
    store: Store
    server: str

    def login(self, account: Account, about: Ident, succeeded: bool, description: str, now: float) -> None:
        """A login to ``account`` for the record of ``about``, accepted or refused."""
        who = {"identifier": {"system": account.ins[0], "value": account.ins[1]}}
        self._record("login", who, account.role, about, succeeded, description, now)

    def credentials(self, who: dict[str, Any], role: str, person: Ident, description: str, now: float) -> None:
        """Credentials of ``person`` made or changed by ``who`` (a Reference) acting as ``role`` — an
        account created or reset, a DMP creation code issued: in the trail of the record of
        ``person`` (once it exists, for a creation code)."""
        self._record("credentials", who, role, person, True, description, now)

    def _record(
        self, kind: str, who: dict[str, Any], role: str, about: Ident, succeeded: bool, description: str, now: float
    ) -> None:
        dmp = Query("Patient", Token("identifier", about[0], about[1]), count=1, total=False)
        found = self.store.search(dmp, OPEN_SCOPE).matches
        event = account_event(
            kind,
            who=who,
            role=role,
            about=about,
            about_id=found[0].id if found else None,
            succeeded=succeeded,
            description=description,
            recorded=us_to_instant(int(now * 1_000_000)),
            server=self.server,
        )
        with self.store.transaction():
            self.store.create(event)
