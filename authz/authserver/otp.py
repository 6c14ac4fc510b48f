"""One-time secrets: login codes, opaque tickets (challenge ids, password-change credentials),
DMP creation codes — made with :mod:`secrets`, kept only as digests, compared in constant time.

A ticket is long and random, so its SHA-256 is a safe storage key: the database never holds a
usable ticket. A 6-digit code has too little entropy for a digest to hide it from someone holding
the database, so it is salted per challenge and protected otherwise: records are sealed at rest,
live five minutes, are used once, and a challenge takes a bounded number of guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CODE_DIGITS = 6
#: Creation codes are typed by the patient from a letter or a screen: unambiguous upper case,
#: 12 characters in groups of four (about 60 bits).
_CREATION_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def login_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def creation_code() -> str:
    groups = ("".join(secrets.choice(_CREATION_ALPHABET) for _ in range(4)) for _ in range(3))
    return "-".join(groups)


def normalise_creation_code(code: str) -> str:
    """What the patient types may differ in case, spaces and dashes from what was printed."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def ticket() -> str:
    """An opaque bearer secret handed to a client (challenge id, password-change credential)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The storage key of a high-entropy secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def salt() -> str:
    return secrets.token_hex(16)


def salted_digest(salt_hex: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two digests (or any two ASCII strings)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
