"""Encryption at rest: the envelope format, the master key file, and ``dmp-server rotate-master-key``."""

from __future__ import annotations

import multiprocessing
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from fhir_server.app import create_service
from fhir_server.cli import main
from fhir_server.runtime.config import Config
from storage import crypto
from storage.crypto import (
    DEFLATED_FORMAT,
    FORMAT,
    DecryptionError,
    EnvelopeCipher,
    MasterKeyError,
    MasterKeys,
    UnknownMasterKey,
)
from storage.query import OPEN_SCOPE
from storage.secretfile import write_secret_file

AAD = b"DocumentReference/d1/1"
PLAINTEXT = b'{"resourceType":"DocumentReference","description":"compte rendu"}'
#: Content that deflates well, as an AuditEvent does: JSON repeating its systems and references.
REPETITIVE = (
    b'{"resourceType":"AuditEvent","entity":['
    + b",".join(
        b'{"what":{"reference":"Patient/p%d","identifier":{"system":"urn:oid:1.2.250.1.213.1.4.8"}}}' % n
        for n in range(20)
    )
    + b"]}"
)


@pytest.fixture
def keys(tmp_path: Path) -> MasterKeys:
    return MasterKeys.load_or_create(tmp_path)


@pytest.fixture
def cipher(keys: MasterKeys) -> EnvelopeCipher:
    return EnvelopeCipher(keys)


def _offsets(blob: bytes) -> dict[str, int]:
    """Where each part of a blob starts (see the layout in storage/crypto.py)."""
    header_end = 6 + blob[5]
    return {
        "magic": 0,
        "format": 4,
        "kid length": 5,
        "kid": 6,
        "wrap nonce": header_end,
        "wrapped key": header_end + 12,
        "wrap tag": header_end + 12 + 32,
        "data nonce": header_end + 60,
        "ciphertext": header_end + 72,
        "tag": len(blob) - 1,
    }


def _flip(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0x01]) + blob[offset + 1 :]


# -- the envelope ----------------------------------------------------------------------------


def test_round_trip(cipher: EnvelopeCipher) -> None:
    blob = cipher.seal(PLAINTEXT, AAD)
    assert cipher.open(blob, AAD) == PLAINTEXT
    assert PLAINTEXT not in blob and b"compte rendu" not in blob
    assert cipher.open(cipher.seal(b"", AAD), AAD) == b""
    assert cipher.kid_of(blob) == cipher.master_keys.active.kid
    big = bytes(range(256)) * 4096  # 1 MiB
    assert cipher.open(cipher.seal(big, AAD), AAD) == big


def test_deflated_content_is_shorter_and_opens_the_same(cipher: EnvelopeCipher) -> None:
    plain, deflated = cipher.seal(REPETITIVE, AAD), cipher.seal(REPETITIVE, AAD, deflate=True)
    assert (plain[4], deflated[4]) == (FORMAT, DEFLATED_FORMAT)
    assert len(deflated) < len(plain) // 2
    assert cipher.open(deflated, AAD) == REPETITIVE == cipher.open(plain, AAD)
    assert b"Patient/p1" not in deflated


