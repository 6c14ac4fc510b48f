"""``dmp-server backup DEST``: a consistent copy of the SQLite store, taken while the server serves.

The data (the encrypted database and its wrapped key) go to ``DEST``, the keys (master keys,
signing key) to ``--keys`` (default ``DEST.keys``), a separate directory to be stored apart:
see :mod:`storage.sqlite.backup`.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fhir_server.runtime.config import Config


def add_backup_command(subparsers: Any) -> None:
    """Register ``dmp-server backup`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("backup", help="copy the database (consistent while serving) and, apart, the keys")
    parser.add_argument("dest", type=Path, help="new or empty directory for the data backup")
    parser.add_argument("--keys", type=Path, help="new or empty directory for the keys (default: DEST.keys)")
    parser.set_defaults(func=_backup)


def server_version() -> str:
    """The installed version of the server, written into backup manifests."""
    try:
        return version("dmp-server")
    except PackageNotFoundError:
        return "unknown"


def _backup(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service
    from storage.crypto import KEY_DIR_NAME, EnvelopeCipher, MasterKeys
    from storage.sqlite.backup import BackupError, back_up
    from storage.sqlite.store import SqliteStore

    config = Config.from_env()
    keys_dest = args.keys or args.dest.with_name(args.dest.name + ".keys")
    service = create_service(config)
    try:
        if not isinstance(service.store, SqliteStore):
            print("dmp-server backup: only the SQLite store is backed up here", file=sys.stderr)
            return 2
        cipher = EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file))
        secrets = sorted(
            path
            for path in (config.data_dir / KEY_DIR_NAME).iterdir()
            if path.is_file() and not path.name.startswith(".") and path.suffix != ".lock"
        )
        manifest = back_up(service.store, cipher, args.dest, keys_dest, secrets, server_version())
    except BackupError as exc:
        print(f"dmp-server backup: {exc}", file=sys.stderr)
        return 1
    finally:
        service.store.close()
    total = sum(manifest["resources"].values())
    print(f"data: {args.dest} ({total} resource(s), {manifest['versions']} version(s))")
    print(f"keys: {keys_dest} (store apart from the data: together they open everything)")
    return 0
