"""Names for the files of an export: readable, safe on every file system, with the extension a
desktop opens the document with."""

from __future__ import annotations

import mimetypes
import re
import unicodedata

#: The media types of DMP documents (CI-SIS formats) and their usual extensions; ``mimetypes``
#: answers for the rest, differently across platforms, so the common ones are fixed here.
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/rtf": ".rtf",
    "application/rtf": ".rtf",
    "text/xml": ".xml",
    "application/xml": ".xml",
    "application/hl7-v3+xml": ".xml",  # CDA R2
    "application/json": ".json",
    "application/fhir+json": ".json",
    "application/fhir+xml": ".xml",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/tiff": ".tiff",
    "application/dicom": ".dcm",
    "application/zip": ".zip",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 80


def extension(media_type: str | None) -> str:
    """The extension of a media type (parameters ignored); ``.bin`` when none is known."""
    kind = (media_type or "").split(";")[0].strip().lower()
    if kind in _EXTENSIONS:
        return _EXTENSIONS[kind]
    if kind.endswith("+xml"):
        return ".xml"
    if kind.endswith("+json"):
        return ".json"
    return mimetypes.guess_extension(kind) or ".bin"


def safe_stem(text: str | None, fallback: str) -> str:
    """``text`` as a file name without extension: accents dropped, anything but letters, digits,
    ``.``, ``_`` and ``-`` turned to ``_`` (so no path separator), never starting with a dot, at most
    :data:`MAX_STEM` characters; ``fallback`` when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE.sub("_", ascii_text).strip("._-")[:MAX_STEM].strip("._-")
    return stem or fallback
