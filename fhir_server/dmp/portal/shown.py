"""FHIR resources as the portal's pages show them: plain rows of French labels.

The names of codes (document types and classes, professions, purposes of use) come from the
terminology loaded from ``ig/`` — the same data the rules read — so a page never carries its own
code list. What a row needs from a resource is read here, once, so the templates only lay it out.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authz.audit import EMERGENCY_EXTENSION
from authz.policy.documents import ARCHIVED_URL
from authz.terms import (
    CONSENT_TYPE_SYSTEM,
    IDNATPS_SYSTEM,
    MASKED_FROM_PROFESSIONALS,
    PROFESSION_SYSTEM,
    PURPOSE_SYSTEMS,
    ROLE_SYSTEM,
    VISIBILITY_SYSTEM,
)
from fhirmodel.terminology import Terminology

#: DICOM "User Authentication": the trail event of a login to the account (authz.authserver.trail).
LOGIN_EVENT = ("http://dicom.nema.org/resources/ontology/DCM", "110114")


def coding_label(terminology: Terminology, concept: dict[str, Any] | None) -> str:
    """A CodeableConcept's French name: the terminology's, else its own text or display, else the code."""
    for coding in (concept or {}).get("coding") or []:
        system, code = coding.get("system"), coding.get("code")
        if system and code:
            return terminology.display(system, code) or coding.get("display") or code
    return str((concept or {}).get("text") or "—")


def day(value: str | None) -> str:
    """A FHIR date or instant as a French date (with the time, when there is one)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if "T" not in value:
        return moment.strftime("%d/%m/%Y")
    return moment.strftime("%d/%m/%Y %H:%M")


def reference_label(reference: dict[str, Any] | None, contained: dict[str, dict[str, Any]]) -> str:
    """Who a Reference names, for people: its display, a contained resource's name, its identifier."""
    if not reference:
        return "—"
    if reference.get("display"):
        return str(reference["display"])
    target = contained.get(str(reference.get("reference") or "").lstrip("#"))
    if target is not None:
        return person_name(target)
    identifier = reference.get("identifier") or {}
    if identifier.get("value"):
        prefix = "RPPS/ADELI " if identifier.get("system") == IDNATPS_SYSTEM else ""
        return f"{prefix}{identifier['value']}"
    return str(reference.get("reference") or "—")


def person_name(resource: dict[str, Any]) -> str:
    """A Practitioner's, Patient's or Organization's name as one line."""
    if resource.get("resourceType") == "Organization":
        return str(resource.get("name") or "—")
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        shown = " ".join(p for p in parts if p)
        if shown:
            return shown
    return "—"


@dataclass(frozen=True)
class DocumentRow:
    id: str
    date: str
    type: str
    category: str
    author: str
    establishment: str
    title: str
    status: str
    masked: bool
    archived: bool
    content_type: str
    binary_id: str | None  # the Binary holding the content, or None when it is inline
    by_patient: bool


def document_row(doc: dict[str, Any], terminology: Terminology, patient_id: str | None) -> DocumentRow:
    contained = {str(c.get("id")): c for c in doc.get("contained") or []}
    authors = doc.get("author") or []
    by_patient = any(a.get("reference") == f"Patient/{patient_id}" for a in authors)
    attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    url = str(attachment.get("url") or "")
    binary_id = url.rsplit("Binary/", 1)[1] if "Binary/" in url else None
    context = doc.get("context") or {}
    establishment = reference_label(doc.get("custodian"), contained) if doc.get("custodian") else "—"
    if establishment == "—" and context.get("facilityType"):
        establishment = coding_label(terminology, context["facilityType"])
    return DocumentRow(
        id=str(doc.get("id")),
        date=day(doc.get("date") or (context.get("period") or {}).get("start")),
        type=coding_label(terminology, doc.get("type")),
        category=coding_label(terminology, (doc.get("category") or [None])[0]),
        author="Vous (patient)" if by_patient else ", ".join(reference_label(a, contained) for a in authors) or "—",
        establishment=establishment,
        title=str(attachment.get("title") or doc.get("description") or ""),
        status=str(doc.get("status") or ""),
        masked=has_label(doc, MASKED_FROM_PROFESSIONALS),
        archived=is_archived(doc),
        content_type=str(attachment.get("contentType") or "application/octet-stream"),
        binary_id=binary_id,
        by_patient=by_patient,
    )


def has_label(doc: dict[str, Any], code: str) -> bool:
    return any(
        c.get("system") == VISIBILITY_SYSTEM and c.get("code") == code
        for label in doc.get("securityLabel") or []
        for c in label.get("coding") or []
    )


