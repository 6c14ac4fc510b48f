"""A CDA shown to people without a CDA viewer: HTML built element by element from the header and
the sections' narrative, nothing from the document copied that could run in their browser.
"""

from __future__ import annotations

import base64
import binascii
import re

from lxml import etree

from fhir_server.dmp.documents.cda.header import LANGUAGE, attribute_of, find_all, find_one, header_of, text_of
from fhir_server.dmp.documents.cda.model import CdaAuthor, CdaDocument
from fhir_server.dmp.documents.cda.safe_xml import MAX_BYTES, NS, V3, parse_root

# -------------------------------------------------------------------------- rendering

#: Only what CSP allows runs: nothing. Belt and braces, since nothing active is ever written. The
#: page carries it, and the server sends it as a header too (with what only a header can say).
PAGE_CSP = (
    "default-src 'none'; img-src 'none'; style-src 'none'; script-src 'none'; base-uri 'none'; form-action 'none'"
)
#: CDA narrative block elements rendered as the HTML element of the same meaning.
_NARRATIVE_TAGS = {
    "paragraph": "p",
    "item": "li",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "th": "th",
    "td": "td",
    "colgroup": "colgroup",
    "col": "col",
    "sub": "sub",
    "sup": "sup",
    "footnote": "small",
    "linkHtml": "span",
}
_STYLE_TAGS = (("bold", "strong"), ("italics", "em"), ("underline", "u"))
_SPAN = re.compile(r"[1-9][0-9]{0,2}")
_NOT_SHOWN = "[contenu multimédia non affiché]"
#: What XML (hence lxml) cannot hold; only decoded base64 text can bring it into the page.
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def cda_to_html(data: bytes, max_bytes: int = MAX_BYTES) -> str:
    """A CDA as a self-contained HTML page for people: header, then each section's narrative.

    Built element by element in Python (no XSLT): only the elements and attributes written here
    can appear, all text is escaped by the serialiser, and nothing from the document (attributes,
    links, foreign markup, embedded media) is copied through.
    """
    root = parse_root(data, max_bytes)
    doc = header_of(root)
    html = etree.Element("html", lang=_page_language(doc.language))
    head = etree.SubElement(html, "head")
    etree.SubElement(head, "meta", charset="utf-8")
    etree.SubElement(head, "meta", {"http-equiv": "Content-Security-Policy", "content": PAGE_CSP})
    etree.SubElement(head, "title").text = doc.title or doc.type_code[2] or doc.type_code[1]
    body = etree.SubElement(html, "body")
    _render_header(body, doc)
    _render_body(body, root)
    return str(etree.tostring(html, method="html", encoding="unicode", doctype="<!DOCTYPE html>"))


def _page_language(language: str | None) -> str:
    return language if language and LANGUAGE.fullmatch(language) else "fr"


def _render_header(body: etree._Element, doc: CdaDocument) -> None:
    header = etree.SubElement(body, "header")
    etree.SubElement(header, "h1").text = doc.title or doc.type_code[2] or doc.type_code[1]
    facts = etree.SubElement(header, "dl")
    _fact(facts, "Patient", [_patient_line(doc)])
    _fact(facts, "Auteur(s)", [_author_line(author) for author in doc.authors])
    _fact(facts, "Date", [_human_date(doc.effective_time)])
    _fact(facts, "Type", [" — ".join(filter(None, (doc.type_code[2], doc.type_code[1])))])


def _fact(facts: etree._Element, label: str, values: list[str]) -> None:
    values = [value for value in values if value]
    if not values:
        return
    etree.SubElement(facts, "dt").text = label
    for value in values:
        etree.SubElement(facts, "dd").text = value


def _patient_line(doc: CdaDocument) -> str:
    parts = [doc.patient_name.text if doc.patient_name else ""]
    if doc.birth_time:
        parts.append(f"né(e) le {_human_date(doc.birth_time)}")
    if doc.patient_ins:
        parts.append(f"INS {doc.patient_ins[1]}")
    return ", ".join(part for part in parts if part)


def _author_line(author: CdaAuthor) -> str:
    who = author.name.text if author.name else author.device
    parts = [who, author.role[2] if author.role else None, author.organization.name if author.organization else None]
    return ", ".join(part for part in parts if part)


