"""Alerts, download and closure: the patient's other choices about the record (R20, R22).

Alerts are the R4 ``Subscription`` the API takes (e-mail channel, this DMP's documents): turned
``off`` and back (``requested``, which the server makes ``active``). The download is the
``$dmp-export`` ZIP, streamed to the browser as the operation produces it, with the parts the
person ticks. Closing is the ``PUT Patient`` CONTRACT §3 describes (``active: false`` and the
closure extension), reopening its reverse; both ask for an explicit confirmation first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, redirect, request, url_for

from authz.authserver.accounts import parse_ins
from authz.authserver.errors import AuthError
from authz.lifecycle import CLOSURE_URL
from fhir_server.dmp.portal.record import RecordError
from fhir_server.dmp.portal.web import notify, page, portal, record, refused, session, signed_in

#: The parts of ``$dmp-export`` (its OperationDefinition's ``part`` values) and their French names.
EXPORT_PARTS = (
    ("documents", "Mes documents"),
    ("authorisations", "Mes autorisations"),
    ("trail", "Mon historique d'accès"),
)
_MAX_ADDRESS = 254


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/alertes", "alerts", alerts, methods=["GET", "POST"])
    bp.add_url_rule("/alertes/<subscription_id>", "alert", alert, methods=["POST"])
    bp.add_url_rule("/telechargement", "download", download, methods=["GET", "POST"])
    bp.add_url_rule("/fermeture", "closure", closure, methods=["GET", "POST"])


@signed_in
def alerts() -> Any:
    """The alerts of this DMP, and a new one (R22)."""
    if request.method == "POST":
        address = request.form.get("adresse", "").strip()[:_MAX_ADDRESS]
        if "@" not in address or any(c in address for c in " ,;<>\r\n"):
            notify("Indiquez une adresse e-mail valide.")
            return redirect(url_for("portal.alerts"))
        subscription = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Alerte « Mon DMP » : nouveau document",
            "criteria": f"DocumentReference?patient=Patient/{session().patient_id}",
            "channel": {"type": "email", "endpoint": f"mailto:{address}"},
        }
        try:
            record().write("POST", "Subscription", subscription)
        except RecordError as exc:
            notify(f"L'alerte n'a pas pu être créée : {exc.message}")
        else:
            notify(f"Alerte activée : un e-mail sera envoyé à {address} à chaque nouveau document.")
        return redirect(url_for("portal.alerts"))
    try:
        found = record().search("Subscription", [("_count", "50")])
    except RecordError as exc:
        return refused(f"Les alertes n'ont pas pu être lues : {exc.message}", exc.status)
    rows = [
        {
            "id": s.get("id"),
            "address": str((s.get("channel") or {}).get("endpoint") or "").removeprefix("mailto:"),
            "active": s.get("status") in ("active", "requested"),
            "status": s.get("status"),
            "error": s.get("error"),
        }
        for s in found.resources
        if (s.get("channel") or {}).get("type") == "email"
    ]
    return page("alerts.html", rows=rows, address=_account_address())


@signed_in
def alert(subscription_id: str) -> Any:
    """One alert turned on or off, or removed."""
    choice = request.form.get("action")
    try:
        if choice == "supprimer":
            record().write("DELETE", f"Subscription/{subscription_id}")
            notify("Alerte supprimée.")
        else:
            subscription, etag = record().resource(f"Subscription/{subscription_id}")
            subscription["status"] = "requested" if choice == "activer" else "off"
            subscription.pop("error", None)
            record().write("PUT", f"Subscription/{subscription_id}", subscription, etag)
            notify("Alerte activée." if choice == "activer" else "Alerte désactivée.")
    except RecordError as exc:
        notify(f"La modification a été refusée : {exc.message}")
    return redirect(url_for("portal.alerts"))


@signed_in
def download() -> Any:
    """R22: the record as a ZIP, with the parts chosen."""
    if request.method == "GET":
        return page("download.html", parts=EXPORT_PARTS)
    known = {name for name, _ in EXPORT_PARTS}
    chosen = [name for name in request.form.getlist("part") if name in known]
    if not chosen:
        return page("download.html", 422, parts=EXPORT_PARTS, error="Cochez au moins une partie à télécharger.")
    try:
        archive = record().download(f"Patient/{session().patient_id}/$dmp-export", [("part", ",".join(chosen))])
    except RecordError as exc:
        return refused(f"Le téléchargement a été refusé : {exc.message}", exc.status)
    headers = {"Content-Disposition": f'attachment; filename="{archive.filename}"'}
    return Response(archive.chunks, content_type=archive.media_type, headers=headers)


@signed_in
def closure() -> Any:
    """R20: close the DMP, or reopen it, once the person confirmed."""
    try:
        patient, etag = record().resource(f"Patient/{session().patient_id}")
    except RecordError as exc:
        return refused(f"Votre DMP n'a pas pu être lu : {exc.message}", exc.status)
    is_open = patient.get("active", True) is not False
    if request.method == "GET":
        return page("closure.html", is_open=is_open)
    if request.form.get("confirmation") != "oui":
        return page("closure.html", 422, is_open=is_open, error="Cochez la case de confirmation pour continuer.")
    others = [e for e in patient.get("extension") or [] if e.get("url") != CLOSURE_URL]
    if is_open:
        motif = request.form.get("motif", "").strip()[:200] or "à la demande du patient"
        today = datetime.now(UTC).date().isoformat()
        closing = {
            "url": CLOSURE_URL,
            "extension": [{"url": "date", "valueDateTime": today}, {"url": "motif", "valueString": motif}],
        }
        changed = {**patient, "active": False, "extension": [*others, closing]}
    else:
        changed = {**patient, "active": True, "extension": others}
        if not others:
            del changed["extension"]
    try:
        record().write("PUT", f"Patient/{session().patient_id}", changed, etag)
    except RecordError as exc:
        return page("closure.html", exc.status, is_open=is_open, error=f"Demande refusée : {exc.message}")
    notify(
        "Votre DMP est fermé. Vous pourrez le rouvrir pendant la durée de conservation."
        if is_open
        else "Votre DMP est rouvert."
    )
    return redirect(url_for("portal.closure"))


def _account_address() -> str:
    """The e-mail address of the signed-in person's account, to suggest for alerts."""
    try:
        account = portal().accounts.book.get(parse_ins(session().subject or ""))
    except AuthError:
        return ""
    return (account.contact.email or "") if account else ""
