"""Sign-in and sign-out (R21), through the same account service as ``{base}/auth/login``.

Identifier and password send a one-time code (e-mail or SMS); the code gives the person's own
tokens, or — with a temporary password — a credential whose only use is choosing a new password.
A legal representative names, at sign-in, the minor they act for: the tokens are bound to that
record (R1) and whether they represent the minor is the policy's decision at every request (R8).
Every refusal shows one message, as the API answers one error: the page never tells whether an
account exists or is locked, only that three failures lock it for 15 minutes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Blueprint, redirect, request, url_for

from authz.actor import parse_ins
from authz.authserver.errors import AuthError
from authz.terms import LEGAL_REPRESENTATIVE, ROLE_SYSTEM
from fhir_server.dmp.portal.record import RecordError
from fhir_server.dmp.portal.sessions import PortalSession
from fhir_server.dmp.portal.shown import person_name
from fhir_server.dmp.portal.web import end_session, keep, page, portal, record, restart, session, signed_in, to_sign_in

_REFUSED = (
    "Identifiant, mot de passe ou code non reconnu. Après trois échecs (mots de passe et codes "
    "confondus), le compte est bloqué pendant 15 minutes, même avec le bon mot de passe."
)


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/connexion", "sign_in", sign_in, methods=["GET", "POST"])
    bp.add_url_rule("/connexion/code", "code", code, methods=["GET", "POST"])
    bp.add_url_rule("/mot-de-passe", "password", password, methods=["GET", "POST"])
    bp.add_url_rule("/deconnexion", "sign_out", sign_out, methods=["POST"])
    bp.add_url_rule("/", "home", home)


def sign_in() -> Any:
    current = session()
    if current.signed_in:
        return redirect(url_for("portal.home"))
    if request.method == "GET":
        return page("sign_in.html")
    form = request.form
    body: dict[str, Any] = {"identifier": form.get("identifier", ""), "password": form.get("password", "")}
    for name in ("patient", "channel"):
        if form.get(name):
            body[name] = form[name].strip()
    if form.get("change_password"):
        body["change_password"] = True
    try:
        sent = portal().accounts.login.start(body)
    except AuthError as exc:
        return page("sign_in.html", exc.status, error=_message(exc), identifier=body["identifier"])
    keep(replace(current, challenge=sent["challenge"], sent_to=sent["sent_to"]))
    return redirect(url_for("portal.code"))


def code() -> Any:
    current = session()
    if current.challenge is None:
        return redirect(url_for("portal.sign_in"))
    if request.method == "GET":
        return page("code.html")
    try:
        answer = portal().accounts.login.verify({"challenge": current.challenge, "code": request.form.get("code", "")})
    except AuthError as exc:
        return page("code.html", exc.status, error=_message(exc))
    if "password_change_token" in answer:
        restart(PortalSession(password_change=answer["password_change_token"]))
        return redirect(url_for("portal.password"))
    return _open(answer)


def _open(tokens: dict[str, Any]) -> Any:
    """Signed in: a new session holding the tokens, bound to the record they are about."""
    grant = portal().accounts.issuer.grant_of(tokens["refresh_token"])
    assert grant is not None  # just issued
    iua = grant.iua
    roles = iua.get("subject_role") or []
    role = next((r.get("code") for r in roles if r.get("system") == ROLE_SYSTEM), None)
    patient = parse_ins(str(iua.get("person_id") or ""))
    assert patient is not None
    restart(
        PortalSession(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            token_expires=portal().clock() + int(tokens["expires_in"]),
            role=role,
            subject=grant.sub,
            patient_ins=f"{patient[0]}|{patient[1]}",
        )
    )
    try:
        found = record().search("Patient", [("identifier", f"{patient[0]}|{patient[1]}")])
    except RecordError as exc:
        who = "de ce patient" if role == LEGAL_REPRESENTATIVE else "de votre DMP"
        return to_sign_in(f"L'accès {who} est refusé : {exc.message}")
    if not found.resources:
        return to_sign_in("Aucun DMP n'existe pour ce patient.")
    held = found.resources[0]
    keep(replace(session(), patient_id=str(held.get("id")), patient_name=person_name(held)))
    return redirect(url_for("portal.home"))


def password() -> Any:
    current = session()
    if current.password_change is None:
        return redirect(url_for("portal.sign_in"))
    if request.method == "GET":
        return page("password.html")
    new, again = request.form.get("new_password", ""), request.form.get("confirmation", "")
    if new != again:
        return page("password.html", 400, error="Les deux mots de passe saisis sont différents.")
    try:
        portal().accounts.login.change_password({"password_change_token": current.password_change, "new_password": new})
    except AuthError as exc:
        if exc.status == 401:
            return to_sign_in("Le délai pour changer le mot de passe est dépassé. Reconnectez-vous.")
        return page("password.html", exc.status, error=_message(exc))
    return to_sign_in("Mot de passe changé. Connectez-vous avec votre nouveau mot de passe.")


def sign_out() -> Any:
    end_session()
    return to_sign_in("Vous êtes déconnecté.")


@signed_in
def home() -> Any:
    return page("home.html")


def _message(exc: AuthError) -> str:
    if exc.error == "invalid_grant":
        return _REFUSED
    if exc.status == 503:
        return "Le code n'a pas pu être envoyé. Réessayez dans quelques minutes."
    return f"Demande incomplète ou invalide : {exc.description}."
