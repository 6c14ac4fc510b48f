"""Encryption at rest of stored content: envelope encryption with AES-256-GCM.

Every blob gets its own random 256-bit *data key*; the data key is stored next to the ciphertext,
*wrapped* (encrypted) by a *master key* kept in ``data_dir/keys/master-keys.json``. Rotating the
master key therefore only re-wraps 60-byte data keys (:meth:`EnvelopeCipher.rewrap`): documents,
which may weigh megabytes, are never decrypted nor re-encrypted; their ciphertext is kept byte for byte.

The caller's associated data (``aad``: for a resource its ``type/id/version``) is authenticated
with the content, so a blob copied to another row, or another version, does not open.

Blob layout (formats 1 and 2); all offsets in bytes, ``k`` the length of the master key id::

    0        4   magic b"DMPE"
    4        1   format version: 1, the plaintext as given; 2, the plaintext deflated (raw DEFLATE, RFC 1951)
    5        1   k, length of the master key id (1..255)
    6        k   master key id (ASCII)
    6+k      12  wrap nonce
    18+k     48  wrapped data key: AES-256-GCM(master key, data key, aad = the header, bytes [0, 6+k))
    66+k     12  data nonce
    78+k     n+16 AES-256-GCM(data key, plaintext, aad = b"DMPE" + format + caller's aad) with its tag

Why AES-GCM rather than RFC 3394 key wrap for the data key: with one ``AESGCM`` object built per
master key both cost about the same (≈4 µs here), but GCM lets the header (magic, format, master
key id) be authenticated as associated data of the wrap, so the key id cannot be swapped without
detection, and the whole format reviews as a single primitive. Random 96-bit nonces bound a master
key to about 2**32 wraps (NIST SP 800-38D), far beyond one key's life between rotations. The
data key encrypts exactly one message, so its random nonce can never repeat under it.

The kid deliberately stays out of the data ciphertext's associated data: that is what lets
:meth:`EnvelopeCipher.rewrap` change it without touching the ciphertext.

Why format 2: a caller whose content is written far more often than it is read (the access trail)
asks for it to be deflated first. An AuditEvent's 2.1 KB of JSON deflates to about 0.8 KB, so four
of them fit a database page where one did. Deflating takes about 20 µs per event, inflating about 6.
The format byte is authenticated with the data, so a blob cannot be opened under the other format.
What this reveals is the length of the deflated content. That is visible only to someone who can
already read the database file, and with SQLCipher that file is itself encrypted page by page.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import threading
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.secretfile import write_secret_file

MAGIC = b"DMPE"
FORMAT = 1
DEFLATED_FORMAT = 2
_FORMATS = (FORMAT, DEFLATED_FORMAT)
KEY_DIR_NAME = "keys"
MASTER_KEYS_FILE = "master-keys.json"
_LOCK_FILE = "master-keys.lock"
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # 96-bit GCM nonces, the size GCM is defined for without extra hashing
_TAG_BYTES = 16
_WRAPPED_BYTES = _NONCE_BYTES + _KEY_BYTES + _TAG_BYTES
_PREFIX_BYTES = len(MAGIC) + 1  # magic and format
#: Longest possible header (magic, format, kid length, kid): enough to read a blob's kid.
MAX_HEADER_BYTES = _PREFIX_BYTES + 1 + 255
#: Deflate's window and memory for a blob: a resource's JSON repeats itself within a few KB, and
#: zlib's defaults (a 32 KB window, memory level 8) make a state of about 300 KB, which the C
#: allocator maps and unmaps for each blob: 60 µs per AuditEvent instead of 17, for the same size.
#: Negative bits: raw DEFLATE, without zlib's header and checksum (GCM authenticates the data).
_DEFLATE_WBITS, _DEFLATE_MEM_LEVEL = -12, 5
#: Inflating takes any window up to the largest, so the window above may change without a format.
_INFLATE_WBITS = -zlib.MAX_WBITS


class CryptoError(Exception):
    """Base of the encryption-at-rest errors: a server fault, never a client error."""


class DecryptionError(CryptoError):
    """A blob does not open: tampered with, moved to another row, unknown master key, or not a blob."""


class MasterKeyError(CryptoError):
    """The master key file is missing, malformed, or an operation on it is refused."""


class UnknownMasterKey(MasterKeyError):
    """No master key of that id (retired, or a key file from another data directory)."""


@dataclass(frozen=True)
class MasterKey:
    """One key-encryption key; the key bytes never appear in ``repr`` (it may be logged)."""

    kid: str
    key: bytes = field(repr=False)
    created: str
    aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def make(cls, kid: str, key: bytes, created: str) -> MasterKey:
        """Build the key with its ``AESGCM`` once, so that no seal or open pays for the key schedule."""
        if not (kid.isascii() and 0 < len(kid) <= 255):
            raise MasterKeyError(f"master key id {kid!r} is not 1 to 255 ASCII characters")
        if len(key) != _KEY_BYTES:
            raise MasterKeyError(f"master key {kid!r} is not a 256-bit key")
        return cls(kid=kid, key=key, created=created, aead=AESGCM(key))

    @classmethod
    def generate(cls, existing: Collection[str] = ()) -> MasterKey:
        now = datetime.now(UTC)
        while True:  # a date for the operator's eyes, random bits for uniqueness
            kid = f"{now:%Y%m%d}-{secrets.token_hex(4)}"
            if kid not in existing:
                return cls.make(kid, secrets.token_bytes(_KEY_BYTES), now.isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, str]:
        return {"kid": self.kid, "key": base64.b64encode(self.key).decode("ascii"), "created": self.created}


@dataclass(frozen=True)
class _KeySet:
    """The content of the master key file: the keys by id (file order) and which one is active."""

    active: str
    keys: dict[str, MasterKey]

    @classmethod
    def parse(cls, raw: bytes, path: Path) -> _KeySet:
        try:
            doc = json.loads(raw)
            if doc.get("format", 1) != 1:
                raise MasterKeyError(f"{path}: unsupported master key file format {doc.get('format')!r}")
            keys = {
                item["kid"]: MasterKey.make(item["kid"], base64.b64decode(item["key"], validate=True), item["created"])
                for item in doc["keys"]
            }
            active = doc["active"]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise MasterKeyError(f"{path}: malformed master key file ({exc})") from None
        if active not in keys:
            raise MasterKeyError(f"{path}: the active master key {active!r} is not in the file")
        return cls(active, keys)

    def dump(self) -> bytes:
        doc: dict[str, Any] = {
            "format": 1,
            "active": self.active,
            "keys": [key.to_json() for key in self.keys.values()],
        }
        return (json.dumps(doc, indent=2) + "\n").encode("ascii")


#: What identifies one written version of the key file: a rewrite (temp file + rename) changes it.
_Signature = tuple[int, int, int, int]


def _signature(stat: os.stat_result) -> _Signature:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class MasterKeys:
    """The master keys of a data directory, shared by every process serving it.

    Other processes (gunicorn workers, the ``rotate-master-key`` command) may rewrite the file
    at any time. :attr:`active` therefore checks the file on each use (one ``stat``) and reloads
    it when it changed: a worker never seals with a key that a rotation has superseded, which is
    what makes it safe to retire that key once the data have been re-wrapped. :meth:`get` reloads
    on a miss, so keys created elsewhere are found.
    """

    def __init__(self, path: Path, keyset: _KeySet, signature: _Signature):
        self.path = path
        self._keyset = keyset
        self._signature = signature
        self._lock = threading.Lock()

    @classmethod
    def load_or_create(cls, data_dir: Path, file: Path | None = None) -> MasterKeys:
        """Load ``data_dir/keys/master-keys.json`` (or ``file``, kept outside the data directory:
        ``DMP_MASTER_KEY_FILE``), creating it with one key on first start.

        Workers starting together each generate a key set and link it into place; a link never
        replaces an existing file, so one wins and the others load the winner's keys.
        """
        path = file or Path(data_dir) / KEY_DIR_NAME / MASTER_KEYS_FILE
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            first = MasterKey.generate()
            write_secret_file(path, _KeySet(first.kid, {first.kid: first}).dump(), replace=False)
        keyset, signature = _read(path)
        return cls(path, keyset, signature)

    # -- reading -------------------------------------------------------------------------------

    @property
    def active(self) -> MasterKey:
        """The key new data keys are wrapped with, as the file says now."""
        self._refresh()
        keyset = self._keyset
        return keyset.keys[keyset.active]

    @property
    def kids(self) -> tuple[str, ...]:
        self._refresh()
        return tuple(self._keyset.keys)

    def get(self, kid: str) -> MasterKey:
        """The key of id ``kid``; :class:`UnknownMasterKey` when neither memory nor the file has it."""
        key = self._keyset.keys.get(kid)
        if key is None:
            self._refresh()
            key = self._keyset.keys.get(kid)
        if key is None:
            raise UnknownMasterKey(f"no master key {kid!r} in {self.path}")
        return key

    def _refresh(self) -> None:
        """Reload the file if another process rewrote it; refuse to go on if it disappeared."""
        try:
            current = _signature(os.stat(self.path))
        except FileNotFoundError:
            # Sealing on with keys that exist only in memory would write data no restart can read.
            raise MasterKeyError(
                f"{self.path} has disappeared: refusing to encrypt with keys about to be lost"
            ) from None
        if current != self._signature:
            with self._lock:
                self._keyset, self._signature = _read(self.path)

    # -- changing ------------------------------------------------------------------------------

    def rotate(self) -> str:
        """Add a new key and make it the active one; returns its id. Old keys stay, so that the
        data keys they wrap remain readable until re-wrapped (:meth:`EnvelopeCipher.rewrap`)."""

        def add(keyset: _KeySet) -> _KeySet:
            new = MasterKey.generate(keyset.keys)
            return _KeySet(new.kid, {**keyset.keys, new.kid: new})

        return self._change(add).active

    def retire(self, kid: str, *, in_use: Collection[str]) -> None:
        """Delete key ``kid`` for good. The store knows which keys still wrap data, this class does
        not: the caller passes them in ``in_use`` and the active key or one in use is refused."""

        def remove(keyset: _KeySet) -> _KeySet:
            if kid not in keyset.keys:
                raise UnknownMasterKey(f"no master key {kid!r} in {self.path}")
            if kid == keyset.active:
                raise MasterKeyError(f"master key {kid!r} is the active one: rotate first")
            if kid in in_use:
                raise MasterKeyError(f"master key {kid!r} still wraps stored data: re-wrap first")
            return _KeySet(keyset.active, {k: v for k, v in keyset.keys.items() if k != kid})

        self._change(remove)

    def _change(self, edit: Callable[[_KeySet], _KeySet]) -> _KeySet:
        """Apply ``edit`` to the file's current content under the lock file, then replace the file.

        The file is re-read under the lock so that two concurrent changes both land; it is synced
        (file and directory) before returning, since data will next be wrapped with the new key
        and a key file lost in a crash would make that data unreadable.
        """
        with self._lock, _exclusive(self.path.parent / _LOCK_FILE):
            keyset, _ = _read(self.path)
            changed = edit(keyset)
            write_secret_file(self.path, changed.dump(), replace=True)
            self._keyset, self._signature = _read(self.path)
            return changed


def _read(path: Path) -> tuple[_KeySet, _Signature]:
    """The file's keys and the signature of the very version read (``fstat`` of the same handle)."""
    try:
        with open(path, "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))
            raw = handle.read()
    except FileNotFoundError:
        raise MasterKeyError(f"{path} is missing") from None
    return _KeySet.parse(raw, path), signature


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path``, across processes; closing the file releases it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- blobs ------------------------------------------------------------------------------------


def _data_aad(fmt: int, aad: bytes) -> bytes:
    """The data ciphertext's associated data: the format is bound too, so that a blob cannot be
    reinterpreted under another format."""
    return MAGIC + bytes([fmt]) + aad


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` looks like an envelope of a known format (plaintext JSON never does)."""
    return blob[: len(MAGIC)] == MAGIC and len(blob) > len(MAGIC) and blob[len(MAGIC)] in _FORMATS


@dataclass(frozen=True)
class _Parsed:
    kid: str
    format: int
    header_end: int  # end of magic + format + kid: the wrap's associated data
    body_start: int  # start of data nonce + ciphertext: what a re-wrap keeps as is


def _parse(blob: bytes) -> _Parsed:
    kid = _parse_header(blob)
    header_end = _PREFIX_BYTES + 1 + len(kid)  # ASCII: as many bytes as characters
    body_start = header_end + _WRAPPED_BYTES
    if len(blob) < body_start + _NONCE_BYTES + _TAG_BYTES:
        raise DecryptionError("truncated encrypted blob")
    return _Parsed(kid, blob[len(MAGIC)], header_end, body_start)


def _parse_header(blob: bytes) -> str:
    """The master key id of a blob, from its header alone (callers may pass just the header)."""
    if not is_sealed(blob) or len(blob) <= _PREFIX_BYTES:
        raise DecryptionError("not an encrypted blob of a known format")
    kid_len = blob[_PREFIX_BYTES]
    raw = blob[_PREFIX_BYTES + 1 : _PREFIX_BYTES + 1 + kid_len]
    if kid_len == 0 or len(raw) != kid_len:
        raise DecryptionError("truncated encrypted blob")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("corrupt master key id in encrypted blob") from None


class EnvelopeCipher:
    """Seals and opens blobs with per-blob data keys wrapped by :class:`MasterKeys`."""

    def __init__(self, master_keys: MasterKeys):
        self.master_keys = master_keys

    def seal(self, plaintext: bytes, aad: bytes, *, deflate: bool = False) -> bytes:
        """Encrypt ``plaintext`` under a fresh data key, authenticating ``aad`` with it; with
        ``deflate``, deflated first (format 2), unless that does not make it shorter."""
        fmt = FORMAT
        if deflate:
            packer = zlib.compressobj(1, zlib.DEFLATED, _DEFLATE_WBITS, _DEFLATE_MEM_LEVEL)
            packed = packer.compress(plaintext) + packer.flush()
            if len(packed) < len(plaintext):
                plaintext, fmt = packed, DEFLATED_FORMAT
        # The data key, its nonce and the wrapping's nonce in one draw: one system call, not three.
        drawn = secrets.token_bytes(_KEY_BYTES + 2 * _NONCE_BYTES)
        data_key, nonce, wrap_nonce = drawn[:_KEY_BYTES], drawn[_KEY_BYTES:-_NONCE_BYTES], drawn[-_NONCE_BYTES:]
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _data_aad(fmt, aad))
        return b"".join((self._wrap(data_key, fmt, wrap_nonce), nonce, ciphertext))

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of ``blob``; :class:`DecryptionError` unless it opens with exactly ``aad``."""
        parsed = _parse(blob)
        data_key = self._unwrap(blob, parsed)
        view = memoryview(blob)  # no copy of a megabyte-sized ciphertext
        nonce = view[parsed.body_start : parsed.body_start + _NONCE_BYTES]
        try:
            plaintext = AESGCM(data_key).decrypt(
                nonce, view[parsed.body_start + _NONCE_BYTES :], _data_aad(parsed.format, aad)
            )
        except InvalidTag:
            raise DecryptionError("encrypted content does not authenticate (tampered, or not this row's)") from None
        if parsed.format == DEFLATED_FORMAT:
            return zlib.decompress(plaintext, _INFLATE_WBITS)  # authenticated: written by this code
        return plaintext

    def rewrap(self, blob: bytes) -> bytes:
        """``blob`` with its data key wrapped by the active master key; the ciphertext is kept as is."""
        parsed = _parse(blob)
        data_key = self._unwrap(blob, parsed)
        return self._wrap(data_key, parsed.format, secrets.token_bytes(_NONCE_BYTES)) + blob[parsed.body_start :]

    def kid_of(self, blob: bytes) -> str:
        """The id of the master key wrapping ``blob``'s data key (only the header is read)."""
        return _parse_header(blob)

    def _wrap(self, data_key: bytes, fmt: int, nonce: bytes) -> bytes:
        """``data_key`` wrapped by the active master key, under ``nonce`` (random, never reused)."""
        master = self.master_keys.active
        kid = master.kid.encode("ascii")
        header = MAGIC + bytes([fmt, len(kid)]) + kid
        return header + nonce + master.aead.encrypt(nonce, data_key, header)

    def _unwrap(self, blob: bytes, parsed: _Parsed) -> bytes:
        try:
            master = self.master_keys.get(parsed.kid)
        except UnknownMasterKey as exc:
            raise DecryptionError(str(exc)) from None
        header, nonce_end = blob[: parsed.header_end], parsed.header_end + _NONCE_BYTES
        nonce, wrapped = blob[parsed.header_end : nonce_end], blob[nonce_end : parsed.body_start]
        try:
            return master.aead.decrypt(nonce, wrapped, header)
        except InvalidTag:
            raise DecryptionError(f"wrapped data key does not authenticate under master key {parsed.kid!r}") from None
