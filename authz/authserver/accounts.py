"""Patient accounts: one per person, keyed by INS, kept as sealed private records of the store.

An account is the patient's (``PAT``) or a legal representative's (``LEGREP``) own login to the
server: a password hash (never the password), whether that password is a temporary one, how to
reach the person for one-time codes, and the R21 lockout state. It says nothing about whose
record a representative may open: the DMP policy decides that at each request from the
``legal-representative`` Consents, so an account cannot outlive a representation.

Lockout (R21) is per account and persisted with it: every wrong password or wrong code counts,
the third locks the account for 15 minutes for everybody, whatever they present; a complete login
(password and code) clears the count.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from authz.authserver.errors import AuthError, invalid_request
from authz.authserver.sms import normalise_phone
from authz.terms import INS_SYSTEMS, LEGAL_REPRESENTATIVE, PATIENT
from fhirmodel.ins import ins_problem
from storage.interface import Store

ACCOUNT_KIND = "account"
MAX_FAILURES = 3
LOCK_SECONDS = 15 * 60
ROLES = (PATIENT, LEGAL_REPRESENTATIVE)
CHANNELS = ("email", "sms")
#: INS-NIR: what a bare identifier means.
DEFAULT_INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
_INS_VALUE = re.compile(r"[A-Za-z0-9]{1,32}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")

Ident = tuple[str, str]


def parse_ins(raw: Any, what: str = "ins") -> Ident:
    """An INS as the account endpoints take it: a bare value (INS-NIR) or ``system|value``."""
    if not isinstance(raw, str) or not raw.strip():
        raise invalid_request(f"'{what}' is required: an INS, bare (INS-NIR) or as system|value")
    system, sep, value = raw.strip().rpartition("|")
    system = system if sep else DEFAULT_INS_SYSTEM
    if system not in INS_SYSTEMS or not _INS_VALUE.fullmatch(value):
        raise invalid_request(f"'{what}' is not an INS (a bare INS-NIR value, or system|value of an INS system)")
    problem = ins_problem(value)
    if problem:  # CONTRACT §3: a malformed INS or a wrong key is refused, naming the member
        raise AuthError(422, "invalid_request", f"'{what}': {problem}", extra={"expression": [what]})
    return system, value


def ins_key(ins: Ident) -> str:
    return f"{ins[0]}|{ins[1]}"


def subject_of(ins: Ident) -> str:
    """The INS as tokens name a person (CONTRACT §2 ``sub``): bare for the INS-NIR, like every
    other issuer's tokens, ``system|value`` for the other INS systems."""
    return ins[1] if ins[0] == DEFAULT_INS_SYSTEM else ins_key(ins)


@dataclass(frozen=True)
class Contact:
    email: str | None
    phone: str | None  # E.164
    channel: str  # where login codes go: "email" or "sms"

    def address(self) -> str:
        address = self.email if self.channel == "email" else self.phone
        assert address is not None  # guaranteed by contact_from
        return address


def contact_from(email: Any, phone: Any, channel: Any, previous: Contact | None = None) -> Contact:
    """Validate a contact given by a request; what is not given is kept from ``previous``."""
    if email is not None and (not isinstance(email, str) or len(email) > 254 or not _EMAIL.fullmatch(email)):
        raise invalid_request("'email' is not an e-mail address")
    number = None
    if phone is not None:
        number = normalise_phone(phone) if isinstance(phone, str) else None
        if number is None:
            raise invalid_request("'phone' is not a phone number (E.164, e.g. +33612345678, or 0612345678)")
    email = email if email is not None else (previous.email if previous else None)
    number = number if number is not None else (previous.phone if previous else None)
    if not email and not number:
        raise invalid_request("an account needs an 'email' or a 'phone' to send login codes to")
    if channel is None:
        kept = previous.channel if previous else None
        channel = kept if kept and (email if kept == "email" else number) else ("email" if email else "sms")
    if channel not in CHANNELS:
        raise invalid_request("'channel' is 'email' or 'sms'")
    if (channel == "email" and not email) or (channel == "sms" and not number):
        missing = "an e-mail address" if channel == "email" else "a phone number"
        raise invalid_request(f"login codes by {channel} need {missing}")
    return Contact(email, number, channel)


@dataclass(frozen=True)
class Account:
    ins: Ident
    role: str  # PAT or LEGREP
    password: str  # a PasswordHasher hash
    temporary: bool  # set by the administration: must be changed at the next login
    contact: Contact
    failures: int = 0  # wrong passwords and codes since the last complete login
    locked_until: int = 0  # epoch seconds
    generation: int = 0  # bumped by every password change: older challenges and tickets die
    created: int = 0

    @property
    def key(self) -> str:
        return ins_key(self.ins)

    @property
    def subject(self) -> str:
        return subject_of(self.ins)

    def locked(self, now: float) -> bool:
        return self.locked_until > now

    def failed(self, now: float) -> Account:
        """One more failure; the third locks the account (R21) and starts a fresh count."""
        if self.failures + 1 >= MAX_FAILURES:
            return replace(self, failures=0, locked_until=int(now) + LOCK_SECONDS)
        return replace(self, failures=self.failures + 1)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["ins"] = list(self.ins)
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> Account:
        data = orjson.loads(raw)
        data["ins"] = tuple(data["ins"])
        data["contact"] = Contact(**data["contact"])
        return cls(**data)


class AccountBook:
    """The accounts in the store. Read-modify-write happens in a store transaction, so that two
    concurrent failures both count."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, ins: Ident) -> Account | None:
        held = self.store.get_record(ACCOUNT_KIND, ins_key(ins))
        return Account.from_json(held[0]) if held else None

    def add(self, account: Account, now: float) -> bool:
        """Keep a new account; False when the person already has one."""
        return self.store.add_record(ACCOUNT_KIND, account.key, account.to_json(), now=int(now))

    def put(self, account: Account) -> None:
        self.store.put_record(ACCOUNT_KIND, account.key, account.to_json())

    def count_failure(self, ins: Ident, now: float) -> None:
        with self.store.transaction():
            account = self.get(ins)
            if account is not None and not account.locked(now):
                self.put(account.failed(now))

    def clear_failures(self, ins: Ident) -> None:
        with self.store.transaction():
            account = self.get(ins)
            if account is not None and account.failures:
                self.put(replace(account, failures=0))
