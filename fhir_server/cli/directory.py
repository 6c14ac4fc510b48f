"""``dmp-server directory import FILE``: load the national directory of professionals.

FILE is the Annuaire Santé extraction ``PS_LibreAcces_Personne_activite`` (the ``.txt``, or the
``.zip`` ANS distributes it in), or a FHIR Bundle of Practitioner/PractitionerRole (``.json`` or
``.xml``) as the Annuaire Santé FHIR API returns them (:mod:`fhir_server.dmp.directory`). Each
entry is written as ``ADM`` — a token the server signs for the command, as ``dmp-server token``
would — through the same FHIR service as a client's request. A progress bar (``tqdm``, on standard
error) follows the file; the counts are printed at the end, with the first refusals.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from authz.devtoken import make_dev_token
from authz.keys import load_or_create_server_key
from authz.terms import ADMINISTRATION
from authz.tokens import own_issuer
from fhir_server.runtime.config import Config

#: The member of ANS's zip that holds the extraction.
EXTRACTION_PREFIX = "PS_LibreAcces_Personne_activite"
#: The command's token lives this long, and is renewed well before it ends.
TOKEN_SECONDS = 3600
SCOPE = "system/Practitioner.cruds system/PractitionerRole.cruds"


def add_directory_command(subparsers: Any) -> None:
    """Register ``dmp-server directory`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("directory", help="the directory of professionals (Annuaire Santé)")
    actions = parser.add_subparsers(dest="action", required=True)
    load = actions.add_parser(
        "import", help="load an Annuaire Santé extraction (PS_LibreAcces_Personne_activite) or FHIR Bundle"
    )
    load.add_argument("file", type=Path, help="the .txt or .zip extraction, or a .json/.xml Bundle")
    load.add_argument("--format", choices=("auto", "rpps", "fhir"), default="auto", help="auto: by the file's name")
    load.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_directory_command)


def _directory_command(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service
    from fhir_server.dmp.directory.bundles import BundleError
    from fhir_server.dmp.directory.importer import DirectoryImport
    from fhir_server.dmp.directory.rpps import ExtractionError

    path: Path = args.file
    if not path.is_file():
        print(f"dmp-server directory import: no such file {path}", file=sys.stderr)
        return 2
    config = Config.from_env()
    service = create_service(config)
    try:
        importer = DirectoryImport(service, _AdminToken(config))
        try:
            importer.run(_entries(path, args.format, progress=not args.no_progress))
        except (ExtractionError, BundleError, ValueError) as exc:
            print(f"dmp-server directory import: {path}: {exc}", file=sys.stderr)
            return 1
    finally:
        service.store.close()
    outcome = importer.outcome
    print(f"directory import of {path.name}: Practitioner and PractitionerRole {outcome.summary()}")
    for problem in outcome.problems:
        print(f"  refused: {problem}", file=sys.stderr)
    return 1 if outcome.refused else 0


class _AdminToken:
    """An ``ADM`` token signed with the server's key, renewed when half its life is gone."""

    def __init__(self, config: Config):
        self.config = config
        self.key = load_or_create_server_key(config.data_dir)
        self.value = ""
        self.issued = 0.0

    def __call__(self) -> str:
        now = time.time()
        if not self.value or now - self.issued > TOKEN_SECONDS / 2:
            self.value = make_dev_token(
                self.key,
                issuer=own_issuer(self.config.base_url),
                audience=self.config.base_url,
                role=ADMINISTRATION,
                sub="dmp-server directory import",
                scope=SCOPE,
                lifetime_seconds=TOKEN_SECONDS,
            )
            self.issued = now
        return self.value


def _entries(path: Path, kind: str, *, progress: bool) -> Iterator[Any]:
    from fhir_server.dmp.directory.bundles import read_bundle
    from fhir_server.dmp.directory.rpps import read_extraction

    if kind == "auto":
        kind = "fhir" if path.suffix.lower() in (".json", ".xml") else "rpps"
    if kind == "fhir":
        entries = read_bundle(_bundle(path))
        yield from tqdm(entries, desc=path.name, unit="professional", disable=not progress)
        return
    with (
        _extraction(path) as raw,
        tqdm(total=path.stat().st_size, desc=path.name, unit="B", unit_scale=True, disable=not progress) as bar,
    ):
        yield from read_extraction(_counted(io.TextIOWrapper(raw, encoding="utf-8-sig"), bar))


def _bundle(path: Path) -> Any:
    data = path.read_bytes()
    if path.suffix.lower() == ".xml" or data.lstrip()[:1] == b"<":
        from fhir_server.fhir.formats.xml import xml_to_json

        return xml_to_json(data)
    return json.loads(data)


def _extraction(path: Path) -> IO[bytes]:
    """The extraction's bytes: the file, or its member of ANS's zip."""
    if not zipfile.is_zipfile(path):
        return path.open("rb")
    archive = zipfile.ZipFile(path)
    names = [n for n in archive.namelist() if Path(n).name.startswith(EXTRACTION_PREFIX)]
    if not names:
        raise ValueError(f"the zip holds no {EXTRACTION_PREFIX}*.txt")
    return archive.open(names[0])


def _counted(lines: Iterable[str], bar: tqdm[Any]) -> Iterator[str]:
    """The lines, moving the bar by their size (the file's compressed size for a zip: roughly)."""
    for line in lines:
        bar.update(len(line.encode("utf-8")))
        yield line
