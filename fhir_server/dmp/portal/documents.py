"""My documents: the list, one document, its content, masking (R18), archiving (R19), and adding
my own (R15, class 90).

What is hidden from the person (R12, R13) never reaches these pages: the searches and reads are
theirs, filtered by the policy like any client's. Opening a document reads it — and its Binary —
with their token, so the opening is in their trail too. A CDA is shown as the server renders CDA
for people (the Binary page the documents capability registers in the service's extensions), in
a sandboxed frame; other content is sent as it is, under a policy that lets nothing in it run as
the portal.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, redirect, request, url_for

from authz.policy.documents import ARCHIVED_URL
from authz.terms import CONFIDENTIALITY_SYSTEM, MASKED_FROM_PROFESSIONALS, PATIENT_DOCUMENT_CLASS, VISIBILITY_SYSTEM
from fhir_server.dmp.portal.record import RecordError
from fhir_server.dmp.portal.shown import DocumentRow, coding_label, document_row, inline_content
from fhir_server.dmp.portal.web import notify, page, portal, record, refused, session, signed_in
from fhir_server.fhir.service import NotShown
from fhirmodel.base64_chunks import compact_base64

PAGE_SIZE = 10
#: What a patient may add: documents a browser shows as they are, and that carry no active content.
UPLOAD_TYPES = ("application/pdf", "image/jpeg", "image/png", "text/plain")
#: Other content: never run as the portal, framed by the portal only. A PDF is left out of the
#: sandbox, where Chromium's viewer does not open; it runs no script of the portal's origin anyway.
_CONTENT_POLICY = "sandbox; default-src 'none'; img-src 'self'; frame-ancestors 'self'"
_PDF_POLICY = "default-src 'none'; frame-ancestors 'self'"


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/documents", "documents", documents)
    bp.add_url_rule("/documents/ajouter", "add_document", add_document, methods=["GET", "POST"])
    bp.add_url_rule("/documents/<doc_id>", "document", document)
    bp.add_url_rule("/documents/<doc_id>/contenu", "content", content)
    bp.add_url_rule("/documents/<doc_id>/masquage", "mask", mask, methods=["POST"])
    bp.add_url_rule("/documents/<doc_id>/archivage", "archive", archive, methods=["POST"])


@signed_in
def documents() -> Any:
    args = request.args
    classes = _classes()
    params = [("patient", f"Patient/{session().patient_id}"), ("_sort", "-date"), ("_count", str(PAGE_SIZE))]
    if args.get("categorie") in {value for value, _ in classes}:
        params.append(("category", args["categorie"]))
    for name, prefix in (("du", "ge"), ("au", "le")):
        if is_day(args.get(name)):
            params.append(("date", f"{prefix}{args[name]}"))
    if args.get("archives") == "exclure":
        params.append(("archived", "false"))
    try:
        found = record().page(args["page"]) if args.get("page") else record().search("DocumentReference", params)
    except RecordError as exc:
        return refused(f"La liste des documents n'a pas pu être lue : {exc.message}", exc.status)
    terminology = portal().service.terminology
    rows = [document_row(doc, terminology, session().patient_id) for doc in found.resources]
    filters = {name: args.get(name, "") for name in ("categorie", "du", "au", "archives")}
    return page(
        "documents.html",
        rows=rows,
        total=found.total,
        classes=classes,
        filters=filters,
        next_page=page_link("portal.documents", found.next, filters),
        previous_page=page_link("portal.documents", found.previous, filters),
    )


@signed_in
def document(doc_id: str) -> Any:
    row = _row(doc_id)
    if isinstance(row, tuple):
        return row
    return page("document.html", doc=row, kind=_kind(row.content_type))


@signed_in
def content(doc_id: str) -> Any:
    """The document's content: a CDA as a page, anything else as it is."""
    try:
        doc, _ = record().resource(f"DocumentReference/{doc_id}")
        data = inline_content(doc)
        row = document_row(doc, portal().service.terminology, session().patient_id)
        media_type = row.content_type
        if data is None and row.binary_id:
            binary, _ = record().resource(f"Binary/{row.binary_id}")
            media_type = str(binary.get("contentType") or media_type)
            data = base64.b64decode(compact_base64(binary.get("data") or ""))
    except (RecordError, binascii.Error) as exc:
        status = exc.status if isinstance(exc, RecordError) else 422
        return refused("Ce document n'est pas disponible.", status)
    if data is None:
        return refused("Ce document n'a pas de contenu lisible ici.", 404)
    renderer = portal().service.extensions.binary_page
    if renderer is not None:
        try:
            html = renderer.render(media_type, data)
        except NotShown:
            pass  # not a CDA: sent as it is, below
        else:
            policy = f"sandbox; {renderer.policy}; frame-ancestors 'self'"
            return Response(html, content_type="text/html; charset=utf-8", headers=_framed(policy))
    policy = _PDF_POLICY if media_type == "application/pdf" else _CONTENT_POLICY
    headers = _framed(policy)
    if _kind(media_type) == "other":
        headers["Content-Disposition"] = "attachment"
    return Response(data, content_type=media_type, headers=headers)


@signed_in
def mask(doc_id: str) -> Any:
    """R18: MASQUE_PS on or off; the rest of the document is sent back as read."""
    hide = request.form.get("masquer") == "1"

    def change(doc: dict[str, Any]) -> None:
        labels = [
            label
            for label in doc.get("securityLabel") or []
            if not any(
                c.get("system") == VISIBILITY_SYSTEM and c.get("code") == MASKED_FROM_PROFESSIONALS
                for c in label.get("coding") or []
            )
        ]
        if hide:
            labels.append({"coding": [{"system": VISIBILITY_SYSTEM, "code": MASKED_FROM_PROFESSIONALS}]})
        doc["securityLabel"] = labels

    done = "masqué aux professionnels" if hide else "de nouveau visible des professionnels autorisés"
    return _update(doc_id, change, f"Document {done}.")


