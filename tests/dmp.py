"""A DMP test world: the real server with the DMP gatekeeper, real ES256 tokens signed by the
server's own key, and helpers to seed records.

Seeding writes through the store directly, as a data migration would: the rules under test are
exercised by the HTTP requests that follow, never by the set-up.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz.consents import new_consent
from authz.devtoken import make_dev_token
from authz.gate import DmpGatekeeper, build_gatekeeper
from authz.keys import load_or_create_server_key
from authz.lifecycle import CLOSURE_URL
from authz.terms import (
    ACCESS,
    BREAK_THE_GLASS,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    PROFESSION_SYSTEM,
    REGULATION_CENTRE,
    VISIBILITY_SYSTEM,
)
from authz.tokens import own_issuer
from fhir_server.app import create_app, create_service
from fhir_server.fhir.service import FhirService
from fhir_server.runtime.config import Config
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
LOINC = "http://loinc.org"
#: A class-10 type (compte rendu), a class-11 type (synthèse), a class-60 type (remboursement).
CR_CONSULTATION = "11488-4"
SYNTHESE = "60591-5"
REIMBURSEMENT = "REMB"


def ins_of(value: str) -> tuple[str, str]:
    return INS_SYSTEM, value


def closure(day: date, reason: str = "à la demande du patient") -> dict[str, Any]:
    """The closure extension (CONTRACT §3) of a DMP closed on ``day``."""
    return {
        "url": CLOSURE_URL,
        "extension": [{"url": "date", "valueDate": day.isoformat()}, {"url": "reason", "valueString": reason}],
    }


def closed(patient: dict[str, Any], day: date) -> dict[str, Any]:
    """``patient`` closed on ``day``: ``active`` false and the closure extension."""
    others = [e for e in patient.get("extension", []) if e.get("url") != CLOSURE_URL]
    return {**patient, "active": False, "extension": [*others, closure(day)]}


def reopened(patient: dict[str, Any]) -> dict[str, Any]:
    """``patient`` reopened: ``active`` true, the closure extension removed."""
    shown = {**patient, "active": True}
    others = [e for e in patient.get("extension", []) if e.get("url") != CLOSURE_URL]
    if others:
        shown["extension"] = others
    else:
        shown.pop("extension", None)
    return shown


@dataclass
class Clock:
    """The gatekeeper's clock, movable by tests (grant expiry, majority)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


