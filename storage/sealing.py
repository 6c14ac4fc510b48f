"""What every backend binds a sealed blob to, and how it checks its keys and opens its blobs.

The associated data (:mod:`storage.crypto`) is the same for every backend on purpose: a blob
copied from SQLite to MongoDB (``dmp-server migrate``) opens there unchanged, without the keys
ever being used to re-seal it.
"""

from __future__ import annotations

import hashlib

from storage.crypto import DecryptionError, EnvelopeCipher, MasterKeyError, is_sealed

#: The types whose content is deflated before it is sealed (:data:`storage.crypto.DEFLATED_FORMAT`).
#: The trail is: an event is written once, per request, and seldom read again, and its 2.2 KB
#: blob filled a database page alone (two do not fit one), 4.1 KB of the 6.4 KB an event took
#: on disk. The documents are not: every search would inflate each of its ~20 results.
DEFLATED_TYPES = frozenset({"AuditEvent"})


def resource_aad(resource_type: str, resource_id: str, version: int) -> str:
    """What a resource blob is bound to: another row's, or another version's, blob does not open."""
    return f"{resource_type}/{resource_id}/{version}"


def outbox_aad(message_id: int, topic: str) -> str:
    """A queued payload is bound to its message id and topic: it cannot be replayed elsewhere."""
    return f"outbox/{message_id}/{topic}"


def record_aad(kind: str, key: str) -> str:
    """A private record is bound to its kind and key: one account's blob does not open as another's."""
    return f"record/{kind}/{key}"


def session_aad(key: str) -> str:
    """A paging state is bound to its key: another session's state does not open under this one."""
    return f"search_session/{key}"


def sealed_mark(blob: bytes) -> bytes:
    """What tells one stored blob from another without opening it: a digest of its bytes (each
    seal draws a new nonce, so a value written again is another blob)."""
    return hashlib.blake2b(blob, digest_size=16).digest()


def check_keys(newest: bytes | None, cipher: EnvelopeCipher | None, where: str) -> None:
    """Refuse to start when the data and the keys do not belong together.

    Checked on the newest version only (``newest``), so it is cheap. Without this a server given a
    lost or another directory's key file would start, accept writes, and fail every older read.
    """
    if newest is None:
        return
    if cipher is None:
        if is_sealed(newest):
            raise MasterKeyError(f"{where} holds encrypted content: open it with its master keys")
        return
    if not is_sealed(newest):
        raise MasterKeyError(f"{where} holds unencrypted content, written before encryption at rest")
    kid = cipher.kid_of(newest)
    if kid not in cipher.master_keys.kids:
        raise MasterKeyError(
            f"{where} was written with master key {kid!r}, which {cipher.master_keys.path}"
            " does not hold (another data directory's keys, or a lost key file?)"
        )


def open_blob(cipher: EnvelopeCipher | None, aad: str, blob: bytes, where: str) -> bytes:
    """The plaintext of a stored blob; a blob that does not open is an error, never data."""
    if cipher is None:
        return bytes(blob)
    try:
        return cipher.open(bytes(blob), aad.encode())
    except DecryptionError as exc:
        raise DecryptionError(f"{where}: stored content of {aad} does not open: {exc}") from None
