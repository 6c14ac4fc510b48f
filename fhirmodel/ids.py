"""The ids the server gives what it creates: resources (R4 3.1.0.8: a create's id is the
server's), and the trail's events."""

from __future__ import annotations

import os
import time
import uuid

_VERSION, _VARIANT = 0x7, 0b10


def new_id() -> str:
    """A time-ordered id: a UUID version 7 (RFC 9562), 48 bits of Unix milliseconds then 74
    random ones. Why not a random UUID: every store keeps an index of ids (and of the references
    to them), and a random id lands on a random page of it — one page more written per new
    resource, most of them read back from disk first once the index outgrows memory — where
    increasing ids fill the same last page. The resource says when it was written anyway
    (``meta.lastUpdated``), so the id tells nothing more; its 74 random bits keep it unguessable."""
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    millis = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    value = (
        (millis << 80) | (_VERSION << 76) | (((rand >> 68) & 0xFFF) << 64) | (_VARIANT << 62) | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))
