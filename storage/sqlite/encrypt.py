"""Encrypting, once, a plaintext database written by a version before whole-database encryption
(and copying an encrypted one under a new key, :mod:`storage.sqlite.rekey`).

Run on the first start of this version (the store calls it under the writer lock, so gunicorn
workers starting together migrate once): the write-ahead log is folded into the file, every table
and index is copied into a new encrypted file (SQLCipher's ``sqlcipher_export``), which then
replaces the old one by a rename. The old file's bytes are overwritten with zeros before it is
let go: a best effort, since a copy-on-write file system or an SSD may keep the old blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.crypto import MasterKeyError
from storage.secretfile import fsync_dir
from storage.sqlite.connection import PLAINTEXT_HEADER, SIDE_FILES, Attached, DatabaseKey, attach, connect_untuned

_CHUNK = 1 << 20


def is_plaintext(database: Path) -> bool:
    """Whether ``database`` is an existing, unencrypted SQLite database with content."""
    try:
        with open(database, "rb") as handle:
            return handle.read(len(PLAINTEXT_HEADER)) == PLAINTEXT_HEADER
    except FileNotFoundError:
        return False


def encrypt_in_place(database: Path, key: DatabaseKey) -> None:
    """Replace the plaintext ``database`` with an encrypted copy under ``key``.

    Refused while another process has it open (its checkpoint cannot complete): a server of the
    earlier version must be stopped first, or it would go on writing to the replaced file.
    """
    copy_in_place(database, None, key)


def copy_in_place(database: Path, key: DatabaseKey | None, new_key: DatabaseKey) -> None:
    """Replace ``database`` (opened with ``key``, or plaintext) by a copy of it under ``new_key``,
    then overwrite the old file with zeros. :class:`MasterKeyError` while another process has it
    open: its next write would go to the replaced file."""
    staging = database.with_name(database.name + ".encrypting")
    staging.unlink(missing_ok=True)
    os.close(os.open(staging, os.O_RDWR | os.O_CREAT, 0o600))
    source = connect_untuned(database, key)
    try:
        busy, _log, _done = source.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise MasterKeyError(f"{database} is in use by another process: stop it first")
        attach(source, Attached("encrypted", str(staging), new_key, 1.0))
        source.execute("SELECT sqlcipher_export('encrypted')")
        source.execute("DETACH DATABASE encrypted")
    finally:
        source.close()
    with open(staging, "rb+") as handle:
        os.fsync(handle.fileno())
    old = os.open(database, os.O_RDWR)
    try:
        os.replace(staging, database)
        fsync_dir(database.parent)
        _zero(old)
    finally:
        os.close(old)
    for suffix in SIDE_FILES:  # the old file's WAL (empty now) and shared memory
        database.with_name(database.name + suffix).unlink(missing_ok=True)


def _zero(fd: int) -> None:
    """Overwrite the whole (now unlinked) file of ``fd`` with zeros and sync it."""
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = bytes(_CHUNK)
    while size > 0:
        size -= os.write(fd, zeros[: min(size, _CHUNK)])
    os.fsync(fd)
