"""``dmp-server serve``: the production server (gunicorn), or the development one with ``--dev``.

Before any worker starts, the master builds the app once and closes it: a bad setting, a store
that cannot open, a data directory it cannot write, fail here in one line (exit code 2) instead
of in every worker; and the keys and the database exist before workers race to create them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from fhir_server.cli.command import remember_base_url
from fhir_server.cli.serving_lock import hold_serving_lock
from fhir_server.fhir.ops import MULTIPROC_ENV
from fhir_server.runtime.config import Config, ConfigError, ServeSettings
from fhir_server.runtime.datafiles import DataFilesMissing
from fhir_server.runtime.version import version

if TYPE_CHECKING:
    from flask import Flask


def add_serve_command(subparsers: Any) -> None:
    """Register ``dmp-server serve`` on the CLI's ``add_subparsers()`` object."""
    serve = subparsers.add_parser("serve", help="start the FHIR server (gunicorn; --dev: the development server)")
    serve.add_argument("--host", help="address to listen on (DMP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (DMP_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (DMP_WORKERS, default: one per usable CPU)")
    serve.add_argument("--threads", type=int, help="threads per worker (DMP_THREADS, default 4)")
    serve.add_argument(
        "--dev", action="store_true", help="Werkzeug's development server, one process (not for production)"
    )
    serve.set_defaults(func=_serve)


def _redacted(url: str) -> str:
    """A store URL without the password it may hold (mongodb://user:secret@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def banner(config: Config, settings: ServeSettings, server: str) -> str:
    store = _redacted(config.store_url) if config.store_url else f"SQLite {config.sqlite_path.resolve()}"
    operations = "/healthz /readyz" + (" /metrics" if config.metrics else "")
    return "\n".join(
        (
            f"dmp-server {version()}: FHIR base {config.base_url}",
            f"  listening on   {settings.host}:{settings.port}",
            f"  data directory {config.data_dir.resolve()}",
            f"  store          {store}",
            f"  server         {server}",
            f"  operations     {operations} (no token)",
        )
    )


def _built(config: Config) -> Flask:
    """The app, or the one-line reason it cannot be built (a store URL without a backend, a data
    directory that cannot be written, data files missing from the installation)."""
    from fhir_server.app import create_app

    try:
        app = create_app(config)
        remember_base_url(config)
        return app
    except (ValueError, OSError, DataFilesMissing) as exc:
        raise ConfigError(f"cannot start: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    settings = ServeSettings.from_env(host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    config = Config.from_env(base_url=settings.base_url)
    if args.dev:
        return _develop(config, settings)
    from fhir_server.cli.production import ProductionServer, control_socket

    metrics_dir = None
    if config.metrics:
        metrics_dir = Path(tempfile.mkdtemp(prefix="dmp-metrics-"))
        os.environ[MULTIPROC_ENV] = str(metrics_dir)  # before anything imports prometheus_client
    _built(config).extensions["fhir_service"].store.close()  # workers build their own
    hold_serving_lock(config.data_dir)
    socket = control_socket(settings, config)
    server = f"gunicorn, {settings.workers} worker(s) × {settings.threads} thread(s), control socket {socket or 'none'}"
    print(banner(config, settings, server), file=sys.stderr, flush=True)
    ProductionServer(settings, config, metrics_dir).run()
    return 0


def _develop(config: Config, settings: ServeSettings) -> int:
    from werkzeug.serving import run_simple

    from fhir_server.app import serving
    from fhir_server.cli.jobs_leader import start_jobs_leader
    from fhir_server.fhir.ops.access_log import log_as_json_lines

    app = _built(config)
    hold_serving_lock(config.data_dir)
    print(banner(config, settings, "Werkzeug development server (--dev): not for production"), file=sys.stderr)
    log_as_json_lines()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # its access lines hold paths and queries
    start_jobs_leader(config)
    run_simple(settings.host, settings.port, serving(app), threaded=True)
    return 0
