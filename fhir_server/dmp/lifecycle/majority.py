"""The ``majority`` job (R7, R8): a minor's legal representatives lose their access at 18.

The access itself needs no job: a ``legal-representative`` Consent ends at its ``period.end``, the
18th birthday, and the policy stops honouring it then (R8), and the patient reads their record
from that day (R7). The job does what surrounds it:

- one month before the 18th birthday, each representative is told (once);
- from the birthday, the representatives' Consents are set ``inactive`` — a new version written
  by the server, with an AuditEvent in the patient's trail — and the patient, now an adult, is
  told they may get their own credentials (their account is set up by the DMP administration or
  the patient login flow, which this job does not do).

Only Consents that end at the majority are concerned: one with no end, or ending on the birthday
or before it. A Consent running past the 18th birthday is a protection measure for an adult
(tutelle, curatelle): it stays, and nobody is told anything.

Work is found by index, never by reading every Patient: the Patients born in the window of
birth dates that matters today (18th birthday within the next month, or reached within the last
:data:`CATCH_UP` days, so that a server stopped for a while catches up), then each one's
Consents by patient. What was sent is remembered in the private records (kind
:data:`NOTICE_KIND`, keyed by the Patient's id, never by an INS since record keys are not
encrypted), so a rerun sends nothing twice; a mail the server could not send is not remembered
and is tried again at the next run; a person with no known address is logged (and looked up
again a day later), which is not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from authz.audit import patient_entity, resource_entity, server_event
from authz.contacts import contact_email
from authz.lifecycle import CLOSED_EVENT
from authz.state import Ident, ins_of, majority_of
from authz.terms import CONSENT_TYPE_SYSTEM, INS_SYSTEMS, REPRESENTATIVE
from fhir_server.runtime.mail import Mail, Mailer, MailError
from fhirmodel.dates import DateFormatError, add_months, add_years, date_range, instant_now, us_to_date
from storage.interface import Store, Stored
from storage.query import ANY_SYSTEM, OPEN_SCOPE, Query, Reference, ReferenceIdentifier, Token, all_of, any_of

if TYPE_CHECKING:
    from fhir_server.dmp.jobs import JobContext

log = logging.getLogger(__name__)

NOTICE_KIND = "majority-notice"
#: How long before the 18th birthday the representatives are told (R8: one month).
NOTICE_MONTHS = 1
#: How long after the 18th birthday the job still finishes what is due (a server stopped for a while).
CATCH_UP = timedelta(days=31)
#: How long to wait before looking again for the address of someone the data gives none for.
NO_CONTACT_RETRY = timedelta(days=1)
#: Patients (or Consents of one patient) read per query page.
PAGE = 500
_REPRESENTATION_ENDS = "représentation légale"


@dataclass(frozen=True)
class Minor:
    """A Patient whose majority falls in the job's window."""

    stored: Stored
    ins: Ident
    majority: date

    @property
    def pid(self) -> str:
        return self.stored.id

    @property
    def name(self) -> str:
        names = self.stored.json().get("name") or [{}]
        first = names[0] if isinstance(names[0], dict) else {}
        return " ".join([*(str(g) for g in first.get("given") or []), str(first.get("family") or "")]).strip()


def majority_job(context: JobContext) -> int:
    """Notices and Consents due today; returns how many mails were sent and Consents ended."""
    moment = context.clock()
    today = moment.date()
    store = context.service.store
    done = 0
    for minor in _minors(context, today):
        ending = _ending_at_majority(store, minor)
        if today < minor.majority:
            if today >= add_months(minor.majority, -NOTICE_MONTHS):
                done += sum(_tell_representative(store, context.mailer, minor, c, moment) for c in ending)
            continue
        if ending:
            done += _end_representation(store, minor, ending, moment, context.service.config.base_url)
        done += _tell_adult(store, context.mailer, minor, moment)
    return done


def _minors(context: JobContext, today: date) -> list[Minor]:
    """Patients whose 18th birthday is within the next month or the last ``CATCH_UP`` days, by a
    search on ``birthdate`` (two days wider on each side for those born on 29 February, then
    judged exactly)."""
    earliest = add_years(today - CATCH_UP, -18) - timedelta(days=2)
    latest = add_years(add_months(today, NOTICE_MONTHS), -18) + timedelta(days=2)
    where = context.service.parser.criteria(
        "Patient", [("birthdate", f"gt{earliest.isoformat()}"), ("birthdate", f"le{latest.isoformat()}")]
    )
    found = []
    offset, watermark = 0, None
    while True:
        query = Query("Patient", where, offset=offset, count=PAGE, total=False, watermark=watermark)
        result = context.service.store.search(query, OPEN_SCOPE)
        for stored in result.matches:
            record = stored.json()
            majority = majority_of(record.get("birthDate"))
            ins = ins_of(record)
            if majority is not None and ins and today - CATCH_UP < majority <= add_months(today, NOTICE_MONTHS):
                found.append(Minor(stored, ins[0], majority))
        if len(result.matches) < PAGE:
            return found
        offset, watermark = offset + PAGE, result.watermark


def _ending_at_majority(store: Store, minor: Minor) -> list[dict[str, Any]]:
    """The patient's active representation Consents that end at the majority (not a measure
    for an adult, which runs past the 18th birthday)."""
    about = any_of(
        ReferenceIdentifier("patient", minor.ins[0], minor.ins[1]), Reference("patient", "Patient", minor.pid)
    )
    where = all_of(
        about, Token("category", CONSENT_TYPE_SYSTEM, REPRESENTATIVE), Token("status", ANY_SYSTEM, "active")
    )
    consents = store.search(Query("Consent", where, count=PAGE, total=False), OPEN_SCOPE).matches
    return [c.json() for c in consents if _ends_by(c.json(), minor.majority)]


