"""Who may see my DMP: the patient's decisions, as the Consents CONTRACT §4 describes (R3–R6, R16).

Authorised professionals (``access``, found in the directory by name or idNatPs; renewed for a
year, revoked by deletion), blocked ones (``block``), the médecin traitant (``medecin-traitant``,
one Consent whose actor changes), the two emergency settings (``emergency-access``, turned to
``deny`` to oppose) and, read only, the legal representatives. Each change is one FHIR write with
the person's token, judged by the policy like any client's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, redirect, request, url_for

from authz.consents import DEFAULT_GRANT, new_consent
from authz.terms import (
    ACCESS,
    BLOCK,
    BREAK_THE_GLASS,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    MEDECIN_TRAITANT,
    PROFESSION_SYSTEM,
    REGULATION_CENTRE,
    REPRESENTATIVE,
)
from fhir_server.dmp.portal.record import RecordError
from fhir_server.dmp.portal.shown import ConsentRow, consent_category, consent_row, person_name
from fhir_server.dmp.portal.web import notify, page, portal, record, refused, session, signed_in

#: The longest directory query the page sends on (a name or an idNatPs).
_MAX_QUERY = 100


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/acces", "sharing", sharing)
    bp.add_url_rule("/acces/autoriser", "grant", grant, methods=["POST"])
    bp.add_url_rule("/acces/bloquer", "block", block, methods=["POST"])
    bp.add_url_rule("/acces/medecin-traitant", "designate", designate, methods=["POST"])
    bp.add_url_rule("/acces/urgence", "emergency", emergency, methods=["POST"])
    bp.add_url_rule("/acces/<consent_id>/renouveler", "renew", renew, methods=["POST"])
    bp.add_url_rule("/acces/<consent_id>/retirer", "withdraw", withdraw, methods=["POST"])


@signed_in
def sharing() -> Any:
    try:
        consents = _consents()
    except RecordError as exc:
        return refused(f"Les autorisations n'ont pas pu être lues : {exc.message}", exc.status)
    terminology = portal().service.terminology
    rows = _named([consent_row(c, terminology) for c in consents])
    query = request.args.get("recherche", "").strip()[:_MAX_QUERY]
    found = _directory(query) if query else None
    by_category: dict[str, list[ConsentRow]] = {}
    for row in rows:
        by_category.setdefault(row.category, []).append(row)
    emergency = {row.purpose: row for row in by_category.get(EMERGENCY_ACCESS, [])}
    return page(
        "sharing.html",
        granted=by_category.get(ACCESS, []),
        blocked=by_category.get(BLOCK, []),
        doctor=next(iter(by_category.get(MEDECIN_TRAITANT, [])), None),
        representatives=by_category.get(REPRESENTATIVE, []),
        emergency=[
            (BREAK_THE_GLASS, "Accès en urgence (« bris de glace »)", emergency.get(BREAK_THE_GLASS)),
            (
                REGULATION_CENTRE,
                "Accès par le médecin régulateur du centre 15 (SAMU)",
                emergency.get(REGULATION_CENTRE),
            ),
        ],
        query=query,
        found=found,
    )


@signed_in
def grant() -> Any:
    """R3: authorise a professional of the directory for a year."""
    return _new(ACCESS, "autorisé(e) à consulter votre DMP pendant un an")


@signed_in
def block() -> Any:
    """R4: block a professional, emergencies included."""
    return _new(BLOCK, "bloqué(e) : cette personne ne peut plus accéder à votre DMP, même en urgence")


@signed_in
def designate() -> Any:
    """R6: the médecin traitant is one Consent; changing doctor changes its actor."""
    professional = _professional(request.form.get("idnatps", ""))
    if professional is None:
        return _back("Ce professionnel n'est pas dans l'annuaire.")
    try:
        current = [c for c in _consents() if consent_category(c) == MEDECIN_TRAITANT]
        if current:
            consent = current[0]
            consent["provision"]["actor"] = _actor(professional)
            record().write("PUT", f"Consent/{consent['id']}", consent)
        else:
            consent = _consent(MEDECIN_TRAITANT, professional)
            record().write("POST", "Consent", consent)
    except RecordError as exc:
        return _back(f"Désignation refusée : {exc.message}")
    return _back(f"{professional[1]} est désormais votre médecin traitant DMP.")


@signed_in
def emergency() -> Any:
    """R5: allow or oppose the emergency access of one purpose."""
    purpose = request.form.get("motif", "")
    allow = request.form.get("autoriser") == "1"

    def change(consent: dict[str, Any]) -> None:
        consent["provision"]["type"] = "permit" if allow else "deny"

    setting = [
        c
        for c in _safe_consents()
        if consent_category(c) == EMERGENCY_ACCESS
        and [p.get("code") for p in c.get("provision", {}).get("purpose", [])] == [purpose]
    ]
    if not setting:
        return _back("Ce réglage n'existe pas dans votre DMP.")
    done = "autorisé" if allow else "refusé (opposition enregistrée)"
    return _change(setting[0]["id"], change, f"Accès en urgence {done}.")


@signed_in
def renew(consent_id: str) -> Any:
    """R3: a grant renewed for a year from today."""

    def change(consent: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        consent["provision"]["period"] = {"start": _instant(now), "end": _instant(now + DEFAULT_GRANT)}

    return _change(consent_id, change, "Autorisation renouvelée pour un an.")


@signed_in
def withdraw(consent_id: str) -> Any:
    """Revoke a grant, lift a block, end a médecin traitant designation: the Consent is deleted."""
    try:
        record().write("DELETE", f"Consent/{consent_id}")
    except RecordError as exc:
        return _back(f"Retrait refusé : {exc.message}")
    return _back("Décision retirée.")


def _new(category: str, done: str) -> Any:
    professional = _professional(request.form.get("idnatps", ""))
    if professional is None:
        return _back("Ce professionnel n'est pas dans l'annuaire.")
    try:
        record().write("POST", "Consent", _consent(category, professional))
    except RecordError as exc:
        return _back(f"Demande refusée : {exc.message}")
    return _back(f"{professional[1]} : {done}.")


def _change(consent_id: str, change: Callable[[dict[str, Any]], None], done: str) -> Any:
    try:
        consent, etag = record().resource(f"Consent/{consent_id}")
        change(consent)
        record().write("PUT", f"Consent/{consent_id}", consent, etag)
    except RecordError as exc:
        return _back(f"Modification refusée : {exc.message}")
    return _back(done)


def _consent(category: str, professional: tuple[str, str]) -> dict[str, Any]:
    system, _, value = (session().patient_ins or "").partition("|")
    now = datetime.now(UTC)
    consent = new_consent(
        category,
        (system, value),
        now,
        permit=category != BLOCK,
        actor=(IDNATPS_SYSTEM, professional[0]),
        until=now + DEFAULT_GRANT if category == ACCESS else None,
    )
    consent["provision"]["actor"] = _actor(professional)
    return consent


def _actor(professional: tuple[str, str]) -> list[dict[str, Any]]:
    """The professional as a Consent actor: by idNatPs, named for the patient who reads it later."""
    base = new_consent(ACCESS, ("", ""), datetime.now(UTC), actor=(IDNATPS_SYSTEM, professional[0]))
    actors: list[dict[str, Any]] = base["provision"]["actor"]
    actors[0]["reference"]["display"] = professional[1]
    return actors


def _consents() -> list[dict[str, Any]]:
    found = record().search("Consent", [("patient:identifier", session().patient_ins or ""), ("_count", "200")])
    return found.resources


def _safe_consents() -> list[dict[str, Any]]:
    try:
        return _consents()
    except RecordError:
        return []


def _directory(query: str) -> list[dict[str, str]] | None:
    """Professionals of the directory by idNatPs (digits) or by name."""
    params = [("identifier", f"{IDNATPS_SYSTEM}|{query}")] if query.isdigit() else [("name", query)]
    return _directory_search(params)


def _directory_search(params: list[tuple[str, str]]) -> list[dict[str, str]] | None:
    try:
        found = record().search("Practitioner", [*params, ("_count", "50")])
    except RecordError:
        return None
    terminology = portal().service.terminology
    shown = []
    for practitioner in found.resources:
        idnatps = next(
            (i.get("value") for i in practitioner.get("identifier") or [] if i.get("system") == IDNATPS_SYSTEM), None
        )
        if not idnatps:
            continue
        professions = [
            terminology.display(PROFESSION_SYSTEM, str(c.get("code"))) or str(c.get("code"))
            for q in practitioner.get("qualification") or []
            for c in (q.get("code") or {}).get("coding") or []
            if c.get("system") == PROFESSION_SYSTEM
        ]
        shown.append({"idnatps": idnatps, "name": person_name(practitioner), "profession": ", ".join(professions)})
    return shown


def _named(rows: list[ConsentRow]) -> list[ConsentRow]:
    """Rows whose Consent names a professional by idNatPs only (the creating doctor's grant, R16)
    get the directory's name for them: one search for all of them."""
    unnamed = sorted({row.actor_id for row in rows if row.actor_id and row.actor.endswith(row.actor_id)})
    if not unnamed:
        return rows
    query = ",".join(f"{IDNATPS_SYSTEM}|{idnatps}" for idnatps in unnamed)
    names = {p["idnatps"]: p["name"] for p in _directory_search([("identifier", query)]) or []}
    return [replace(row, actor=names[row.actor_id]) if row.actor_id in names else row for row in rows]


def _professional(idnatps: str) -> tuple[str, str] | None:
    """``(idNatPs, name)`` of a professional the directory holds."""
    idnatps = idnatps.strip()
    if not idnatps.isdigit():
        return None
    found = _directory(idnatps) or []
    return (idnatps, found[0]["name"]) if found else None


def _back(message: str) -> Any:
    notify(message)
    return redirect(url_for("portal.sharing"))


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
