"""Backups of the SQLite store, taken while it serves, and their restoration.

A backup is two directories, meant to be stored apart: the *data* (a consistent copy of the
database, still encrypted, and its wrapped database key) and the *keys* (the master keys and the
other secrets of ``data_dir/keys``). Either alone is useless to a thief. Each has a
``manifest.json`` giving every file's size and SHA-256, the server version and the date; the data
manifest also gives the counts of resources per type and of versions, checked after a restore.

The copy is ``VACUUM INTO`` on the live database: it reads one snapshot (a WAL read transaction,
so writers go on meanwhile) and writes a compact file encrypted under the same key; the trail's
file is copied the same way, after it (:meth:`SqliteStore.snapshot` says why in that order).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.crypto import MASTER_KEYS_FILE, EnvelopeCipher
from storage.secretfile import fsync_dir
from storage.sqlite import dbkey
from storage.sqlite.connection import Attached, SqliteSettings, connect
from storage.sqlite.schema import SCHEMA_VERSION, TRAIL_SCHEMA, trail_file
from storage.sqlite.store import SqliteStore

MANIFEST = "manifest.json"
FORMAT = 1
DATA_KIND = "dmp-server database backup"
KEYS_KIND = "dmp-server keys backup"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup cannot be written, or a backup to restore is incomplete, altered or of another kind."""


def back_up(
    store: SqliteStore, cipher: EnvelopeCipher, dest: Path, keys_dest: Path, key_files: Iterable[Path], version: str
) -> dict[str, Any]:
    """Write the data backup to ``dest`` and the key files to ``keys_dest``; returns the data manifest.

    The master key file is saved as ``master-keys.json`` whatever its name (``DMP_MASTER_KEY_FILE``)."""
    if dest.resolve() == keys_dest.resolve():
        raise BackupError("the keys must go to another directory than the data")
    for directory in (dest, keys_dest):
        if directory.exists() and any(directory.iterdir()):
            raise BackupError(f"{directory} is not empty")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    database = Path(store.path)
    copy = dest / database.name
    store.snapshot(copy)
    files = [copy, Path(trail_file(str(copy)))]
    for source in (database, Path(store.trail_path)):
        key_file = dbkey.key_path(source)
        shutil.copyfile(key_file, dest / key_file.name)
        files.append(dest / key_file.name)
    counts = counts_of(copy, cipher)
    manifest = _write_manifest(
        dest,
        files,
        {"kind": DATA_KIND, "version": version, "database": copy.name, "schema_version": SCHEMA_VERSION, **counts},
    )
    copies = []
    for path in {cipher.master_keys.path, *key_files}:
        target = keys_dest / (MASTER_KEYS_FILE if path == cipher.master_keys.path else path.name)
        shutil.copyfile(path, target)
        copies.append(target)
    _write_manifest(keys_dest, copies, {"kind": KEYS_KIND, "version": version})
    return manifest


def verify(directory: Path, kind: str) -> dict[str, Any]:
    """The manifest of a backup directory once every file it lists is there, of its size and hash."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{directory}: no readable {MANIFEST} ({exc})") from None
    if manifest.get("kind") != kind or manifest.get("format") != FORMAT:
        raise BackupError(f"{directory} is not a {kind} (format {FORMAT})")
    for name, expected in manifest["files"].items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise BackupError(f"{directory}: {name} is missing")
        if _describe(path) != expected:
            raise BackupError(f"{directory}: {name} is not the file the manifest describes (altered or truncated)")
    return manifest


def restore(src: Path, keys_src: Path, database: Path, keys_dir: Path, master_key_file: Path) -> dict[str, Any]:
    """Copy a verified backup into place: the database, the trail's file and their keys beside
    it, the master keys to ``master_key_file``, the other key files into ``keys_dir``. Any earlier
    WAL is removed, and the trail's journal of the database replaced (:mod:`storage.sqlite.journal`):
    a backup holds the journal moved in (:meth:`SqliteStore.snapshot`), and what came after it is
    what a restore undoes."""
    data, keys = verify(src, DATA_KIND), verify(keys_src, KEYS_KIND)
    if MASTER_KEYS_FILE not in keys["files"]:
        raise BackupError(f"{keys_src} holds no {MASTER_KEYS_FILE}")
    for directory in (database.parent, keys_dir, master_key_file.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    trail = Path(trail_file(str(database)))
    for file in (database, trail):
        for suffix in ("-wal", "-shm"):
            file.with_name(file.name + suffix).unlink(missing_ok=True)
    for journal in database.parent.glob(f"{database.name}.journal-*"):  # the trail's journal, detached
        journal.unlink()
    database.with_name(f"{database.name}.journal").unlink(missing_ok=True)  # and live
    for copy, target in ((Path(data["database"]), database), (Path(trail_file(data["database"])), trail)):
        _install(src / copy.name, target)
        _install(src / dbkey.key_path(copy).name, dbkey.key_path(target))
    for name in keys["files"]:
        _install(keys_src / name, master_key_file if name == MASTER_KEYS_FILE else keys_dir / name)
    return data


def counts_of(database: Path, cipher: EnvelopeCipher) -> dict[str, Any]:
    """What a data manifest counts, read from ``database`` and its trail's file (to check a
    restored copy). A write's event not yet moved to the trail's file is counted there, once."""
    trail = Path(trail_file(str(database)))
    attached = Attached(TRAIL_SCHEMA, str(trail), dbkey.load(trail, cipher), 1.0)
    conn = connect(str(database), dbkey.load(database, cipher), SqliteSettings(), attached)
    try:
        rows = conn.execute(
            "SELECT type, COUNT(*) FROM (SELECT type, id FROM trail.resource WHERE deleted = 0"
            " UNION SELECT type, id FROM main.resource WHERE deleted = 0) GROUP BY type ORDER BY type"
        )
        resources = {str(rtype): int(n) for rtype, n in rows}
        versions = int(conn.execute("SELECT COUNT(*) FROM main.version").fetchone()[0])
        versions += int(conn.execute("SELECT COUNT(*) FROM trail.version").fetchone()[0])
        checks = [str(conn.execute(f"PRAGMA {schema}.quick_check").fetchone()[0]) for schema in ("main", TRAIL_SCHEMA)]
    finally:
        conn.close()
    for file, check in zip((database, trail), checks, strict=True):
        if check != "ok":
            raise BackupError(f"{file} fails SQLite's integrity check: {check}")
    return {"resources": resources, "versions": versions}


def _write_manifest(directory: Path, files: list[Path], fields: dict[str, Any]) -> dict[str, Any]:
    for path in files:
        os.chmod(path, 0o600)
        _fsync(path)
    manifest = {
        "format": FORMAT,
        **fields,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {path.name: _describe(path) for path in files},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _fsync(directory / MANIFEST)
    fsync_dir(directory)
    return manifest


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` (0600) through a temporary name, synced before the rename."""
    staging = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(source, staging)
    os.chmod(staging, 0o600)
    _fsync(staging)
    os.replace(staging, target)
    fsync_dir(target.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
