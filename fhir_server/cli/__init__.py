"""The ``dmp-server`` command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from fhir_server.cli.accounts import add_account_command
from fhir_server.cli.apps import add_app_command
from fhir_server.cli.backup import add_backup_command
from fhir_server.cli.clients import add_client_command
from fhir_server.cli.command import add_data_dir_option, run_command, split_data_dir
from fhir_server.cli.directory import add_directory_command
from fhir_server.cli.imports import add_import_command
from fhir_server.cli.migrate import add_migrate_command
from fhir_server.cli.operator import operator
from fhir_server.cli.rekey import add_rekey_command
from fhir_server.cli.restore import add_restore_command
from fhir_server.cli.serve import add_serve_command
from fhir_server.cli.token import add_token_command
from fhir_server.runtime.config import Config


def _jobs(args: argparse.Namespace) -> int:
    from fhir_server.app import JOBS
    from fhir_server.cli.jobs_leader import job_context
    from fhir_server.dmp.jobs import run_jobs

    if args.list:
        print("\n".join(JOBS))
        return 0
    context = job_context(Config.from_env())
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
    """Rotate the master key: new active key, the database key and every data key re-wrapped,
    unused old keys deleted.

    Safe while servers run: they pick the new key up on their next write, and an old key is
    retired only once no stored blob uses it any more.
    """
    from fhir_server.app import create_service
    from storage.crypto import MasterKeys

    config = Config.from_env()
    service = create_service(config)
    keys = MasterKeys.load_or_create(config.data_dir, config.master_key_file)
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
    add_data_dir_option(parser)
    add_serve_command(sub)
    reindex = sub.add_parser("reindex", help="recompute search indexes (after SearchParameters in ig/ change)")
    reindex.add_argument("--type", help="only this resource type")
    reindex.set_defaults(func=_reindex)
    rotate = sub.add_parser("rotate-master-key", help="new master key for encryption at rest; re-wraps data keys")
    rotate.set_defaults(func=_rotate)
    add_rekey_command(sub)
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
    add_backup_command(sub)
    add_restore_command(sub)
    data_dir, rest = split_data_dir(sys.argv[1:] if argv is None else argv)
    return run_command(parser.parse_args(rest), data_dir)


