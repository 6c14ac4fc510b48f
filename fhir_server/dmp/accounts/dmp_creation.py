"""The patient creates their DMP with a creation code (R20, CONTRACT §3), and their account.

The DMP is created *through the FHIR service*, as a ``POST Patient`` by the patient themselves
(a short-lived token for their INS, signed by the server), so that exactly what applies to any
creation applies here: validation, the DMP rules, the initial emergency Consents, the AuditEvent.
The only difference is what the policy checks for a patient's creation: a creation code consumed
in the same transaction (:mod:`authz.authserver.creation_codes`). If the FHIR service refuses,
the code is put back and no account is made; the refusal's AuditEvent stays.

A minor's DMP is not created this way: R20 wants a legal representative recorded with it, which
a professional or the administration does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from authz.actor import Actor
from authz.audit import who
from authz.authserver.accounts import Account, AccountBook, Contact, Ident, contact_from, parse_ins, subject_of
from authz.authserver.creation_codes import CreationCodes, Held, mark_consumed, unmark_consumed
from authz.authserver.errors import AuthError, code_refused, invalid_request
from authz.authserver.issuer import Grant, TokenIssuer
from authz.authserver.passwords import PasswordHasher, WeakPassword, check_policy
from authz.devtoken import iua_claims
from authz.state import minor_on
from authz.terms import ADMINISTRATION, PATIENT, PROFESSIONAL
from fhir_server.dmp.accounts.login import text
from fhir_server.dmp.accounts.trail import AccountTrail
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhirmodel.errors import FhirError

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

FHIR_JSON = "application/fhir+json"
#: Shown as the client in the AuditEvent of the creation: the trail says how the DMP was made.
CLIENT_ID = "dmp-server/creation-code"
_GENDERS = ("male", "female", "other", "unknown")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass
class DmpCreation:
    codes: CreationCodes
    book: AccountBook
    hasher: PasswordHasher
    issuer: TokenIssuer
    fhir: FhirService
    clock: Callable[[], float]
    dmp_exists: Callable[[Ident], bool]
    trail: AccountTrail

    def issue_code(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        """A creation code for an INS, asked by a professional or the administration."""
        if actor.role not in (PROFESSIONAL, ADMINISTRATION):
            raise AuthError(403, "access_denied", "creation codes are issued by a professional or the administration")
        ins = parse_ins(body["ins"]) if body.get("ins") is not None else actor.patient
        if ins is None:
            raise invalid_request("'ins' is required (or a token whose person_id names the patient)")
        if actor.patient is not None and actor.patient != ins:
            raise AuthError(403, "access_denied", "the token is about another patient (R1)")
        if self.dmp_exists(ins):
            raise AuthError(409, "invalid_request", "this patient already has a DMP")
        issued = self.codes.issue(ins, actor.idnatps or actor.subject)
        self.trail.credentials(who(actor), actor.role, ins, "DMP creation code issued", self.clock())
        return issued

    def create(self, body: dict[str, Any], client_address: str | None) -> dict[str, Any]:
        """INS + code + password + contact + identity → the DMP and the patient's account."""
        ins = parse_ins(body.get("ins"))
        code = text(body, "creation_code") or ""
        password = text(body, "password") or ""
        try:
            check_policy(password, ins[1])
        except WeakPassword as exc:
            raise invalid_request(str(exc)) from None
        contact = contact_from(body.get("email"), body.get("phone"), body.get("channel"))
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        patient = patient_resource(ins, body, today)
        now = self.clock()
        account = Account(ins, PATIENT, self.hasher.hash(password), False, contact, created=int(now))
        with self.book.store.transaction():
            outcome = self._consume_and_create(ins, code, account, self._request(ins, patient, client_address), now)
        if isinstance(outcome, AuthError):
            raise outcome
        return _created(outcome, ins, contact)

    def _request(self, ins: Ident, patient: dict[str, Any], client_address: str | None) -> FhirRequest:
        """``POST Patient`` as the patient: a one-minute token that only creates a Patient."""
        subject = subject_of(ins)
        grant = Grant(subject, "patient/Patient.c", iua_claims(role=PATIENT, person_id=subject), CLIENT_ID)
        token = self.issuer.access_token(grant, lifetime=60)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
        return FhirRequest(
            "POST", "Patient", body=patient, headers=headers, content_type=FHIR_JSON, client_address=client_address
        )

    def _consume_and_create(
        self, ins: Ident, code: str, account: Account, request: FhirRequest, now: float
    ) -> FhirResponse | AuthError:
        """Inside one transaction; returns refusals rather than raising them, so that what must
        stay (a counted wrong guess, the AuditEvent of a refused creation) commits."""
        held = self.codes.consume(ins, code)
        if held is None:
            return code_refused()
        if self.book.get(ins) is not None:
            self.codes.restore(ins, held)
            return AuthError(409, "invalid_request", "this person already has an account: ask the DMP administration")
        mark_consumed(self.book.store, ins, now)
        try:
            response = self.fhir.process(request)
        except FhirError as exc:
            return self._refused(ins, held, exc)
        unmark_consumed(self.book.store, ins)
        self.book.add(account, now)
        return response

    def _refused(self, ins: Ident, held: Held, exc: FhirError) -> AuthError:
        unmark_consumed(self.book.store, ins)
        self.codes.restore(ins, held)
        error = "access_denied" if exc.status == 403 else "invalid_request" if exc.status < 500 else "server_error"
        return AuthError(exc.status, error, f"the DMP was not created: {exc.message}", extra={"outcome": exc.outcome()})


def _created(response: FhirResponse, ins: Ident, contact: Contact) -> dict[str, Any]:
    location = response.headers.get("Location", "")
    parts = location.split("/")
    reference = f"Patient/{parts[parts.index('Patient') + 1]}" if "Patient" in parts else None
    return {"patient": reference, "identifier": subject_of(ins), "role": PATIENT, "channel": contact.channel}


def patient_resource(ins: Ident, body: dict[str, Any], today: date) -> dict[str, Any]:
    """The Patient of a DMP created by its patient: INS, name, birth date (and gender)."""
    family = (text(body, "family") or "").strip()
    if not family:
        raise invalid_request("'family' (the family name) is required")
    given = body.get("given")
    if isinstance(given, str):
        given = [given]
    if given is not None and (not isinstance(given, list) or not all(isinstance(g, str) and g for g in given)):
        raise invalid_request("'given' is a given name or a list of given names")
    born = _birth_date(text(body, "birth_date") or "", today)
    gender = text(body, "gender", required=False)
    if gender is not None and gender not in _GENDERS:
        raise invalid_request(f"'gender' is one of {', '.join(_GENDERS)}")
    if minor_on(born, today):
        raise AuthError(
            422,
            "invalid_request",
            "a minor's DMP is not created with a creation code: it is created by a professional or the "
            "DMP administration together with a legal representative (R20)",
        )
    name: dict[str, Any] = {"family": family}
    if given:
        name["given"] = given
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": ins[0], "value": ins[1]}],
        "active": True,
        "name": [name],
        "birthDate": born.isoformat(),
    }
    if gender:
        patient["gender"] = gender
    return patient


def _birth_date(raw: str, today: date) -> date:
    try:
        born = date.fromisoformat(raw) if _DATE.fullmatch(raw) else None
    except ValueError:
        born = None
    if born is None or born > today or born.year < 1880:
        raise invalid_request("'birth_date' is a past date, YYYY-MM-DD")
    return born
