"""Where the data the server reads at start lives: ``ig/``, ``profiles/`` and ``capability/``.

The folders stay at the top of the repository, where people edit and review them. Two layouts
must work:

* a checkout (tests, ``pip install -e .``): the folders beside the ``fhir_server`` package;
* an installed wheel (``pip install .``): setup.cfg's ``[options.data_files]`` installs them
  under ``<prefix>/share/dmp-server/``. The prefix depends on how pip was run (a venv, ``--user``,
  ``--prefix``...), so the folder is found through the distribution's own list of installed
  files (``importlib.metadata``), which records each file wherever the scheme put it.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "dmp-server"
FOLDERS = ("ig", "profiles", "capability")
#: Where a wheel installs the folders, relative to the installation prefix.
SHARE = ("share", "dmp-server")
#: One file every complete installation holds; its location tells where the others are.
_LANDMARK = ("capability", "CapabilityStatement-dmp-server.json")


class DataFilesMissing(RuntimeError):
    """Neither a checkout nor an installation holds the data folders (a broken install)."""


def _complete(root: Path) -> bool:
    return all((root / folder).is_dir() for folder in FOLDERS)


def _installed_root() -> Path | None:
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    suffix = SHARE + _LANDMARK
    for file in files:
        if file.parts[-len(suffix) :] == suffix:
            located = Path(str(file.locate())).resolve()
            return located.parent.parent
    return None


@functools.cache
def data_root() -> Path:
    """The folder holding ``ig/``, ``profiles/`` and ``capability/``: the checkout this code runs
    from when it has them, else the installed copy."""
    checkout = Path(__file__).resolve().parents[2]
    if _complete(checkout):
        return checkout
    installed = _installed_root()
    if installed is not None and _complete(installed):
        return installed
    raise DataFilesMissing(
        f"the data folders ({', '.join(FOLDERS)}) are neither beside {checkout / 'fhir_server'} nor installed"
        f" under {'/'.join(SHARE)}: reinstall the package (pip install .)"
    )