class EpochClock:
    """An epoch-seconds clock (the authorisation server's), movable by tests (code expiry, lockout)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


class As:
    """Requests made with one token."""

    def __init__(self, client: FlaskClient, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> TestResponse:
        all_headers = {**self.headers, **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/fhir+json")
            return self.client.open(f"/fhir/{path}", method=method, json=body, headers=all_headers)
        return self.client.open(f"/fhir/{path}", method=method, headers=all_headers)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)

    def ids(self, query: str) -> set[str]:
        response = self.get(query)
        assert response.status_code == 200, response.get_data(as_text=True)
        bundle = response.get_json()
        return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}

    def total(self, query: str) -> int:
        response = self.get(query)
        assert response.status_code == 200, response.get_data(as_text=True)
        total: int = response.get_json()["total"]
        return total


class World:
    def __init__(self, tmp_path: Path, **settings: Any):
        """``settings``: Config fields besides the data directory (a mail server...)."""
        self.clock = Clock()
        self.config = Config(data_dir=tmp_path / "data", **settings)

        def gatekeeper(config: Config, store: Any, terminology: Any) -> DmpGatekeeper:
            built = build_gatekeeper(config.access, store, terminology)
            built.clock = self.clock
            return built

        self.service: FhirService = create_service(self.config, gatekeeper=gatekeeper)
        self.client = create_app(service=self.service).test_client()
        self.key = load_or_create_server_key(self.config.data_dir)
        self.store = self.service.store

    def close(self) -> None:
        self.store.close()

    # -- tokens ----------------------------------------------------------------------------------

    def token(self, role: str, *, patient: str | None = None, **claims: Any) -> str:
        sub = (
            claims.pop("sub", None)
            or claims.get("idnatps")
            or (patient if role in ("PAT", "LEGREP") else f"{role}-user")
        )
        return make_dev_token(
            self.key,
            issuer=own_issuer(self.config.base_url),
            audience=self.config.base_url,
            role=role,
            sub=sub,
            person_id=patient,
            clock=lambda: self.clock.now.timestamp(),
            **claims,
        )

    def as_(self, role: str, *, patient: str | None = None, **claims: Any) -> As:
        return As(self.client, self.token(role, patient=patient, **claims))

    def patient(self, ins: str) -> As:
        return self.as_("PAT", patient=ins, scope="patient/*.cruds")

    def doctor(self, idnatps: str, patient: str | None, **claims: Any) -> As:
        return self.as_("HCP", patient=patient, idnatps=idnatps, profession=claims.pop("profession", "10"), **claims)

    # -- seeding ---------------------------------------------------------------------------------

    def seed_patient(
        self,
        ins: str,
        *,
        birth_date: str = "1980-05-17",
        active: bool = True,
        pid: str | None = None,
        closed_on: date | None = None,
        email: str | None = None,
        **fields: Any,
    ) -> str:
        """A DMP; ``closed_on`` closes it on that day (with the closure extension)."""
        pid = pid or f"pat-{ins}"
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": f"Patient{ins[-4:]}"}],
            "birthDate": birth_date,
            "active": active,
            **fields,
        }
        if email:
            patient["telecom"] = [{"system": "email", "value": email}]
        self.store.create(closed(patient, closed_on) if closed_on else patient)
        for purpose in (BREAK_THE_GLASS, REGULATION_CENTRE):
            self.store.create(new_consent(EMERGENCY_ACCESS, ins_of(ins), self.clock.now, purpose=purpose))
        return pid

    def seed_granted(self, ins: str, *idnatps: str) -> str:
        """A patient's open DMP whose patient granted access (R3) to each of these professionals."""
        pid = self.seed_patient(ins)
        for professional in idnatps:
            self.seed_consent(ACCESS, ins, (IDNATPS_SYSTEM, professional))
        return pid

    def seed_consent(
        self,
        category: str,
        ins: str,
        actor: tuple[str, str] | None = None,
        *,
        permit: bool = True,
        purpose: str | None = None,
        until: datetime | None = None,
        start: datetime | None = None,
    ) -> str:
        consent = new_consent(
            category,
            ins_of(ins),
            start or self.clock.now - timedelta(days=1),
            permit=permit,
            actor=actor,
            purpose=purpose,
            until=until or (self.clock.now + timedelta(days=365) if category != EMERGENCY_ACCESS else None),
        )
        self.store.create(consent)
        return str(consent["id"])

    def set_emergency(self, ins: str, purpose: str, permit: bool) -> None:
        """Turn the patient's emergency setting for ``purpose`` to permit or deny (R5)."""
        about = ReferenceIdentifier("patient", INS_SYSTEM, ins)
        for stored in self.store.search(Query("Consent", about, count=100, total=False), OPEN_SCOPE).matches:
            consent = stored.json()
            provision = consent["provision"]
            if [p["code"] for p in provision.get("purpose", [])] == [purpose]:
                provision["type"] = "permit" if permit else "deny"
                self.store.update(consent)

    def seed_practitioner(self, idnatps: str, profession: str) -> None:
        self.store.create(
            {
                "resourceType": "Practitioner",
                "id": f"prat-{idnatps}",
                "identifier": [{"system": IDNATPS_SYSTEM, "value": idnatps}],
                "qualification": [{"code": {"coding": [{"system": PROFESSION_SYSTEM, "code": profession}]}}],
            }
        )

    def seed_document(
        self,
        pid: str,
        type_code: str = CR_CONSULTATION,
        *,
        type_system: str = LOINC,
        author: str | None = "899700000001",
        patient_author: bool = False,
        labels: tuple[str, ...] = (),
        doc_id: str | None = None,
        with_binary: bool = False,
        content: bytes = b"x",
        content_type: str = "text/plain",
        title: str | None = None,
        **elements: Any,
    ) -> str:
        """A document of ``pid``; its ``content`` inline or in a Binary ``bin-<id>``; ``elements``
        are set as they are (``date``, ``context``...)."""
        did = doc_id or f"doc-{uuid.uuid4().hex[:12]}"
        authors: list[dict[str, Any]] = []
        if patient_author:
            authors.append({"reference": f"Patient/{pid}"})
        elif author:
            authors.append({"identifier": {"system": IDNATPS_SYSTEM, "value": author}})
        attachment: dict[str, Any] = {"contentType": content_type}
        if title is not None:
            attachment["title"] = title
        if with_binary:
            bid = f"bin-{did}"
            self.store.create(
                {
                    "resourceType": "Binary",
                    "id": bid,
                    "contentType": content_type,
                    "data": base64.b64encode(content).decode(),
                }
            )
            attachment["url"] = f"{self.config.base_url}/Binary/{bid}"
        else:
            attachment["data"] = base64.b64encode(content).decode()
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "id": did,
            "status": "current",
            "type": {"coding": [{"system": type_system, "code": type_code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "author": authors,
            "securityLabel": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}
            ]
            + [{"coding": [{"system": VISIBILITY_SYSTEM, "code": label}]} for label in labels],
            "content": [{"attachment": attachment}],
            **elements,
        }
        if not authors:
            del doc["author"]
        self.store.create(doc)
        return did

    def seed_submission_set(self, pid: str, document_ids: list[str], list_id: str = "submission") -> str:
        """A submission set (List) of ``pid`` naming the documents."""
        self.store.create(
            {
                "resourceType": "List",
                "id": list_id,
                "status": "current",
                "mode": "working",
                "subject": {"reference": f"Patient/{pid}"},
                "entry": [{"item": {"reference": f"DocumentReference/{d}"}} for d in document_ids],
            }
        )
        return list_id
