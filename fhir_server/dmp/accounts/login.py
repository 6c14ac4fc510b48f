"""The patient login (R21): identifier + password, then a one-time code sent by e-mail or SMS.

Step 1 (:meth:`Login.start`) checks the password and sends a 6-digit code; the client gets an
opaque challenge id. Step 2 (:meth:`Login.verify`) checks the code and answers an OAuth token
response — or, when the password is a temporary one (or the user asked to change it), a
short-lived password-change credential and no token; :meth:`Login.change_password` then sets the
new password, which ends every refresh token of the person.

Whatever goes wrong in steps 1 and 2 — unknown identifier, wrong password, wrong, expired or
reused code, locked account — the answer is the same 401 after the same work (one KDF run in
step 1), so nobody learns whether an account exists or is locked. Failures are counted on the
account *after* the store transaction that records them has committed: an exception raised
inside would roll the count back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from authz.authserver import otp
from authz.authserver.accounts import CHANNELS, Account, AccountBook, Contact, Ident, ins_key, parse_ins, subject_of
from authz.authserver.errors import AuthError, invalid_request, login_refused, unavailable
from authz.authserver.issuer import Grant, TokenIssuer
from authz.authserver.passwords import MAX_LENGTH, PasswordHasher, WeakPassword, check_policy
from authz.devtoken import iua_claims
from authz.terms import LEGAL_REPRESENTATIVE
from fhir_server.dmp.accounts.delivery import CodeSender, DeliveryError, masked
from fhir_server.dmp.accounts.trail import AccountTrail
from storage.interface import Store

CHALLENGE_KIND = "login-challenge"
CHANGE_KIND = "password-change"
CODE_LIFETIME = 5 * 60
CHANGE_LIFETIME = 10 * 60
#: Guesses one challenge takes; the account's own count (3, R21) usually locks it first.
MAX_CODE_ATTEMPTS = 3
#: SMART scopes of a patient's or representative's token: a coarse gate (every interaction on
#: every type); the DMP policy decides at each request what the person really reaches (R7, R8).
PERSON_SCOPE = "patient/*.cruds"
#: Longest password accepted in a login request (policy: MAX_LENGTH; older ones may be longer).
_MAX_PRESENTED = 4 * MAX_LENGTH
_CODE = re.compile(r"[0-9]{6}")


def text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A string member of a request body; 400 when it is missing (and required) or not a string."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise invalid_request(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise invalid_request(f"'{name}' must be a string")
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise invalid_request(f"'{name}' must be true or false")
    return value


@dataclass(frozen=True)
class Challenge:
    """A pending step 2: whose, which code (salted digest), for which patient, how many guesses."""

    ins: Ident
    generation: int
    salt: str
    code: str
    acting_for: Ident
    change_password: bool
    attempts: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({**self.__dict__, "ins": list(self.ins), "acting_for": list(self.acting_for)})

    @classmethod
    def from_json(cls, raw: bytes) -> Challenge:
        data = orjson.loads(raw)
        return cls(**{**data, "ins": tuple(data["ins"]), "acting_for": tuple(data["acting_for"])})


@dataclass
class Login:
    book: AccountBook
    hasher: PasswordHasher
    issuer: TokenIssuer
    sender: CodeSender
    clock: Callable[[], float]
    trail: AccountTrail

    @property
    def store(self) -> Store:
        return self.book.store

    # -- step 1 ----------------------------------------------------------------------------------

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Identifier + password → a code sent, and the challenge id to present it with."""
        ins = parse_ins(body.get("identifier"), "identifier")
        password = text(body, "password") or ""
        if len(password) > _MAX_PRESENTED:
            raise invalid_request(f"'password' is longer than {_MAX_PRESENTED} characters")
        account = self.book.get(ins)
        if account is None:
            self.hasher.verify_nothing(password)
            raise login_refused()
        right = self.hasher.verify(password, account.password)
        now = self.clock()
        account = self.book.get(ins) or account  # as it is after the slow part
        if account.locked(now):
            self.trail.login(account, account.ins, False, "login refused: the account is locked (R21)", now)
            raise login_refused()  # right or wrong, and not counted: the lock runs its course
        if not right:
            self.book.count_failure(ins, now)
            self.trail.login(account, account.ins, False, "login refused: wrong password", now)
            raise login_refused()
        acting_for = _acting_for(account, body.get("patient"))
        contact = _channel(account.contact, body.get("channel"))
        change = flag(body, "change_password")
        self._rehash_if_outdated(account, password)
        return self._send_code(account, contact, acting_for, change, now)

    def _send_code(
        self, account: Account, contact: Contact, acting_for: Ident, change: bool, now: float
    ) -> dict[str, Any]:
        code, challenge_id, salt = otp.login_code(), otp.ticket(), otp.salt()
        challenge = Challenge(account.ins, account.generation, salt, otp.salted_digest(salt, code), acting_for, change)
        key = otp.digest(challenge_id)
        self.store.put_record(CHALLENGE_KIND, key, challenge.to_json(), expires=int(now) + CODE_LIFETIME)
        try:
            self.sender.send(contact, code, CODE_LIFETIME)
        except DeliveryError:
            self.store.delete_record(CHALLENGE_KIND, key)
            raise unavailable(f"the login code could not be sent by {contact.channel}; try again later") from None
        return {
            "challenge": challenge_id,
            "channel": contact.channel,
            "sent_to": masked(contact),
            "expires_in": CODE_LIFETIME,
        }

    def _rehash_if_outdated(self, account: Account, password: str) -> None:
        """Raise an old hash to the configured cost while the password is at hand."""
        if not self.hasher.outdated(account.password):
            return
        stronger = self.hasher.hash(password)
        with self.store.transaction():
            current = self.book.get(account.ins)
            if current is not None and current.password == account.password:
                self.book.put(replace(current, password=stronger))

    # -- step 2 ----------------------------------------------------------------------------------

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        """Challenge + code → the token response (or a password-change credential)."""
        account, challenge = self.passed(body)
        if account.temporary or challenge.change_password:
            return self.change_credential(account, self.clock())
        grant = Grant(
            sub=account.subject,
            scope=PERSON_SCOPE,
            iua=iua_claims(role=account.role, person_id=subject_of(challenge.acting_for)),
        )
        return self.issuer.issue(grant, refresh=True)

    def passed(self, body: dict[str, Any]) -> tuple[Account, Challenge]:
        """Challenge + code checked, the login in the trail: whose login it is and for which
        record (the app authorisation pages issue their own grant from it); 401 otherwise."""
        challenge_id = text(body, "challenge") or ""
        code = text(body, "code") or ""
        now = self.clock()
        key = otp.digest(challenge_id)
        with self.store.transaction():
            passed = self._check_code(key, code.strip(), now)
        if isinstance(passed, Account):
            self.trail.login(passed, passed.ins, False, "login refused: wrong one-time code", now)
        if not isinstance(passed, tuple):
            raise login_refused()
        account, challenge = passed
        self.trail.login(account, challenge.acting_for, True, f"login by {account.contact.channel} code", now)
        return account, challenge

    def _check_code(self, key: str, code: str, now: float) -> tuple[Account, Challenge] | Account | None:
        """Inside a transaction: the account and challenge when the code is right; the account
        after counting the failure when it is wrong; None when the challenge is no longer valid.
        Never raises, so that the count commits."""
        held = self.store.get_record(CHALLENGE_KIND, key)
        if held is None:
            return None  # unknown, used, or purged
        challenge = Challenge.from_json(held[0])
        account = self.book.get(challenge.ins)
        expired = held[1] is not None and held[1] <= now
        if expired or account is None or account.generation != challenge.generation or account.locked(now):
            self.store.delete_record(CHALLENGE_KIND, key)
            return None
        if _CODE.fullmatch(code) and otp.same(otp.salted_digest(challenge.salt, code), challenge.code):
            self.store.delete_record(CHALLENGE_KIND, key)
            if account.failures:
                self.book.put(replace(account, failures=0))
            return account, challenge
        failed = account.failed(now)
        self.book.put(failed)
        tried = replace(challenge, attempts=challenge.attempts + 1)
        if tried.attempts >= MAX_CODE_ATTEMPTS or failed.locked(now):
            self.store.delete_record(CHALLENGE_KIND, key)
        else:
            self.store.put_record(CHALLENGE_KIND, key, tried.to_json(), expires=held[1])
        return failed

    def change_credential(self, account: Account, now: float) -> dict[str, Any]:
        credential = otp.ticket()
        value = orjson.dumps({"ins": list(account.ins), "generation": account.generation})
        self.store.put_record(CHANGE_KIND, otp.digest(credential), value, expires=int(now) + CHANGE_LIFETIME)
        return {
            "password_change_required": account.temporary,
            "password_change_token": credential,
            "expires_in": CHANGE_LIFETIME,
        }

    # -- password change -------------------------------------------------------------------------

    def change_password(self, body: dict[str, Any]) -> dict[str, Any]:
        """Credential + new password → the new password set, refresh tokens revoked."""
        credential = text(body, "password_change_token") or ""
        new_password = text(body, "new_password") or ""
        key = otp.digest(credential)
        account = self._changing(key)
        if account is None:
            raise _change_refused()
        try:
            check_policy(new_password, account.ins[1])
        except WeakPassword as exc:
            raise invalid_request(str(exc)) from None
        if self.hasher.verify(new_password, account.password):
            raise invalid_request("the new password must differ from the current one")
        new_hash = self.hasher.hash(new_password)
        with self.store.transaction():
            current = self._changing(key)
            done = current is not None and current.generation == account.generation
            if done:
                self.store.delete_record(CHANGE_KIND, key)
                changed = replace(
                    account, password=new_hash, temporary=False, failures=0, generation=account.generation + 1
                )
                self.book.put(changed)
        if not done:
            raise _change_refused()
        self.issuer.revoke_refresh_tokens(account.subject)
        return {"password_changed": True}

    def _changing(self, key: str) -> Account | None:
        """The account a live password-change credential is for (None: unknown, used, expired,
        superseded by another change or a reset)."""
        held = self.store.get_record(CHANGE_KIND, key)
        if held is None or (held[1] is not None and held[1] <= self.clock()):
            return None
        data = orjson.loads(held[0])
        account = self.book.get((data["ins"][0], data["ins"][1]))
        if account is None or account.generation != data["generation"]:
            return None
        return account


def _change_refused() -> AuthError:
    return AuthError(401, "invalid_grant", "the password-change credential is unknown, expired or already used")


def _acting_for(account: Account, patient: Any) -> Ident:
    """Whose record the token will be about: a representative names the patient they act for;
    whether they represent them now is the DMP policy's decision at each request (R8)."""
    if account.role == LEGAL_REPRESENTATIVE:
        if patient is None or patient == "":
            raise invalid_request("a legal representative names the patient they act for: 'patient' (their INS)")
        return parse_ins(patient, "patient")
    if patient is not None and patient != "" and ins_key(parse_ins(patient, "patient")) != account.key:
        raise invalid_request("a patient's login is about their own record: leave 'patient' out")
    return account.ins


def _channel(contact: Contact, asked: Any) -> Contact:
    """The account's preferred channel, or the one asked for if the account has that contact."""
    if asked is None or asked == "" or asked == contact.channel:
        return contact
    if asked not in CHANNELS:
        raise invalid_request("'channel' is 'email' or 'sms'")
    if (contact.email if asked == "email" else contact.phone) is None:
        raise invalid_request(f"this account has no {'e-mail address' if asked == 'email' else 'phone number'}")
    return replace(contact, channel=asked)
