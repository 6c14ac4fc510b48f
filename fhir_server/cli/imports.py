"""``dmp-server import FILE|DIR``: bulk import of FHIR Bundles and NDJSON files.

Each unit goes through the FHIR service (:mod:`fhir_server.dmp.imports`) as a request by the
operator: a token minted here with the server's own key, role ``--role`` (``ADM`` by default:
the directory, DMP creation; ``TCU`` or ``HCP`` to add documents, as R15 has it), subject
``import:<login>`` and display name ``dmp-server import (<login>)``, so the trail names who
brought each record in. A progress bar counts the units; a restarted import skips the units done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from authz.devtoken import ROLES, make_dev_token
from authz.keys import load_or_create_server_key
from authz.terms import ADMINISTRATION
from authz.tokens import own_issuer
from fhir_server.cli.operator import operator
from fhir_server.runtime.config import Config


def add_import_command(subparsers: Any) -> None:
    """Register ``dmp-server import`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser(
        "import", help="import FHIR Bundles (transaction, batch, collection) and NDJSON files; resumable"
    )
    parser.add_argument("source", type=Path, metavar="FILE|DIR", help="a file, or a folder of .json/.ndjson files")
    parser.add_argument("--role", default=ADMINISTRATION, choices=ROLES, help="the role the import acts in (ADM)")
    parser.add_argument("--idnatps", help="idNatPs, for --role HCP")
    parser.add_argument("--profession", help="TRE_G15 profession code, for --role HCP")
    parser.add_argument("--organization", help="FINESS as system|value, for --role TCU")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_import_command)


def _import_command(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service
    from fhir_server.dmp.imports.run import Importer
    from fhir_server.dmp.imports.sources import SourceError, files_of, units_of

    config = Config.from_env()
    key = load_or_create_server_key(config.data_dir)
    login = operator()

    def credentials(ins: str | None) -> str:
        token = make_dev_token(
            key,
            issuer=own_issuer(config.base_url),
            audience=config.base_url,
            role=args.role,
            sub=args.idnatps or f"import:{login}",
            name=f"dmp-server import ({login})",
            person_id=ins,
            idnatps=args.idnatps,
            profession=args.profession,
            organization=args.organization,
            lifetime_seconds=300,
        )
        return f"Bearer {token}"

    try:
        units = [unit for path in files_of(args.source) for unit in units_of(path)]
    except (SourceError, OSError) as exc:
        print(f"dmp-server import: {exc}", file=sys.stderr)
        return 2
    service = create_service(config)
    importer = Importer(service, credentials)
    done = skipped = failed = 0
    try:
        for unit in tqdm(units, desc="import", unit="unit", disable=args.quiet, file=sys.stderr):
            outcome = importer.run(unit)
            if outcome.skipped:
                skipped += 1
            elif outcome.failed:
                failed += 1
                tqdm.write(f"{unit.where}: {outcome.status} {outcome.problem}", file=sys.stderr)
            else:
                done += 1
    finally:
        service.store.close()
    print(f"imported {done} unit(s), skipped {skipped} already imported, {failed} failed")
    return 1 if failed else 0