@signed_in
def archive(doc_id: str) -> Any:
    """R19: the archived flag on or off."""
    archived = request.form.get("archiver") == "1"

    def change(doc: dict[str, Any]) -> None:
        others = [e for e in doc.get("extension") or [] if e.get("url") != ARCHIVED_URL]
        doc["extension"] = [*others, {"url": ARCHIVED_URL, "valueBoolean": True}] if archived else others
        if not doc["extension"]:
            del doc["extension"]

    return _update(doc_id, change, "Document archivé." if archived else "Document désarchivé.")


@signed_in
def add_document() -> Any:
    """R15: a document of the patient's own, of class 90, authored by the Patient."""
    types = _patient_types()
    if request.method == "GET":
        return page("add_document.html", types=types, upload_types=UPLOAD_TYPES)
    upload = request.files.get("fichier")
    chosen = request.form.get("type", "")
    title = request.form.get("titre", "").strip()[:200]
    problems = []
    if upload is None or not upload.filename:
        problems.append("Choisissez un fichier.")
    elif upload.mimetype not in UPLOAD_TYPES:
        problems.append("Ce type de fichier n'est pas accepté (PDF, JPEG, PNG ou texte).")
    if chosen not in {value for value, _ in types}:
        problems.append("Choisissez le type du document.")
    if not title:
        problems.append("Donnez un titre au document.")
    if problems or upload is None:
        return page("add_document.html", 422, types=types, upload_types=UPLOAD_TYPES, errors=problems)
    data = upload.read()
    system, _, code = chosen.partition("|")
    classes = portal().kinds.class_of(system, code)
    patient = f"Patient/{session().patient_id}"
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": system, "code": code}]},
        "category": [{"coding": [{"system": s, "code": c}]} for s, c in sorted(classes)],
        "subject": {"reference": patient},
        "date": now,
        "author": [{"reference": patient}],
        "description": title,
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": "N"}]}],
        "content": [
            {"attachment": {"contentType": upload.mimetype, "title": title, "data": base64.b64encode(data).decode()}}
        ],
    }
    try:
        created = record().write("POST", "DocumentReference", doc)
    except RecordError as exc:
        return page("add_document.html", exc.status, types=types, upload_types=UPLOAD_TYPES, errors=[exc.message])
    notify("Document ajouté à votre DMP.")
    new_id = created.get("id")
    return redirect(url_for("portal.document", doc_id=new_id) if new_id else url_for("portal.documents"))


def _update(doc_id: str, change: Any, done: str) -> Any:
    try:
        doc, etag = record().resource(f"DocumentReference/{doc_id}")
        change(doc)
        record().write("PUT", f"DocumentReference/{doc_id}", doc, etag)
    except RecordError as exc:
        notify(f"La modification a été refusée : {exc.message}")
    else:
        notify(done)
    return redirect(url_for("portal.document", doc_id=doc_id))


def _row(doc_id: str) -> DocumentRow | tuple[str, int]:
    try:
        doc, _ = record().resource(f"DocumentReference/{doc_id}")
    except RecordError as exc:
        return refused("Ce document n'existe pas ou ne vous est pas accessible.", exc.status)
    return document_row(doc, portal().service.terminology, session().patient_id)


def _classes() -> list[tuple[str, str]]:
    """The DMP document classes, as ``(system|code, name)`` for the filter."""
    terminology = portal().service.terminology
    return sorted(
        (
            (f"{s}|{c}", coding_label(terminology, {"coding": [{"system": s, "code": c}]}))
            for s, c in portal().kinds.classes
        ),
        key=lambda item: item[1],
    )


def _patient_types() -> list[tuple[str, str]]:
    """The document types of class 90 (the patient's own, R15), from the type → class map."""
    codes = portal().kinds
    found = [
        (f"{s}|{c}", _name(s, c))
        for s, c in codes.types
        if any(code == PATIENT_DOCUMENT_CLASS for _, code in codes.class_of(s, c))
    ]
    return sorted(found, key=_by_name)


def _name(system: str, code: str) -> str:
    return coding_label(portal().service.terminology, {"coding": [{"system": system, "code": code}]})


def _by_name(item: tuple[str, str]) -> str:
    return item[1]


def _kind(media_type: str) -> str:
    """How a page shows content of this type: in a frame (a CDA, rendered by the server's Binary
    page, or text), as an image, or behind a link."""
    if media_type.split(";")[0].strip().endswith(("/xml", "+xml")):
        return "cda"
    if media_type.startswith("image/"):
        return "image"
    if media_type == "application/pdf":
        return "pdf"
    if media_type == "text/plain":
        return "text"
    return "other"


def _framed(policy: str) -> dict[str, str]:
    return {"Content-Security-Policy": policy, "X-Frame-Options": "SAMEORIGIN"}


def page_link(endpoint: str, query: str | None, filters: dict[str, str]) -> str | None:
    """A link to another page of a list: the server's paging query (opaque), the filters kept."""
    if not query:
        return None
    kept = "".join(f"&{name}={quote(value)}" for name, value in filters.items() if value)
    return f"{url_for(endpoint)}?page={quote(query)}{kept}"


def is_day(value: str | None) -> bool:
    if not value:
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True
