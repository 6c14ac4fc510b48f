"""Reading an untrusted XML document safely: no DTD, no entities, no network, bounded size and
depth, the encoding detected before anything is parsed (XXE, billion laughs, deep nesting are
refused fast, with a message safe to send back).
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

from fhir_server.dmp.documents.cda.model import CdaError, NotClinicalDocument

V3 = "urn:hl7-org:v3"
NS = {"v3": V3}
_CLINICAL_DOCUMENT = f"{{{V3}}}ClinicalDocument"

#: Larger documents are refused before anything is parsed (ITI-65 bodies are bounded anyway).
MAX_BYTES = 20 * 1024 * 1024
#: Real CI-SIS documents stay below 20 levels; libxml2 itself stops at 256 without huge_tree.
MAX_DEPTH = 128
#: Whether an element is nested deeper than MAX_DEPTH (XPath steps from the document node).
_TOO_DEEP = etree.XPath("boolean(" + "/*" * (MAX_DEPTH + 1) + ")")

# No DTD is ever loaded or entity resolved; PIs (xml-stylesheet, oxygen) and comments are noise.
_PARSER_OPTIONS: dict[str, bool] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_pis": True,
    "remove_comments": True,
}
#: A DTD is the doorway to entity attacks; CDA R2 documents never have one. Searched in the
#: decoded text, so that UTF-16 or UTF-32 spellings are found too.
_DTD_MARKUP = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml\s.*?\?>", re.DOTALL)
_DECLARED_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]{1,40})[\"']")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: How an XML document without a byte order mark starts in the wider encodings (XML 1.0 App. F).
_UNMARKED_STARTS = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)
#: Encodings a declaration may name when the document starts as ASCII (codecs' canonical names).
_ASCII_COMPATIBLE = frozenset({"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"})


# -------------------------------------------------------------------------- safe parsing


def parse_root(data: bytes, max_bytes: int) -> etree._Element:
    """The ClinicalDocument element of untrusted bytes; every failure is a CdaError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CdaError("the CDA must be given as bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise CdaError(f"the CDA is larger than {max_bytes} bytes")
    if not data.strip():
        raise CdaError("the CDA is empty")
    text = _decode(data)
    if _DTD_MARKUP.search(text):
        raise CdaError("DOCTYPE and ENTITY declarations are not allowed in a CDA")
    # libxml2 reads exactly the text checked above: UTF-8, the declaration (and its encoding) gone.
    declaration = _XML_DECLARATION.match(text)
    if declaration:
        text = "\n" * declaration.group().count("\n") + text[declaration.end() :]
    root = _parsed(text.encode("utf-8"))
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise CdaError("DOCTYPE and ENTITY declarations are not allowed in a CDA")
    return root


def _decode(data: bytes) -> str:
    """The document's text, decoded the way its byte order mark, first bytes or declaration say."""
    encoding = _detect_encoding(data)
    for bom, name in _BOMS:
        if name == encoding and data.startswith(bom):
            data = data[len(bom) :]
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise CdaError(f"the CDA is not valid {encoding.upper()}") from None


def _detect_encoding(data: bytes) -> str:
    """XML 1.0 Appendix F autodetection; a declared encoding is honoured only among the few
    ASCII-compatible ones a CDA uses, so that no exotic decoder can hide a DOCTYPE."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    for start, name in _UNMARKED_STARTS:
        if data.startswith(start):
            return name
    declared = _DECLARED_ENCODING.match(data)
    if declared is None:
        return "utf-8"
    label = declared.group(1).decode("ascii")
    try:
        encoding = codecs.lookup(label).name
    except LookupError:
        encoding = ""
    if encoding not in _ASCII_COMPATIBLE:
        raise CdaError(f"XML declaration: encoding {label!r} is not supported (use UTF-8)")
    return encoding


def _parsed(payload: bytes) -> etree._Element:
    """The document's root, checked. libxml2 builds the tree in one call and, with ``huge_tree``
    off, stops reading at the 257th level of nesting; the tighter depth CDA allows and the root's
    name are checked on the tree. (An event-driven parse checked both as elements opened: it cost
    2.7 times as much, 480 µs against 180 for the bench's 10 KB CDA, to stop early only a document
    of the wrong kind or one nested 129 to 256 levels, whose parse costs no more than that of a
    valid document of its size.)"""
    try:
        root = etree.fromstring(payload, etree.XMLParser(**_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from exc
    except (etree.LxmlError, ValueError) as exc:
        raise CdaError("the CDA could not be parsed as XML") from exc
    if root.tag != _CLINICAL_DOCUMENT:
        raise NotClinicalDocument(f"the root element is {shorten(str(root.tag))}, not ClinicalDocument in {V3}")
    if _TOO_DEEP(root):
        raise CdaError(f"the CDA is nested deeper than {MAX_DEPTH} levels")
    return root


def _syntax_error(exc: etree.XMLSyntaxError) -> CdaError:
    """libxml2's complaint about the client's own document, with its position; nothing else."""
    message = str(exc.msg or exc)
    if "depth" in message.lower():
        return CdaError(f"the CDA is nested deeper than {MAX_DEPTH} levels")
    where = f"line {exc.lineno}, column {exc.offset}" if exc.lineno else "somewhere"
    reason = re.sub(r", line \d+, column \d+$", "", message)
    return CdaError(f"the CDA is not well-formed XML ({where}): {shorten(reason)}")


def shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
