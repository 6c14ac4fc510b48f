"""Opening a store's database file directly, as an operator's tool would: with its database key,
unwrapped by the master keys of the data directory (the file is encrypted as a whole)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from storage.crypto import EnvelopeCipher, MasterKeys
from storage.secretfile import write_secret_file
from storage.sqlite import dbkey
from storage.sqlite.connection import PAGE_HMACS, Attached, DatabaseKey, SqliteSettings, connect, key_opens
from storage.sqlite.schema import TRAIL_SCHEMA, trail_file


def open_database(database: Path, data_dir: Path | None = None) -> sqlite3.Connection:
    """A connection to ``database``, keyed from the master keys of ``data_dir`` (default: its
    folder), with the trail's file attached as ``trail`` when there is one; a database of a store
    given no keys has no key file and opens without one."""
    trail = Path(trail_file(str(database)))
    if not dbkey.key_path(database).exists():
        attached = Attached(TRAIL_SCHEMA, str(trail), None, 1.0) if trail.exists() else None
        return connect(str(database), None, SqliteSettings(), attached)
    cipher = EnvelopeCipher(MasterKeys.load_or_create(data_dir or database.parent))
    attached = Attached(TRAIL_SCHEMA, str(trail), dbkey.load(trail, cipher), 1.0) if trail.exists() else None
    return connect(str(database), dbkey.load(database, cipher), SqliteSettings(), attached)


_PAGE = 4096  # SQLCipher 4 defaults: 4 KiB pages ending in a 16-byte IV and the page's HMAC
_IV = 16
#: The bytes of each HMAC a page ends with.
_HMAC_BYTES = {"HMAC_SHA256": 32, "HMAC_SHA512": 64}
_SALT = 16
_WAL_HEADER, _FRAME_HEADER = 32, 24


def decrypted_bytes(database: Path, data_dir: Path | None = None) -> bytes:
    """Every page of ``database`` and of its WAL decrypted, free pages included: what someone
    holding the keys reads off the disk. A check for leftovers of deleted data looks here, since
    the files themselves show nothing to anyone without the keys."""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(data_dir or database.parent))
    key = dbkey.load(database, cipher)
    raw = database.read_bytes()
    pages = [_decrypt_page(key, raw[i : i + _PAGE], i == 0) for i in range(0, len(raw), _PAGE)]
    wal = database.with_name(database.name + "-wal")
    log = wal.read_bytes() if wal.exists() else b""
    for at in range(_WAL_HEADER, len(log) - _FRAME_HEADER - _PAGE + 1, _FRAME_HEADER + _PAGE):
        number = int.from_bytes(log[at : at + 4], "big")
        pages.append(_decrypt_page(key, log[at + _FRAME_HEADER : at + _FRAME_HEADER + _PAGE], number == 1))
    return b"".join(pages)


def _decrypt_page(key: DatabaseKey, page: bytes, first: bool) -> bytes:
    reserve = _IV + _HMAC_BYTES[key.hmac]
    iv = page[_PAGE - reserve : _PAGE - reserve + _IV]
    decryptor = Cipher(algorithms.AES(key.raw), modes.CBC(iv)).decryptor()
    return decryptor.update(page[_SALT if first else 0 : _PAGE - reserve]) + decryptor.finalize()


def write_key_file(database: Path, cipher: EnvelopeCipher, payload: bytes) -> None:
    """``database``'s key file holding ``payload``, wrapped as :mod:`storage.sqlite.dbkey` wraps
    it: 32 bytes alone are an earlier version's key (pages authenticated by HMAC-SHA512)."""
    write_secret_file(dbkey.key_path(database), cipher.seal(payload, dbkey.KEY_FILE_AAD), replace=True)


def page_hmac(database: Path, cipher: EnvelopeCipher) -> str:
    """The HMAC that authenticates the pages of ``database``, found by opening it with each, and
    checked against what its key file names."""
    key = dbkey.load(database, cipher)
    opening = [hmac for hmac in PAGE_HMACS if key_opens(database, DatabaseKey(key.raw, hmac))]
    assert opening == [key.hmac], f"{database} opens with {opening}, its key file names {key.hmac}"
    return key.hmac