def _ends_by(consent: dict[str, Any], majority: date) -> bool:
    end = ((consent.get("provision") or {}).get("period") or {}).get("end")
    if not end:
        return True
    try:
        return us_to_date(date_range(str(end))[0]) <= majority
    except DateFormatError:
        return True  # an unreadable end grants nothing (authz.state): nothing to protect


def _representative(consent: dict[str, Any]) -> tuple[Ident | None, str | None]:
    """The representative a Consent names: their INS, and the actor's display (the last resort
    for an address when it holds one)."""
    for actor in (consent.get("provision") or {}).get("actor") or []:
        reference = actor.get("reference") or {}
        ident = reference.get("identifier") or {}
        if ident.get("system") in INS_SYSTEMS and ident.get("value"):
            return (str(ident["system"]), str(ident["value"])), reference.get("display")
    return None, None


def _tell_representative(store: Store, mailer: Mailer, minor: Minor, consent: dict[str, Any], moment: datetime) -> int:
    key = f"{minor.pid}/representative/{consent['id']}"
    if not _due(store, key, moment, absent=True):
        return 0
    ins, display = _representative(consent)
    address = contact_email(store, ins) if ins else None
    if address is None and isinstance(display, str) and "@" in display:
        address = display.strip()
    day = minor.majority.strftime("%d/%m/%Y")
    whom = f" ({minor.name})" if minor.name else ""
    mail = Mail(
        to=address or "",
        subject=f"DMP : fin de votre {_REPRESENTATION_ENDS} le {day}",
        body=(
            "Bonjour,\n\n"
            f"La personne dont vous êtes le représentant légal{whom} aura 18 ans le {day}. Ce jour-là, votre accès à"
            " son Dossier Médical Partagé (DMP) prendra fin : elle gérera elle-même son dossier.\n\n"
            "Ceci est un message automatique du service DMP."
        ),
    )
    return _send(store, mailer, key, mail, minor, moment, f"Consent/{consent['id']}")


def _end_representation(
    store: Store, minor: Minor, ending: list[dict[str, Any]], moment: datetime, server: str
) -> int:
    """The representatives' Consents become ``inactive`` (a version in the patient's history, an
    AuditEvent in their trail), and the adult's notice is due, in one transaction."""
    with store.transaction():
        for consent in ending:
            store.update({**consent, "status": "inactive"})
            store.create(
                server_event(
                    action="U",
                    lifecycle=CLOSED_EVENT,
                    agent="dmp-server majority job",
                    entities=[patient_entity(minor.ins, minor.pid), resource_entity(f"Consent/{consent['id']}")],
                    description=f"legal representation ended: the patient came of age on {minor.majority} (R8)",
                    recorded=instant_now(),
                    server=server,
                )
            )
        key = f"{minor.pid}/adult"
        if store.get_record(NOTICE_KIND, key) is None:
            _remember(store, key, "pending", minor, moment)
    return len(ending)


def _tell_adult(store: Store, mailer: Mailer, minor: Minor, moment: datetime) -> int:
    key = f"{minor.pid}/adult"
    if not _due(store, key, moment, absent=False):
        return 0
    mail = Mail(
        to=contact_email(store, minor.ins) or "",
        subject="DMP : vous avez 18 ans, votre dossier médical partagé est désormais le vôtre",
        body=(
            "Bonjour,\n\n"
            f"Depuis le {minor.majority.strftime('%d/%m/%Y')}, vos représentants légaux n'ont plus accès à votre"
            " Dossier Médical Partagé (DMP) : vous seul y accédez et décidez qui peut le consulter.\n\n"
            "Pour vous connecter, il vous faut vos propres identifiants : votre compte patient est ouvert par le"
            " service d'administration du DMP, ou à votre première connexion en suivant le parcours de connexion"
            " patient.\n\n"
            "Ceci est un message automatique du service DMP."
        ),
    )
    return _send(store, mailer, key, mail, minor, moment, f"Patient/{minor.pid}")


def _send(store: Store, mailer: Mailer, key: str, mail: Mail, minor: Minor, moment: datetime, about: str) -> int:
    """Send a notice and remember it; with no address, log it and look again later; a mail the
    server could not send is not remembered, so the next run tries again."""
    if not mail.to:
        log.info("majority notice about %s not sent: no e-mail address in the data", about)
        _remember(store, key, "pending", minor, moment, retry=moment + NO_CONTACT_RETRY)
        return 0
    try:
        mailer.send(mail)
    except MailError as exc:
        log.warning("majority notice about %s not sent, retried next run: %s", about, exc)
        return 0
    _remember(store, key, "sent", minor, moment)
    return 1


def _due(store: Store, key: str, moment: datetime, *, absent: bool) -> bool:
    """Whether the notice under ``key`` is still to send (``absent``: whether no record at all
    means it is)."""
    held = store.get_record(NOTICE_KIND, key)
    if held is None:
        return absent
    value = orjson.loads(held[0])
    return value.get("status") != "sent" and value.get("retry", 0) <= moment.timestamp()


def _remember(
    store: Store, key: str, status: str, minor: Minor, moment: datetime, retry: datetime | None = None
) -> None:
    """A notice record, kept until the patient leaves the job's window (then of no use)."""
    value: dict[str, Any] = {"status": status, "at": moment.astimezone(UTC).isoformat()}
    if retry is not None:
        value["retry"] = retry.timestamp()
    forget = datetime.combine(minor.majority + CATCH_UP + timedelta(days=1), datetime.min.time(), UTC)
    store.put_record(NOTICE_KIND, key, orjson.dumps(value), expires=int(forget.timestamp()))