def _human_date(value: str) -> str:
    """A FHIR date/dateTime the French way: 12/03/2020 11:17 (UTC+01:00)."""
    date, _, time = value.partition("T")
    shown = "/".join(reversed(date.split("-")))
    if time:
        shown += f" {time[:5]} (UTC{time[-6:]})"
    return shown


def _render_body(body: etree._Element, root: etree._Element) -> None:
    structured = find_one(root, "component/structuredBody")
    if structured is not None:
        for section in find_all(structured, "component/section"):
            _render_section(body, section, 2)
        return
    text = find_one(root, "component/nonXMLBody/text")
    media_type = (attribute_of(text, "mediaType") or "").strip().lower()
    note = etree.SubElement(body, "p")
    note.text = f"Ce document a un corps non structuré ({media_type or 'type inconnu'})."
    if text is not None and media_type == "text/plain":
        etree.SubElement(body, "pre").text = _plain_text(text)
    else:
        note.text += " Il n'est pas affiché ici."


def _plain_text(text: etree._Element) -> str:
    raw = "".join(text.itertext())
    if (text.get("representation") or "").upper() != "B64":
        return raw
    try:
        decoded = base64.b64decode("".join(raw.split()), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return "[texte illisible : base64 invalide]"
    return _NOT_XML_TEXT.sub("\ufffd", decoded)


def _render_section(parent: etree._Element, section: etree._Element, level: int) -> None:
    wrapper = etree.SubElement(parent, "section")
    title = text_of(find_one(section, "title"))
    if title:
        etree.SubElement(wrapper, f"h{min(level, 6)}").text = title
    text = find_one(section, "text")
    if text is not None:
        _convert_children(text, etree.SubElement(wrapper, "div"))
    for child in find_all(section, "component/section"):
        _render_section(wrapper, child, level + 1)


def _convert_children(source: etree._Element, target: etree._Element) -> None:
    """Copy the content of a narrative element: text, then each child converted, then its tail."""
    _append_text(target, source.text)
    for child in source:
        if isinstance(child.tag, str):
            _convert(child, target)
        _append_text(target, child.tail)


def _append_text(target: etree._Element, text: str | None) -> None:
    if not text:
        return
    if len(target):
        target[-1].tail = (target[-1].tail or "") + text
    else:
        target.text = (target.text or "") + text


def _convert(source: etree._Element, target: etree._Element) -> None:
    """One narrative element. Unknown CDA elements are unwrapped (their text is kept); elements of
    other namespaces (XHTML, XInclude, SVG...) are no narrative and are dropped with their content."""
    qname = etree.QName(source)
    if qname.namespace != V3:
        return
    name = qname.localname
    if name == "br":
        etree.SubElement(target, "br")
    elif name == "list":
        _convert_list(source, target)
    elif name == "table":
        table = etree.SubElement(target, "table", border="1")
        _convert_children(source, table)
    elif name == "content":
        _convert_children(source, etree.SubElement(target, _content_tag(source)))
    elif name == "caption":
        tag = "caption" if target.tag == "table" else "strong"
        _convert_children(source, etree.SubElement(target, tag))
    elif name == "renderMultiMedia":
        _append_text(target, _NOT_SHOWN)
    elif name == "footnoteRef":
        return
    elif name in _NARRATIVE_TAGS:
        _convert_children(source, _element_with_spans(source, target, _NARRATIVE_TAGS[name]))
    else:
        _convert_children(source, target)


def _convert_list(source: etree._Element, target: etree._Element) -> None:
    for caption in source.iterfind("v3:caption", NS):
        _convert_children(caption, etree.SubElement(etree.SubElement(target, "p"), "strong"))
    tag = "ol" if (source.get("listType") or "").strip() == "ordered" else "ul"
    html_list = etree.SubElement(target, tag)
    for item in source.iterfind("v3:item", NS):
        _convert_children(item, etree.SubElement(html_list, "li"))


def _content_tag(source: etree._Element) -> str:
    styles = (source.get("styleCode") or "").lower().split()
    return next((tag for style, tag in _STYLE_TAGS if style in styles), "span")


def _element_with_spans(source: etree._Element, target: etree._Element, tag: str) -> etree._Element:
    """The HTML element; table cells keep colspan/rowspan when they are small positive numbers."""
    element = etree.SubElement(target, tag)
    if tag in ("td", "th"):
        for attribute in ("colspan", "rowspan"):
            value = (source.get(attribute) or "").strip()
            if _SPAN.fullmatch(value):
                element.set(attribute, value)
    return element
