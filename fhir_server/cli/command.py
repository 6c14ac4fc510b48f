"""What every ``dmp-server`` command shares: ``--version``, the data directory, and bad settings
reported in one line.

``--data-dir`` (anywhere on the line) is ``DMP_DATA_DIR`` for this command, so ``token``,
``account``, ``client``... reach the data of the server started with the same setting. A command
that works on a server's data refuses a folder that holds none: run from the wrong place it would
otherwise make a new key (a token the server rejects) or a new empty database.
"""

from __future__ import annotations

import argparse
import os
import sys

from fhir_server.runtime.config import Config, ConfigError
from fhir_server.runtime.version import version

DATA_DIR_ENV = "DMP_DATA_DIR"
BASE_URL_ENV = "DMP_BASE_URL"
#: The FHIR base the server last started with (``serve`` writes it): the issuer and audience of
#: tokens, which the other commands must use too when DMP_BASE_URL is not set.
BASE_URL_FILE = "server-base-url"
#: The commands that only work on the data of a server that has already started once (``import``
#: and ``directory`` may fill a new data directory before its server first starts).
NEEDS_SERVER_DATA = frozenset(
    {
        "token",
        "account",
        "client",
        "app",
        "jobs",
        "purge",
        "reindex",
        "rotate-master-key",
        "rekey-database",
        "backup",
        "migrate",
    }
)
#: The folder of the data directory every started server has (its signing key; its master keys
#: too unless DMP_MASTER_KEY_FILE puts them elsewhere, when its database is the mark).
_STARTED_MARK = "keys"


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"dmp-server {version()}")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the server's data directory (DMP_DATA_DIR, default ./data); may follow the command",
    )


def split_data_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--data-dir DIR`` taken out of the command line wherever it is; the rest, in order."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--data-dir")
    known, rest = pre.parse_known_args(argv)
    return known.data_dir, rest


def _require_server_data(config: Config) -> None:
    if not ((config.data_dir / _STARTED_MARK).is_dir() or config.sqlite_path.exists()):
        raise ConfigError(
            f"no server data in {config.data_dir.resolve()}: name the server's data directory with --data-dir"
            f" or {DATA_DIR_ENV} (or start `dmp-server serve` there first)"
        )


def remember_base_url(config: Config) -> None:
    """Note the server's FHIR base in its data directory, for the other commands."""
    (config.data_dir / BASE_URL_FILE).write_text(config.base_url + "\n", encoding="utf-8")


def _server_base_url(config: Config) -> str | None:
    try:
        return (config.data_dir / BASE_URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def run_command(args: argparse.Namespace, data_dir: str | None) -> int:
    """Run the parsed command with ``data_dir`` as its data directory (and, for the commands on a
    server's data, that server's base URL unless DMP_BASE_URL says otherwise); 2 on a bad setting
    or a store or data directory that cannot be used."""
    saved = {name: os.environ.get(name) for name in (DATA_DIR_ENV, BASE_URL_ENV)}
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = data_dir
    try:
        if args.command in NEEDS_SERVER_DATA:
            config = Config.from_env()
            _require_server_data(config)
            base_url = _server_base_url(config)
            if base_url and not os.environ.get(BASE_URL_ENV):
                os.environ[BASE_URL_ENV] = base_url
        result: int = args.func(args)
        return result
    except (ConfigError, ValueError, OSError) as exc:
        # a setting, a store URL without its backend, a data directory that cannot be written:
        # what the operator must change, said in one line rather than as a traceback
        print(f"dmp-server {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
