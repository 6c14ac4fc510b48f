"""Where to write to a person known by their INS: the e-mail address the DMP's own data gives.

Used for what the server sends on its own (majority notices, R8; emergency-access alerts, R5).
The address of the person's login account comes first: the administration or the person gave it,
and login codes reach it; then what the DMP's data says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from authz.authserver.accounts import AccountBook
from authz.state import Ident
from storage.interface import Store
from storage.query import ANY_SYSTEM, OPEN_SCOPE, Not, Query, SortKey, Token, all_of

#: More records than this for one INS is not a person: look no further.
_MAX = 20


def contact_email(store: Store, ins: Ident) -> str | None:
    """The e-mail address of the person whose INS is ``ins``, or None when none is known.

    Their login account first, then their own DMP (``Patient.telecom``: the record they keep themselves), then the
    RelatedPerson entries that name them in other people's records (a legal representative's, in
    the record of the minor they represent), the most recently written first.
    """
    account = AccountBook(store).get(ins)
    if account is not None and account.contact.email:
        return account.contact.email
    who = Token("identifier", ins[0], ins[1])
    for rtype, where in (
        ("Patient", who),
        ("RelatedPerson", all_of(who, Not(Token("active", ANY_SYSTEM, "false")))),
    ):
        query = Query(rtype, where, sort=(SortKey("_lastUpdated", descending=True),), count=_MAX, total=False)
        for stored in store.search(query, OPEN_SCOPE).matches:
            address = email_of(stored.json().get("telecom") or [])
            if address:
                return address
    return None


def email_of(telecom: Iterable[Any]) -> str | None:
    """The preferred current e-mail address of a ``telecom`` list (lowest ``rank`` first; an
    address marked ``old`` is not used)."""
    addresses = [
        c
        for c in telecom
        if isinstance(c, dict) and c.get("system") == "email" and c.get("use") != "old" and _is_address(c.get("value"))
    ]
    if not addresses:
        return None
    best = min(addresses, key=_rank)
    return str(best["value"]).strip()


def _rank(contact: dict[str, Any]) -> int:
    rank = contact.get("rank")
    return rank if isinstance(rank, int) else 1 << 30


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and "@" in value.strip() and " " not in value.strip()
