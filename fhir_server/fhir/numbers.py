"""Whole numbers clients write in URLs and headers (``_count``, version ids, paging offsets, ETags).

Why one place: ``str.isdigit`` admits characters ``int`` refuses (``"²"``), and ``int`` makes
numbers no store column holds (``_history/99999999999999999999``). Here a number is ASCII digits
only, and one beyond what the store can hold stands for "more than anything stored", which every
use of it answers correctly (no such version, an empty page, the largest page allowed).
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
#: The largest integer the store holds (a signed 64-bit SQLite INTEGER).
LARGEST = 2**63 - 1


def natural(text: str) -> int | None:
    """The non-negative integer ``text`` writes in ASCII digits, at most :data:`LARGEST`; None when
    it is not one."""
    if not _DIGITS.fullmatch(text):
        return None
    return LARGEST if len(text) > 19 else min(int(text), LARGEST)
