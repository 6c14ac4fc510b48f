"""A document's base64 content decoded chunk by chunk.

A document may weigh megabytes; sending it (ITI-68) or writing it into an export decodes it a
chunk at a time rather than building its decoded copy whole, which would hold one more copy in
memory per concurrent download.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator

#: Base64 characters decoded per chunk: a multiple of 4, so every chunk decodes alone (48 KiB).
BASE64_CHUNK = 64 * 1024
_WHITESPACE = re.compile(r"\s")


def compact_base64(encoded: str) -> str:
    """FHIR base64Binary may hold whitespace; chunks must not, or their boundaries drift."""
    return _WHITESPACE.sub("", encoded) if _WHITESPACE.search(encoded) else encoded


def decoded_size(encoded: str) -> int:
    """The decoded length, from the encoded one (Content-Length before any byte is decoded)."""
    if len(encoded) % 4:
        return len(binascii.a2b_base64(encoded))  # not canonical base64: count by decoding
    return len(encoded) // 4 * 3 - encoded[-2:].count("=")


def decoded_chunks(encoded: str) -> Iterator[bytes]:
    """The bytes of compact base64 ``encoded``, chunk by chunk."""
    for start in range(0, len(encoded), BASE64_CHUNK):
        yield binascii.a2b_base64(encoded[start : start + BASE64_CHUNK])
