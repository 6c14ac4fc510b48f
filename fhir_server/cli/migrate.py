"""``dmp-server migrate --from sqlite:///… --to mongodb://…``: move a server's store to MongoDB.

The copy itself is :mod:`storage.mongo.migrate` (blobs moved sealed, resumable, verified); this
module opens both ends with the server's configuration (the same search parameters and master
keys, so the target checks that the keys of ``DMP_DATA_DIR`` open what it receives) and draws the
progress bar.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.runtime.config import Config

if TYPE_CHECKING:
    from storage.sqlite.connection import DatabaseKey

_BAR = 30


def add_migrate_command(subparsers: Any) -> None:
    """Register ``dmp-server migrate`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("migrate", help="copy the SQLite store into MongoDB, resumably, and verify it")
    parser.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH", help="the SQLite store")
    parser.add_argument("--to", dest="target", required=True, metavar="mongodb://…", help="the MongoDB store")
    parser.add_argument("--batch", type=int, default=500, help="resources per MongoDB transaction")
    parser.add_argument("--verify-only", action="store_true", help="only compare counts and digests")
    parser.set_defaults(func=_migrate_command)


def _progress(what: str, done: int, total: int) -> None:
    filled = _BAR * done // total if total else _BAR
    end = "\n" if done >= total else ""
    print(f"\r{what:>9} [{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def _migrate_command(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service
    from storage.mongo.migrate import Migration
    from storage.mongo.store import MongoStore
    from storage.sqlite.schema import trail_file
    from storage.sqlite.store import SqliteStore

    if not args.source.startswith("sqlite:///") or not args.target.startswith(("mongodb://", "mongodb+srv://")):
        print("dmp-server migrate: --from sqlite:///path --to mongodb://…", file=sys.stderr)
        return 2
    source = Path(args.source[len("sqlite:///") :])
    if not source.is_file():
        print(f"dmp-server migrate: no SQLite store at {source}", file=sys.stderr)
        return 2
    config = Config.from_env()
    # Opened once: what the trail's journal holds, and the writes' events, are moved into the
    # trail's file the copy reads, and the trail's rows left to be written when read are written.
    opened = create_service(dataclasses.replace(config, store_url=args.source)).store
    try:
        assert isinstance(opened, SqliteStore)
        opened.complete_index()
    finally:
        opened.close()
    service = create_service(dataclasses.replace(config, store_url=args.target))
    store = service.store
    assert isinstance(store, MongoStore)
    try:
        trail = Path(trail_file(str(source)))
        keys = {"key": _database_key(source, config), "trail_key": _database_key(trail, config)}
        migration = Migration(source, store, **keys, batch=args.batch)
        if not args.verify_only:
            migration.run(_progress)
        expected, found = migration.source_tally(), migration.target_tally()
    except ValueError as exc:  # a source a server wrote to since it was opened above
        print(f"dmp-server migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for kind, count in expected.counts.items():
        same = count == found.counts[kind] and expected.digests[kind] == found.digests[kind]
        verdict = "ok" if same else f"DIFFERS: {found.counts[kind]} in MongoDB"
        print(f"{kind:>9}: {count} in SQLite, digest {expected.digests[kind][:16]}… {verdict}")
    if expected != found:
        print("dmp-server migrate: the copy differs from the source (rerun to resume)", file=sys.stderr)
        return 1
    return 0


def _database_key(source: Path, config: Config) -> DatabaseKey | None:
    """The key of a SQLite database file, unwrapped by the master keys (None for a file of a
    version that did not encrypt the database as a whole)."""
    from storage.crypto import EnvelopeCipher, MasterKeys
    from storage.sqlite import dbkey

    if not dbkey.key_path(source).exists():
        return None
    return dbkey.load(source, EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file)))
