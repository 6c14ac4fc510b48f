"""Secret files in the data directory (signing key, master keys): written so that they are never
readable by others, never half-written, and never silently replaced by a concurrent first start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_secret_file(path: Path, content: bytes, *, replace: bool) -> bool:
    """Write ``content`` to ``path`` atomically with mode 0600; False if it exists and not ``replace``.

    ``mkstemp`` creates the file 0600 from the start, so the secret is never readable by others,
    not even briefly; the file is complete and synced before it gets its final name, and the
    directory is synced so that the name survives a crash.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        elif not _link_new(tmp, path):
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> bool:
    """Give ``tmp`` the name ``path`` atomically, never replacing an existing file.

    A hard link is atomic and refuses an existing target; on file systems without hard links,
    ``os.replace`` after a last existence check is the closest equivalent.
    """
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        if path.exists():
            return False
        os.replace(tmp, path)
        return True


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: it lives in the directory, not in the file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
