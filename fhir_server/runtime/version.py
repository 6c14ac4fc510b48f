"""The installed version of the server (``dmp-server --version``, the start-up banner)."""

from __future__ import annotations

from importlib import metadata

from fhir_server.runtime.datafiles import DISTRIBUTION


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
