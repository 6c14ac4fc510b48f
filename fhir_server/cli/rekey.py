"""``dmp-server rekey-database``: rewrite the SQLite database under a new database key
(:mod:`storage.sqlite.rekey`), for when the database key may have leaked. Every server on the data
directory must be stopped: the database is copied page by page and the copy replaces it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhir_server.cli.serving_lock import is_served
from fhir_server.runtime.config import Config


def add_rekey_command(subparsers: Any) -> None:
    """Register ``dmp-server rekey-database`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser(
        "rekey-database", help="rewrite the SQLite database under a new database key (server stopped)"
    )
    parser.set_defaults(func=_rekey)


def _rekey(args: argparse.Namespace) -> int:
    from storage.crypto import CryptoError, EnvelopeCipher, MasterKeys
    from storage.sqlite.rekey import rekey

    config = Config.from_env()
    if config.store_url and not config.store_url.startswith("sqlite:"):
        print("dmp-server rekey-database: only the embedded SQLite store has a database key", file=sys.stderr)
        return 2
    if is_served(config.data_dir):
        print(f"dmp-server rekey-database: a server is running on {config.data_dir}: stop it first", file=sys.stderr)
        return 2
    try:
        rekey(config.sqlite_path, EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file)))
    except CryptoError as exc:
        print(f"dmp-server rekey-database: {exc}", file=sys.stderr)
        return 1
    print(f"{config.sqlite_path} rewritten under a new database key")
    return 0
