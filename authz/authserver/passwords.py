"""Passwords: the minimum policy, slow salted hashing (scrypt), temporary passwords.

A stored hash carries its own parameters (``scrypt$n$r$p$salt$key``), so the cost can be raised
in the configuration later: old hashes still verify with the cost they were made with, and are
re-hashed at the new cost the next time their owner logs in (:meth:`PasswordHasher.outdated`).

Timing: verifying costs one scrypt run whether the account exists or not
(:meth:`PasswordHasher.verify_nothing` burns the same work for an unknown identifier), and every
comparison of secrets is constant-time, so neither the answer nor its delay tells whether an
account exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import unicodedata
from dataclasses import dataclass, field

#: The scrypt cost (N) when the configuration says nothing: about 0.1 s and 32 MiB per hash.
DEFAULT_COST = 2**15
_R, _P, _KEY_BYTES, _SALT_BYTES = 8, 1, 32, 16
MIN_LENGTH = 12
MAX_LENGTH = 128  # bounds the work one request can ask of the KDF
MIN_DISTINCT = 5  # refuses "aaaaaaaaaaaa", "121212121212"
#: Unambiguous characters for temporary passwords (no 0/O, 1/l/I), read aloud or from a letter.
_TEMPORARY_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says which rule, for the user."""


def normalise(password: str) -> bytes:
    """NFKC, so that the same password typed on two keyboards (composed or decomposed accents)
    hashes the same (NIST SP 800-63B §5.1.1.2)."""
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def check_policy(password: str, ins_value: str) -> None:
    """The minimum policy: length, some variety, not the identifier. No composition rules (NIST
    SP 800-63B): length is what makes a password hard to guess."""
    length = len(unicodedata.normalize("NFKC", password))
    if length < MIN_LENGTH:
        raise WeakPassword(f"the password must have at least {MIN_LENGTH} characters")
    if length > MAX_LENGTH:
        raise WeakPassword(f"the password must have at most {MAX_LENGTH} characters")
    if len(set(password)) < MIN_DISTINCT:
        raise WeakPassword(f"the password must use at least {MIN_DISTINCT} different characters")
    if ins_value and ins_value in password:
        raise WeakPassword("the password must not contain the INS")


def temporary_password() -> str:
    """Four groups of four unambiguous characters (about 92 bits), e.g. ``k7Qm-x2Rt-9hWc-Pe4s``."""
    groups = ("".join(secrets.choice(_TEMPORARY_ALPHABET) for _ in range(4)) for _ in range(4))
    return "-".join(groups)


@dataclass(frozen=True)
class _Params:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse(stored: str) -> _Params | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    return _Params(n, r, p, salt, key) if valid_cost(n) and r > 0 and p > 0 else None


def valid_cost(n: int) -> bool:
    """scrypt's N is a power of two above 1."""
    return n > 1 and n & (n - 1) == 0


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    # OpenSSL refuses by default anything above 32 MiB, which N = 2**15 already reaches.
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=size, maxmem=256 * r * n + 1024 * 1024)


@dataclass
class PasswordHasher:
    """scrypt at a configurable cost ``n`` (``DMP_PASSWORD_KDF_COST``)."""

    cost: int = DEFAULT_COST
    _dummy: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not valid_cost(self.cost):
            raise ValueError(f"the password KDF cost must be a power of two above 1, not {self.cost}")

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(_SALT_BYTES)
        key = _scrypt(normalise(password), salt, self.cost, _R, _P, _KEY_BYTES)
        encoded = [base64.b64encode(part).decode("ascii") for part in (salt, key)]
        return f"scrypt${self.cost}${_R}${_P}${encoded[0]}${encoded[1]}"

    def verify(self, password: str, stored: str) -> bool:
        params = _parse(stored)
        if params is None:
            self.verify_nothing(password)
            return False
        key = _scrypt(normalise(password), params.salt, params.n, params.r, params.p, len(params.key))
        return hmac.compare_digest(key, params.key)

    def verify_nothing(self, password: str) -> None:
        """The work of a verification, for an identifier that has no account: the caller then
        answers after the same delay as for a wrong password."""
        with self._lock:
            if self._dummy is None:  # made once, lazily: most processes never need it
                self._dummy = self.hash(secrets.token_urlsafe(16))
            dummy = self._dummy
        self.verify(password, dummy)

    def outdated(self, stored: str) -> bool:
        """Made at a lower cost than configured now: re-hash it while the password is at hand."""
        params = _parse(stored)
        return params is None or params.n < self.cost
