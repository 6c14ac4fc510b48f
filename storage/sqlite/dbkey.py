"""The key that encrypts the SQLite database as a whole, kept beside it wrapped by the master key.

A dedicated random 256-bit key rather than one derived from the master key: rotating the master
key then only re-wraps this 32-byte key (as it re-wraps every content blob's data key), which is
instant and safe while servers run; re-keying the database itself would rewrite every page and
needs every server stopped (SQLCipher cannot re-key a database in WAL mode). The file
(``dmp.sqlite3.key``, mode 0600) is an envelope blob of :mod:`storage.crypto`: without the
master keys it is worth nothing, so it travels with the database (in a backup too) while the
master keys are kept apart.

The file also names the HMAC that authenticates the database's pages (SQLCipher writes it
nowhere): the 32 bytes of the key, then the HMAC's name. A key file of 32 bytes alone is of an
earlier version, whose database is authenticated by HMAC-SHA512; it stays so until re-keyed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from storage.crypto import DecryptionError, EnvelopeCipher, MasterKeyError
from storage.secretfile import fsync_dir, write_secret_file
from storage.sqlite.connection import SQLCIPHER_DEFAULT_HMAC, DatabaseKey

_KEY_BYTES = 32
#: What the wrapped key is bound to: a content blob moved into the key file does not open as a key.
KEY_FILE_AAD = b"sqlite-database-key"


def key_path(database: Path) -> Path:
    return database.with_name(database.name + ".key")


def create(database: Path, cipher: EnvelopeCipher) -> DatabaseKey:
    """A new database key, written wrapped; a concurrent first start's key wins if it was first."""
    write_secret_file(key_path(database), _sealed(cipher), replace=False)
    return load(database, cipher)


def _sealed(cipher: EnvelopeCipher) -> bytes:
    """A new key, with the HMAC of a new file, wrapped."""
    key = DatabaseKey(secrets.token_bytes(_KEY_BYTES))
    return cipher.seal(key.raw + key.hmac.encode(), KEY_FILE_AAD)


def pending_path(database: Path) -> Path:
    """Where a re-key keeps the new key until the database is under it (:mod:`storage.sqlite.rekey`)."""
    return database.with_name(database.name + ".key.pending")


def load(database: Path, cipher: EnvelopeCipher) -> DatabaseKey:
    """The database key; :class:`MasterKeyError` if its file is missing or the master keys do not open it."""
    return _unwrap(database, key_path(database), cipher)


def stage(database: Path, cipher: EnvelopeCipher) -> DatabaseKey:
    """A new key for ``database``, written wrapped as the pending key (replacing an older one)."""
    write_secret_file(pending_path(database), _sealed(cipher), replace=True)
    return load_pending(database, cipher)


def load_pending(database: Path, cipher: EnvelopeCipher) -> DatabaseKey:
    return _unwrap(database, pending_path(database), cipher)


def promote(database: Path) -> None:
    """The pending key becomes the database's key (the database is under it now)."""
    os.replace(pending_path(database), key_path(database))
    fsync_dir(database.parent)


def _unwrap(database: Path, path: Path, cipher: EnvelopeCipher) -> DatabaseKey:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MasterKeyError(f"{database} is encrypted but its key file {path} is missing") from None
    try:
        payload = cipher.open(blob, KEY_FILE_AAD)
    except DecryptionError as exc:
        raise MasterKeyError(f"{path} does not open with the master keys of {cipher.master_keys.path}: {exc}") from None
    hmac = payload[_KEY_BYTES:].decode("ascii", "replace") or SQLCIPHER_DEFAULT_HMAC  # none named: an earlier version's
    try:
        return DatabaseKey(payload[:_KEY_BYTES], hmac)
    except ValueError as exc:
        raise MasterKeyError(f"{path} does not hold a database key: {exc}") from None


def kid(database: Path, cipher: EnvelopeCipher) -> str | None:
    """The master key wrapping the database key (None for a database without one)."""
    path = key_path(database)
    return cipher.kid_of(path.read_bytes()) if path.exists() else None


def rewrap(database: Path, cipher: EnvelopeCipher) -> bool:
    """Re-wrap the database key under the active master key; False if it already was (or has none).

    The key itself, hence the database, is unchanged: servers running on it go on unaffected.
    """
    path = key_path(database)
    if not path.exists():
        return False
    blob = path.read_bytes()
    if cipher.kid_of(blob) == cipher.master_keys.active.kid:
        return False
    write_secret_file(path, cipher.rewrap(blob), replace=True)
    return True
