"""The key that encrypts the SQLite database as a whole, kept beside it wrapped by the master key.

A dedicated random 256-bit key rather than one derived from the master key: rotating the master
key then only re-wraps this 32-byte key (as it re-wraps every content blob's data key), which is
instant and safe while servers run; re-keying the database itself would rewrite every page and
needs every server stopped (SQLCipher cannot re-key a database in WAL mode). The file
(``dmp.sqlite3.key``, mode 0600) is an envelope blob of :mod:`storage.crypto`: without the
master keys it is worth nothing, so it travels with the database (in a backup too) while the
master keys are kept apart.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from storage.crypto import DecryptionError, EnvelopeCipher, MasterKeyError
from storage.secretfile import fsync_dir, write_secret_file

_KEY_BYTES = 32
#: What the wrapped key is bound to: a content blob moved into the key file does not open as a key.
_AAD = b"sqlite-database-key"


def key_path(database: Path) -> Path:
    return database.with_name(database.name + ".key")


def create(database: Path, cipher: EnvelopeCipher) -> bytes:
    """A new database key, written wrapped; a concurrent first start's key wins if it was first."""
    key = secrets.token_bytes(_KEY_BYTES)
    write_secret_file(key_path(database), cipher.seal(key, _AAD), replace=False)
    return load(database, cipher)


def pending_path(database: Path) -> Path:
    """Where a re-key keeps the new key until the database is under it (:mod:`storage.sqlite.rekey`)."""
    return database.with_name(database.name + ".key.pending")


def load(database: Path, cipher: EnvelopeCipher) -> bytes:
    """The database key; :class:`MasterKeyError` if its file is missing or the master keys do not open it."""
    return _unwrap(database, key_path(database), cipher)


def stage(database: Path, cipher: EnvelopeCipher) -> bytes:
    """A new key for ``database``, written wrapped as the pending key (replacing an older one)."""
    write_secret_file(pending_path(database), cipher.seal(secrets.token_bytes(_KEY_BYTES), _AAD), replace=True)
    return load_pending(database, cipher)


def load_pending(database: Path, cipher: EnvelopeCipher) -> bytes:
    return _unwrap(database, pending_path(database), cipher)


def promote(database: Path) -> None:
    """The pending key becomes the database's key (the database is under it now)."""
    os.replace(pending_path(database), key_path(database))
    fsync_dir(database.parent)


def _unwrap(database: Path, path: Path, cipher: EnvelopeCipher) -> bytes:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise MasterKeyError(f"{database} is encrypted but its key file {path} is missing") from None
    try:
        key = cipher.open(blob, _AAD)
    except DecryptionError as exc:
        raise MasterKeyError(f"{path} does not open with the master keys of {cipher.master_keys.path}: {exc}") from None
    if len(key) != _KEY_BYTES:
        raise MasterKeyError(f"{path} does not hold a 256-bit key")
    return key


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
