"""My access history (R17): the AuditEvents of my record, as the trail API gives them to me.

Who (name, profession, establishment), when, what, why (purpose of use; emergencies flagged, R5),
filtered by dates and professional (the user agent named by idNatPs: ``agent:identifier``), and the
logins to my account (DICOM "User Authentication" events, R21). Reading the trail is itself a
request in the trail, as with any client.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from authz.terms import IDNATPS_SYSTEM
from fhir_server.dmp.portal.documents import is_day, page_link
from fhir_server.dmp.portal.record import RecordError
from fhir_server.dmp.portal.shown import LOGIN_EVENT, trail_row
from fhir_server.dmp.portal.web import page, portal, record, refused, session, signed_in

PAGE_SIZE = 20


def add_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/historique", "history", history)


@signed_in
def history() -> Any:
    args = request.args
    params = [("patient.identifier", session().patient_ins or ""), ("_sort", "-date"), ("_count", str(PAGE_SIZE))]
    for name, prefix in (("du", "ge"), ("au", "le")):
        if is_day(args.get(name)):
            params.append(("date", f"{prefix}{args[name]}"))
    professional = args.get("professionnel", "").strip()[:20]
    if professional.isdigit():
        params.append(("agent:identifier", f"{IDNATPS_SYSTEM}|{professional}"))
    if args.get("connexions") == "1":
        params.append(("type", "|".join(LOGIN_EVENT)))
    try:
        found = record().page(args["page"]) if args.get("page") else record().search("AuditEvent", params)
    except RecordError as exc:
        return refused(f"L'historique n'a pas pu être lu : {exc.message}", exc.status)
    terminology = portal().service.terminology
    filters = {name: args.get(name, "") for name in ("du", "au", "professionnel", "connexions")}
    return page(
        "history.html",
        rows=[trail_row(event, terminology, session().subject) for event in found.resources],
        total=found.total,
        filters=filters,
        next_page=page_link("portal.history", found.next, filters),
        previous_page=page_link("portal.history", found.previous, filters),
    )
