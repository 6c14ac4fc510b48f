"""Account administration by the DMP administration (``ADM``), over the API or the CLI.

An account is created with a temporary password, shown once to the administrator, who hands it
over out of band (a letter, the front desk); the person must replace it at their first login
(R21). Lost credentials and locked accounts are handled the same way: a reset sets a new
temporary password, may update the contact, clears the lockout, and ends the person's sessions
(refresh tokens, pending codes and password-change credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from authz.authserver.accounts import ROLES, Account, AccountBook, Contact, Ident, contact_from, parse_ins, subject_of
from authz.authserver.errors import AuthError, invalid_request
from authz.authserver.issuer import TokenIssuer
from authz.authserver.passwords import PasswordHasher, temporary_password
from authz.terms import ADMINISTRATION, PATIENT
from fhir_server.dmp.accounts.trail import AccountTrail

#: Who acts when the command line does (an operator on the server's machine, no token).
OPERATOR = ({"display": "operator (dmp-server account)"}, ADMINISTRATION)


@dataclass
class AccountAdmin:
    book: AccountBook
    hasher: PasswordHasher
    issuer: TokenIssuer
    clock: Callable[[], float]
    dmp_exists: Callable[[Ident], bool]
    trail: AccountTrail

    def create(self, body: dict[str, Any], by: tuple[dict[str, Any], str] = OPERATOR) -> dict[str, Any]:
        """A new account with a temporary password; a patient's needs their DMP to exist."""
        ins = parse_ins(body.get("ins"))
        role = body.get("role") or PATIENT
        if role not in ROLES:
            raise invalid_request(f"'role' is one of {', '.join(ROLES)}")
        contact = contact_from(body.get("email"), body.get("phone"), body.get("channel"))
        if role == PATIENT and not self.dmp_exists(ins):
            raise AuthError(
                422, "invalid_request", "there is no DMP for this INS: create it first (or issue a creation code)"
            )
        password = temporary_password()
        now = self.clock()
        account = Account(ins, role, self.hasher.hash(password), True, contact, created=int(now))
        if not self.book.add(account, now):
            raise AuthError(409, "invalid_request", "this person already has an account: reset it instead")
        self.trail.credentials(*by, account.ins, f"{account.role} account created, temporary password", now)
        return _answer(account, password)

    def reset(self, raw_ins: str, body: dict[str, Any], by: tuple[dict[str, Any], str] = OPERATOR) -> dict[str, Any]:
        """A new temporary password (and contact, if given); unlocks; ends every session."""
        ins = parse_ins(raw_ins)
        current = self.book.get(ins)
        if current is None:
            raise AuthError(404, "not_found", "there is no account for this INS")
        contact = contact_from(body.get("email"), body.get("phone"), body.get("channel"), current.contact)
        password = temporary_password()
        hashed = self.hasher.hash(password)
        with self.book.store.transaction():
            latest = self.book.get(ins) or current
            account = _reset(latest, hashed, contact)
            self.book.put(account)
        self.issuer.revoke_refresh_tokens(account.subject)
        self.trail.credentials(
            *by, account.ins, "account reset: new temporary password, sessions ended", self.clock()
        )
        return _answer(account, password)


def _reset(account: Account, hashed: str, contact: Contact) -> Account:
    return replace(
        account,
        password=hashed,
        temporary=True,
        contact=contact,
        failures=0,
        locked_until=0,
        generation=account.generation + 1,  # pending challenges and change credentials die
    )


def _answer(account: Account, password: str) -> dict[str, Any]:
    """What the administrator sees, once: the identifier to log in with and the temporary password."""
    return {
        "identifier": subject_of(account.ins),
        "role": account.role,
        "channel": account.contact.channel,
        "temporary_password": password,
    }