def is_archived(doc: dict[str, Any]) -> bool:
    return any(e.get("url") == ARCHIVED_URL and e.get("valueBoolean") is True for e in doc.get("extension") or [])


def inline_content(doc: dict[str, Any]) -> bytes | None:
    attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
    data = attachment.get("data")
    return base64.b64decode(data) if isinstance(data, str) else None


@dataclass(frozen=True)
class ConsentRow:
    id: str
    category: str
    actor: str  # who it names, for people
    actor_id: str | None  # the idNatPs (or other identifier value) it names
    permit: bool
    purpose: str | None
    start: str
    end: str
    etag_version: str | None


def consent_row(consent: dict[str, Any], terminology: Terminology) -> ConsentRow:
    provision = consent.get("provision") or {}
    actors = provision.get("actor") or []
    reference = (actors[0].get("reference") if actors else None) or {}
    purposes = provision.get("purpose") or []
    period = provision.get("period") or {}
    return ConsentRow(
        id=str(consent.get("id")),
        category=consent_category(consent),
        actor=reference_label(reference, {}) if reference else "—",
        actor_id=(reference.get("identifier") or {}).get("value"),
        permit=provision.get("type") != "deny",
        purpose=purposes[0].get("code") if purposes else None,
        start=day(period.get("start") or consent.get("dateTime")),
        end=day(period.get("end")),
        etag_version=(consent.get("meta") or {}).get("versionId"),
    )


def consent_category(consent: dict[str, Any]) -> str:
    for concept in consent.get("category") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == CONSENT_TYPE_SYSTEM:
                return str(coding.get("code"))
    return ""


@dataclass(frozen=True)
class TrailRow:
    when: str
    who: str
    role: str
    profession: str
    establishment: str
    what: str
    action: str
    purpose: str
    outcome: str
    emergency: bool
    login: bool


_ACTIONS = {"C": "création", "R": "lecture", "U": "modification", "D": "suppression", "E": "consultation"}
_OUTCOMES = {"0": "accepté", "4": "refusé", "8": "échec", "12": "échec"}


def trail_row(event: dict[str, Any], terminology: Terminology, me: str | None) -> TrailRow:
    """One event of the trail; ``me`` (the signed-in person's token subject) is shown as « Vous »."""
    agents = [a for a in event.get("agent") or [] if a.get("requestor")] or (event.get("agent") or [{}])[:1]
    user = agents[0] if agents else {}
    codings = [c for role in user.get("role") or [] for c in role.get("coding") or []]
    role = next((c.get("code") for c in codings if c.get("system") == ROLE_SYSTEM), None)
    profession = next((c for c in codings if c.get("system") == PROFESSION_SYSTEM), None)
    purposes = [c for p in event.get("purposeOfEvent") or [] for c in p.get("coding") or []]
    purpose = next((c for c in purposes if c.get("system") in PURPOSE_SYSTEMS), None)
    location = (user.get("location") or {}).get("identifier") or {}
    etype = event.get("type") or {}
    subtypes = [str(s.get("display") or s.get("code")) for s in event.get("subtype") or []]
    return TrailRow(
        when=day(event.get("recorded")),
        who="Vous" if me and user.get("altId") == me else reference_label(user.get("who"), {}),
        role=terminology.display(ROLE_SYSTEM, role) or role or "—" if role else "—",
        profession=(terminology.display(PROFESSION_SYSTEM, str(profession.get("code"))) or str(profession.get("code")))
        if profession
        else "—",
        establishment=str(location.get("value") or "—"),
        what=_what(event.get("entity") or []),
        action=" / ".join([_ACTIONS.get(str(event.get("action")), "—"), *subtypes]),
        purpose=(terminology.display(str(purpose.get("system")), str(purpose.get("code"))) or str(purpose.get("code")))
        if purpose
        else "—",
        outcome=_OUTCOMES.get(str(event.get("outcome")), str(event.get("outcome") or "—")),
        emergency=any(
            e.get("url") == EMERGENCY_EXTENSION and e.get("valueBoolean") for e in event.get("extension") or []
        ),
        login=(etype.get("system"), etype.get("code")) == LOGIN_EVENT,
    )


def _what(entities: list[dict[str, Any]]) -> str:
    """What an event was about: the resources it names besides the patient, or the type a search
    looked through, or else the record itself."""
    targets = [
        str(e["what"]["reference"]).split("/_history")[0]
        for e in entities
        if (e.get("what") or {}).get("reference") and (e.get("what") or {}).get("type") != "Patient"
    ]
    searched = [f"recherche de {e['description']}" for e in entities if e.get("query") and e.get("description")]
    return ", ".join(targets + searched) or "votre dossier"
