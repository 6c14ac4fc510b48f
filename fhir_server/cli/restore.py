"""``dmp-server restore SRC``: put a backup of ``dmp-server backup`` back into the data directory.

Both manifests are checked (every file's size and SHA-256) before anything is written; a data
directory that already holds something is only overwritten with ``--force``. Once in place the
database is opened with the restored keys and its counts compared with the manifest's. A data
directory a running server holds is refused, ``--force`` or not: stop the server first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fhir_server.cli.serving_lock import is_served
from fhir_server.runtime.config import Config


def add_restore_command(subparsers: Any) -> None:
    """Register ``dmp-server restore`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("restore", help="restore a backup into the data directory (server stopped)")
    parser.add_argument("src", type=Path, help="the data backup directory")
    parser.add_argument("--keys", type=Path, help="the keys backup directory (default: SRC.keys)")
    parser.add_argument("--force", action="store_true", help="overwrite a data directory that is not empty")
    parser.set_defaults(func=_restore)


def _restore(args: argparse.Namespace) -> int:
    from storage.crypto import KEY_DIR_NAME, MASTER_KEYS_FILE, CryptoError, EnvelopeCipher, MasterKeys
    from storage.sqlite.backup import BackupError, counts_of, restore

    config = Config.from_env()
    keys_src = args.keys or args.src.with_name(args.src.name + ".keys")
    occupied = config.data_dir.exists() and any(config.data_dir.iterdir())
    if occupied and is_served(config.data_dir):
        print(f"dmp-server restore: a server is running on {config.data_dir}: stop it first", file=sys.stderr)
        return 2
    if occupied and not args.force:
        print(f"dmp-server restore: {config.data_dir} is not empty (--force to overwrite it)", file=sys.stderr)
        return 2
    keys_dir = config.data_dir / KEY_DIR_NAME
    master_key_file = config.master_key_file or keys_dir / MASTER_KEYS_FILE
    try:
        manifest = restore(args.src, keys_src, config.sqlite_path, keys_dir, master_key_file)
        cipher = EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file))
        found = counts_of(config.sqlite_path, cipher)
        if found != {"resources": manifest["resources"], "versions": manifest["versions"]}:
            raise BackupError(f"the restored database does not hold what the manifest counts: {found}")
    except (BackupError, CryptoError) as exc:
        print(f"dmp-server restore: {exc}", file=sys.stderr)
        return 1
    total = sum(manifest["resources"].values())
    print(f"restored {total} resource(s) of {manifest['created']} into {config.data_dir}")
    return 0
