"""The ``dmp-server`` command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fhir_server.cli.accounts import add_account_command
from fhir_server.cli.apps import add_app_command
from fhir_server.cli.clients import add_client_command
from fhir_server.cli.directory import add_directory_command
from fhir_server.cli.imports import add_import_command
from fhir_server.cli.migrate import add_migrate_command
from fhir_server.cli.operator import operator
from fhir_server.cli.token import add_token_command
from fhir_server.runtime.config import Config

if TYPE_CHECKING:
    from fhir_server.dmp.jobs import JobContext


def _job_context(config: Config) -> JobContext:
    from fhir_server.app import create_service
    from fhir_server.dmp.jobs import JobContext
    from fhir_server.runtime.mail import mailer_from

    return JobContext(create_service(config), mailer_from(config))


def _start_jobs(config: Config) -> None:
    """The periodic jobs run beside the server, on their own store connection."""
    from fhir_server.app import JOBS
    from fhir_server.dmp.jobs import JobRunner

    if config.jobs_interval > 0:
        JobRunner(_job_context(config), JOBS, config.jobs_interval).start()


def _jobs(args: argparse.Namespace) -> int:
    from fhir_server.app import JOBS
    from fhir_server.dmp.jobs import run_jobs

    if args.list:
        print("\n".join(JOBS))
        return 0
    context = _job_context(Config.from_env())
    try:
        done = run_jobs(context, JOBS, args.only)
    except ValueError as exc:
        print(f"dmp-server jobs: {exc}", file=sys.stderr)
        return 2
    finally:
        context.service.store.close()
    if done is None:
        print("dmp-server jobs: another process is running the jobs now", file=sys.stderr)
        return 1
    for name, count in done.items():
        print(f"{name}: {'failed (see the log)' if count < 0 else count}")
    return 1 if any(count < 0 for count in done.values()) else 0


def _purge(args: argparse.Namespace) -> int:
    """Remove the DMPs closed longer ago than the retention period (R20): see fhir_server/dmp/lifecycle/purge.py."""
    from fhir_server.app import create_service
    from fhir_server.dmp.lifecycle.purge import purge

    config = Config.from_env()
    years = config.retention_years if args.older_than_years is None else args.older_than_years
    if years < config.retention_years:
        print(
            f"dmp-server purge: --older-than-years {years} is shorter than the retention period"
            f" ({config.retention_years} years, DMP_RETENTION_YEARS): a DMP its patient may still reopen is never"
            " purged",
            file=sys.stderr,
        )
        return 2
    service = create_service(config)
    try:
        report = purge(service, today=datetime.now(UTC).date(), years=years, dry_run=args.dry_run, operator=operator())
    finally:
        service.store.close()
    print("\n".join(report.lines()))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fhir_server.app import create_app

    config = Config.from_env()
    _start_jobs(config)
    if args.workers > 1 or args.threads > 1:
        from gunicorn.app.base import BaseApplication

        class _Gunicorn(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                self.cfg.set("bind", f"{args.host}:{args.port}")
                self.cfg.set("workers", args.workers)
                self.cfg.set("threads", args.threads)
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("accesslog", None)

            def load(self):  # type: ignore[no-untyped-def]
                return create_app(config)

        _Gunicorn().run()
        return 0
    from werkzeug.serving import run_simple

    app = create_app(config)
    print(f"dmp-server: FHIR base {config.base_url} (data in {config.data_dir})", file=sys.stderr)
    run_simple(args.host, args.port, app, threaded=True)
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service

    service = create_service(Config.from_env())
    try:
        count = service.store.reindex(args.type)
    finally:
        service.store.close()
    print(f"reindexed {count} resource(s)")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    """Rotate the master key: new active key, every data key re-wrapped, unused old keys deleted.

    Safe while servers run: they pick the new key up on their next write, and an old key is
    retired only once no stored blob uses it any more.
    """
    from fhir_server.app import create_service
    from storage.crypto import MasterKeys

    config = Config.from_env()
    service = create_service(config)
    keys = MasterKeys.load_or_create(config.data_dir)
    try:
        new_kid = keys.rotate()
        rewrapped = service.store.rewrap_all()
        in_use = service.store.key_ids_in_use()
    finally:
        service.store.close()
    retired = [kid for kid in keys.kids if kid != new_kid and kid not in in_use]
    for kid in retired:
        keys.retire(kid, in_use=in_use)
    kept = [kid for kid in keys.kids if kid != new_kid]
    print(f"new master key {new_kid}: re-wrapped {rewrapped} data key(s), retired {len(retired)} old master key(s)")
    if kept:
        print(f"kept {len(kept)} old master key(s) still in use: {', '.join(kept)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmp-server", description="DMP FHIR R4 document server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the FHIR server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (1 = built-in server)")
    serve.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    serve.set_defaults(func=_serve)
    reindex = sub.add_parser("reindex", help="recompute search indexes (after SearchParameters in ig/ change)")
    reindex.add_argument("--type", help="only this resource type")
    reindex.set_defaults(func=_reindex)
    rotate = sub.add_parser("rotate-master-key", help="new master key for encryption at rest; re-wraps data keys")
    rotate.set_defaults(func=_rotate)
    jobs = sub.add_parser("jobs", help="run the periodic jobs once (alerts, majority...) and exit")
    jobs.add_argument("--only", action="append", metavar="NAME", help="only this job (repeatable)")
    jobs.add_argument("--list", action="store_true", help="list the jobs and exit")
    jobs.set_defaults(func=_jobs)
    purge = sub.add_parser("purge", help="remove the DMPs closed longer ago than the retention period (R20)")
    purge.add_argument("--dry-run", action="store_true", help="only list what would be removed, per DMP and type")
    purge.add_argument(
        "--older-than-years",
        type=int,
        metavar="N",
        help="only DMPs closed more than N years ago (at least DMP_RETENTION_YEARS, the default)",
    )
    purge.set_defaults(func=_purge)
    add_token_command(sub)
    add_account_command(sub)
    add_client_command(sub)
    add_app_command(sub)
    add_import_command(sub)
    add_migrate_command(sub)
    add_directory_command(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