def test_a_blob_deflated_with_a_wider_window_opens(cipher: EnvelopeCipher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inflating takes any window: a blob whose matches reach back further than today's window
    (zlib's default 32 KB, as the first deflated blobs were written) opens as it did."""
    block = secrets.token_bytes(2000)
    far = block + secrets.token_bytes(28_000) + block  # 30 KB back: past the first output buffer
    monkeypatch.setattr(crypto, "_DEFLATE_WBITS", -15)
    monkeypatch.setattr(crypto, "_DEFLATE_MEM_LEVEL", 8)
    wide = cipher.seal(far, AAD, deflate=True)
    monkeypatch.undo()
    assert wide[4] == DEFLATED_FORMAT and len(wide) < len(far)
    assert cipher.open(wide, AAD) == far


def test_content_that_does_not_deflate_shorter_is_sealed_as_given(cipher: EnvelopeCipher) -> None:
    noise = secrets.token_bytes(2000)
    blob = cipher.seal(noise, AAD, deflate=True)
    assert blob[4] == FORMAT and cipher.open(blob, AAD) == noise


@pytest.mark.parametrize("deflate", [False, True])
def test_a_blob_does_not_open_under_the_other_format(cipher: EnvelopeCipher, deflate: bool) -> None:
    """The format is authenticated (in the wrap's header and in the data's associated data): a
    deflated blob cannot be passed off as a plain one, nor the reverse."""
    blob = cipher.seal(REPETITIVE, AAD, deflate=deflate)
    other = FORMAT if deflate else DEFLATED_FORMAT
    with pytest.raises(DecryptionError):
        cipher.open(blob[:4] + bytes([other]) + blob[5:], AAD)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize(
    "part",
    [
        "magic",
        "format",
        "kid length",
        "kid",
        "wrap nonce",
        "wrapped key",
        "wrap tag",
        "data nonce",
        "ciphertext",
        "tag",
    ],
)
def test_any_tampering_is_detected(cipher: EnvelopeCipher, part: str, deflate: bool) -> None:
    blob = cipher.seal(REPETITIVE, AAD, deflate=deflate)
    assert blob[4] == (DEFLATED_FORMAT if deflate else FORMAT)
    with pytest.raises(DecryptionError):
        cipher.open(_flip(blob, _offsets(blob)[part]), AAD)


def test_truncated_or_foreign_blobs_do_not_open(cipher: EnvelopeCipher) -> None:
    blob = cipher.seal(PLAINTEXT, AAD)
    for broken in (blob[:-1], blob[:40], blob[:6], b"", PLAINTEXT):
        with pytest.raises(DecryptionError):
            cipher.open(broken, AAD)


def test_wrong_aad_does_not_open(cipher: EnvelopeCipher) -> None:
    blob = cipher.seal(PLAINTEXT, AAD)
    for aad in (b"DocumentReference/d1/2", b"DocumentReference/d2/1", b"", AAD + b"x"):
        with pytest.raises(DecryptionError):
            cipher.open(blob, aad)


def test_a_swapped_kid_does_not_open(keys: MasterKeys, cipher: EnvelopeCipher) -> None:
    """The kid is authenticated with the wrapped key: naming another existing key fails too."""
    blob = cipher.seal(PLAINTEXT, AAD)
    old, new = keys.active.kid, keys.rotate()
    assert len(old) == len(new)
    with pytest.raises(DecryptionError):
        cipher.open(blob.replace(old.encode(), new.encode(), 1), AAD)


def test_unknown_master_key_does_not_open(cipher: EnvelopeCipher, tmp_path: Path) -> None:
    other = EnvelopeCipher(MasterKeys.load_or_create(tmp_path / "elsewhere"))
    with pytest.raises(DecryptionError, match="no master key"):
        cipher.open(other.seal(PLAINTEXT, AAD), AAD)


def test_two_seals_of_the_same_plaintext_differ(cipher: EnvelopeCipher) -> None:
    first, second = cipher.seal(PLAINTEXT, AAD), cipher.seal(PLAINTEXT, AAD)
    at = _offsets(first)
    assert first != second
    for start, end in (("wrap nonce", "wrapped key"), ("wrapped key", "data nonce"), ("data nonce", "ciphertext")):
        assert first[at[start] : at[end]] != second[at[start] : at[end]], start
    # drawn together, the two nonces of one seal are two draws, not one used twice
    assert first[at["wrap nonce"] : at["wrapped key"]] != first[at["data nonce"] : at["ciphertext"]]


@pytest.mark.parametrize("deflate", [False, True])
def test_rewrap_changes_the_kid_and_keeps_the_ciphertext(
    keys: MasterKeys, cipher: EnvelopeCipher, deflate: bool
) -> None:
    blob = cipher.seal(REPETITIVE, AAD, deflate=deflate)
    old = keys.active.kid
    new = keys.rotate()
    rewrapped = cipher.rewrap(blob)
    assert (cipher.kid_of(blob), cipher.kid_of(rewrapped)) == (old, new)
    assert rewrapped[4] == blob[4]
    assert rewrapped[_offsets(rewrapped)["data nonce"] :] == blob[_offsets(blob)["data nonce"] :]
    assert cipher.open(rewrapped, AAD) == REPETITIVE
    keys.retire(old, in_use=set())
    assert cipher.open(rewrapped, AAD) == REPETITIVE
    with pytest.raises(DecryptionError, match="no master key"):
        cipher.open(blob, AAD)


# -- the master key file ---------------------------------------------------------------------


def test_key_file_is_private_and_reused(tmp_path: Path, keys: MasterKeys) -> None:
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.path.parent.stat().st_mode) == 0o700
    again = MasterKeys.load_or_create(tmp_path)
    assert again.kids == keys.kids and again.active.key == keys.active.key
    keys.rotate()
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    assert not [p.name for p in keys.path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert keys.active.key.hex() not in repr(keys.active)


def _load_kid(data_dir: str, barrier: Any, results: Any) -> None:
    """One worker's start: all wait at the barrier, then race to create the key file."""
    barrier.wait()
    keys = MasterKeys.load_or_create(Path(data_dir))
    results.put((keys.active.kid, keys.active.key))


def test_concurrent_first_creation_yields_one_key_set(tmp_path: Path) -> None:
    """Workers starting together (gunicorn) must agree on one key, or half the data is lost."""
    context = multiprocessing.get_context("spawn")
    workers = 4
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_load_kid, args=(str(tmp_path), barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    found = {results.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(found) == 1
    assert found == {(MasterKeys.load_or_create(tmp_path).active.kid, MasterKeys.load_or_create(tmp_path).active.key)}


def test_a_losing_first_creation_does_not_replace_the_winner(keys: MasterKeys) -> None:
    before = keys.path.read_bytes()
    assert write_secret_file(keys.path, b"{}", replace=False) is False
    assert keys.path.read_bytes() == before


def test_rotate_and_retire(keys: MasterKeys) -> None:
    first = keys.active.kid
    second = keys.rotate()
    assert second != first and keys.active.kid == second and keys.kids == (first, second)
    with pytest.raises(MasterKeyError, match="active"):
        keys.retire(second, in_use=set())
    with pytest.raises(MasterKeyError, match="still wraps"):
        keys.retire(first, in_use={first})
    with pytest.raises(UnknownMasterKey):
        keys.retire("nope", in_use=set())
    keys.retire(first, in_use={second})
    assert keys.kids == (second,)
    with pytest.raises(UnknownMasterKey):
        keys.get(first)
    assert MasterKeys.load_or_create(keys.path.parent.parent).kids == (second,)


def test_another_process_rotation_is_seen(tmp_path: Path, keys: MasterKeys, cipher: EnvelopeCipher) -> None:
    """A running server must seal with the key a rotation made active, and open its blobs."""
    elsewhere = MasterKeys.load_or_create(tmp_path)  # the rotate-master-key command, say
    new = elsewhere.rotate()
    assert keys.active.kid == new
    sealed_elsewhere = EnvelopeCipher(elsewhere).seal(PLAINTEXT, AAD)
    assert cipher.open(sealed_elsewhere, AAD) == PLAINTEXT
    assert cipher.kid_of(cipher.seal(PLAINTEXT, AAD)) == new


def test_a_vanished_or_broken_key_file_stops_encryption(keys: MasterKeys, cipher: EnvelopeCipher) -> None:
    keys.path.unlink()
    with pytest.raises(MasterKeyError, match="disappeared"):
        cipher.seal(PLAINTEXT, AAD)
    keys.path.write_text('{"active": "x", "keys": []}')
    with pytest.raises(MasterKeyError, match="not in the file"):
        MasterKeys.load_or_create(keys.path.parent.parent)
    keys.path.write_text("not json")
    with pytest.raises(MasterKeyError, match="malformed"):
        MasterKeys.load_or_create(keys.path.parent.parent)


# -- the command -----------------------------------------------------------------------------


def test_rotate_master_key_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DMP_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DMP_STORE", raising=False)
    service = create_service(Config.from_env())
    service.store.create({"resourceType": "Patient", "id": "p1", "name": [{"family": "Martin"}]})
    service.store.update({"resourceType": "Patient", "id": "p1", "name": [{"family": "Durand"}]})
    service.store.close()
    before = MasterKeys.load_or_create(data_dir).kids

    # the database's key and its trail's file's, the resource row's (version 2) and version 1's,
    # kept by the update
    assert main(["rotate-master-key"]) == 0
    assert "re-wrapped 4 data key(s), retired 1 old master key(s)" in capsys.readouterr().out
    after = MasterKeys.load_or_create(data_dir).kids
    assert len(after) == 1 and after[0] not in before

    assert main(["rotate-master-key"]) == 0  # again: the previous key goes in turn
    assert "re-wrapped 4 data key(s), retired 1 old master key(s)" in capsys.readouterr().out
    service = create_service(Config.from_env())
    try:
        assert service.store.key_ids_in_use() == set(MasterKeys.load_or_create(data_dir).kids)
        assert service.store.read("Patient", "p1", OPEN_SCOPE).json()["name"][0]["family"] == "Durand"
        assert service.store.vread("Patient", "p1", 1, OPEN_SCOPE).json()["name"][0]["family"] == "Martin"
    finally:
        service.store.close()
