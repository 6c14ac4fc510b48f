"""A ZIP archive produced as it is sent, never whole in memory.

``zipfile`` writes to a sink that cannot seek (so each member carries a data descriptor after its
data instead of sizes patched in afterwards); after every chunk written, what the compressor has
produced so far is handed on. Memory then holds one member's current chunk and the compressor's
window, whatever the archive's size. Each member's size and SHA-256 are measured on the way, for
the closing member (a manifest) that lists them.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class _Sink(io.RawIOBase):
    """Where ``zipfile`` writes: keeps the bytes until the stream takes them. It tells its offset
    (``zipfile`` records where members start) and refuses to seek (``zipfile`` then streams)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._offset = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._offset += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._offset

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


@dataclass(frozen=True)
class Member:
    """A file to put in the archive: its path, its bytes as they come, and what the manifest says
    of it besides size and hash (asked once the bytes are written: a count may grow with them)."""

    path: str
    chunks: Iterable[bytes]
    describe: Callable[[], dict[str, Any]] = dict


@dataclass(frozen=True)
class Written:
    """A member once in the archive."""

    path: str
    size: int
    sha256: str
    description: dict[str, Any]


def stream_zip(
    members: Iterable[Member], closing: Callable[[list[Written]], Member], moment: datetime
) -> Iterator[bytes]:
    """The archive of ``members`` then of ``closing`` (made from what was written), as chunks.

    Members are produced lazily: a member's bytes are read only when the archive reaches it.
    """
    sink = _Sink()
    written: list[Written] = []
    stamp = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            digest, size = hashlib.sha256(), 0
            info = zipfile.ZipInfo(member.path, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as out:
                for chunk in member.chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if produced := sink.take():
                        yield produced
            written.append(Written(member.path, size, digest.hexdigest(), member.describe()))
        last = closing(written)
        info = zipfile.ZipInfo(last.path, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, b"".join(last.chunks))
    yield sink.take()
