"""Telling the patient about emergency accesses to their DMP (R5).

The guard queues a message for every request an emergency access allowed, in the transaction of
its AuditEvent. Here the messages due are grouped by patient, so that a professional's dozen reads
during one emergency make one e-mail, not a dozen. The e-mail goes to the patient's address (their
login account's, else the Patient's ``telecom``: :func:`authz.contacts.contact_email`); a patient
without one cannot be told by this road, which is logged (the accesses stay in the trail they
read). Failures are retried like any delivery; after the last attempt the message is dropped and
the failure logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from authz.contacts import contact_email
from authz.outbox import EMERGENCY_TOPIC, EmergencyEvent
from authz.terms import PROFESSION_SYSTEM, PURPOSE_SYSTEMS
from fhir_server.dmp.alerts.notices import EmergencyAccess, emergency_mail, parse_instant
from fhir_server.dmp.alerts.retry import MAX_ATTEMPTS, Retries, epoch
from fhir_server.runtime.mail import MailError
from storage.interface import Gone, NotFound, Queued, Store
from storage.query import OPEN_SCOPE

if TYPE_CHECKING:
    from fhir_server.dmp.jobs import JobContext

log = logging.getLogger(__name__)

BATCH = 500


def deliver_emergencies(context: JobContext) -> int:
    """Mail what is due of the ``patient-alert`` topic; returns how many accesses were told."""
    store, now = context.service.store, context.clock()
    retries = Retries(store, now)
    by_patient: dict[tuple[str, str], list[tuple[Queued, EmergencyEvent]]] = {}
    for message in store.pending(EMERGENCY_TOPIC, BATCH, now=epoch(now)):
        try:
            event = EmergencyEvent.loads(message.payload)
        except (ValueError, KeyError, TypeError) as exc:  # damaged: set aside, never blocking the rest
            retries.unexpected(message, exc)
            continue
        by_patient.setdefault(event.patient, []).append((message, event))
    told = 0
    for patient, items in by_patient.items():
        try:
            told += _tell(context, retries, patient, items)
        except Exception as exc:  # a damaged message or a bug must not block the other patients
            for message, _ in items:
                retries.unexpected(message, exc)
    return told


def _tell(
    context: JobContext, retries: Retries, patient: tuple[str, str], items: list[tuple[Queued, EmergencyEvent]]
) -> int:
    """One e-mail about a patient's emergency accesses; how many accesses it told."""
    store, terminology = context.service.store, context.service.terminology
    messages = [message for message, _ in items]
    events = ", ".join(f"AuditEvent/{event.audit_event}" for _, event in items)
    accesses = [access for _, event in items if (access := _access(store, event.audit_event)) is not None]
    address = contact_email(store, patient)
    if not accesses or address is None:
        why = "their AuditEvents are gone" if not accesses else "the patient has no e-mail address"
        log.warning("emergency access not mailed: %s (%s)", why, events)
        retries.done(*messages)
        return 0
    mail = emergency_mail(address, accesses, lambda code: terminology.display(PROFESSION_SYSTEM, code))
    try:
        context.mailer.send(mail)
    except MailError as exc:
        given_up = [message for message in messages if retries.failed(message)]
        if given_up:
            log.error("emergency access alert given up after %d attempts (%s): %s", MAX_ATTEMPTS, events, exc)
            retries.done(*given_up)
        return 0
    retries.done(*messages)
    return len(accesses)


def _access(store: Store, audit_event_id: str) -> EmergencyAccess | None:
    """Who reached the DMP, when and how, as the AuditEvent recorded it."""
    try:
        event = store.read("AuditEvent", audit_event_id, OPEN_SCOPE).json()
    except (NotFound, Gone):
        return None
    at = parse_instant(str(event.get("recorded", "")))
    if at is None:
        return None
    user: dict[str, Any] = next((a for a in event.get("agent") or [] if a.get("requestor")), {})
    return EmergencyAccess(
        at=at,
        mode=_code(event.get("purposeOfEvent") or [], PURPOSE_SYSTEMS) or "",
        profession=_code(user.get("role") or [], {PROFESSION_SYSTEM}),
        organization=((user.get("location") or {}).get("identifier") or {}).get("value"),
    )


def _code(concepts: list[dict[str, Any]], systems: set[str] | frozenset[str]) -> str | None:
    for concept in concepts:
        for coding in concept.get("coding") or []:
            if coding.get("system") in systems and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None
