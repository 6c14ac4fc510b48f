"""Who runs a command: the operator's login, as the trail names them (purge, import)."""

from __future__ import annotations

import getpass


def operator() -> str:
    """The login of whoever runs the command line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an unknown operator"
