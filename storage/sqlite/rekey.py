"""Re-keying the database: a new database key, and every page rewritten under it.

Rotating the master key (``rotate-master-key``) only re-wraps the database key, which is enough
when a master key is retired on schedule. When the database key itself may have leaked (a copy
of ``dmp.sqlite3.key`` together with the master keys that open it), an attacker holding an old
copy of the database file could still read it, and anyone holding that key can read every page
written later: the pages must be rewritten under a new key. SQLCipher cannot re-key a database
in WAL mode, so the database is copied under the new key (``sqlcipher_export``) with every
server stopped, the way a plaintext database is encrypted (:mod:`storage.sqlite.encrypt`).

Crash safety: the new key is written (wrapped, synced) as a *pending* key before any page is
written under it, and becomes the key only once the copy has replaced the database. A re-key
interrupted anywhere leaves the database under exactly one of the two keys, both on disk;
:func:`settle`, run whenever the store opens, keeps the one that opens it.
"""

from __future__ import annotations

from pathlib import Path

from storage.crypto import EnvelopeCipher
from storage.sqlite import dbkey
from storage.sqlite.connection import key_opens
from storage.sqlite.encrypt import copy_in_place
from storage.sqlite.schema import trail_file


def rekey(database: Path, cipher: EnvelopeCipher) -> None:
    """Rewrite ``database``, and the trail's file beside it, each under a new key of its own (each
    re-keyed as described above, so a crash leaves each under one of its two keys).
    :class:`~storage.crypto.MasterKeyError` (and the file untouched) while another process has it open."""
    for file in (database, Path(trail_file(str(database)))):
        if file.exists():
            _rekey(file, cipher)


def _rekey(database: Path, cipher: EnvelopeCipher) -> None:
    settle(database, cipher)
    old = dbkey.load(database, cipher)
    new = dbkey.stage(database, cipher)
    try:
        copy_in_place(database, old, new)
    except BaseException:
        dbkey.pending_path(database).unlink(missing_ok=True)
        raise
    dbkey.promote(database)


def settle(database: Path, cipher: EnvelopeCipher) -> None:
    """Finish or undo a re-key that was interrupted: keep whichever key opens the database."""
    if not dbkey.pending_path(database).exists():
        return
    if key_opens(database, dbkey.load_pending(database, cipher)):
        dbkey.promote(database)
    else:
        dbkey.pending_path(database).unlink()
