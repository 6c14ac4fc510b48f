"""Opening a store's database file directly, as an operator's tool would: with its database key,
unwrapped by the master keys of the data directory (the file is encrypted as a whole)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from storage.crypto import EnvelopeCipher, MasterKeys
from storage.sqlite import dbkey
from storage.sqlite.connection import Attached, SqliteSettings, connect
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


_PAGE = 4096  # SQLCipher 4 defaults: 4 KiB pages ending in a 16-byte IV and a 64-byte HMAC
_RESERVE = 80
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


def _decrypt_page(key: bytes, page: bytes, first: bool) -> bytes:
    iv = page[_PAGE - _RESERVE : _PAGE - _RESERVE + 16]
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(page[_SALT if first else 0 : _PAGE - _RESERVE]) + decryptor.finalize()
