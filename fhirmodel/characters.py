"""The characters FHIR R4 allows in a string (datatypes.html#string): none below U+0020 but tab,
carriage return and line feed.

Input holding one is refused (:mod:`fhir_server.fhir.inbound`); text the server itself copies from a
request into a resource (the trail names the URL it was asked) has them replaced, so that what is
stored can always be served, as XML too (XML 1.0 cannot carry them at all).
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: What stands in for a forbidden character in text the server writes (U+FFFD REPLACEMENT CHARACTER).
REPLACEMENT = "\ufffd"


def forbidden_character(text: str) -> str | None:
    """The first character of ``text`` that FHIR forbids in a string, as ``U+XXXX``; None if none."""
    found = _FORBIDDEN.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def without_forbidden(text: str) -> str:
    """``text`` with every character FHIR forbids replaced by :data:`REPLACEMENT`."""
    return _FORBIDDEN.sub(REPLACEMENT, text)
