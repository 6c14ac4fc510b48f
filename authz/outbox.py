"""The messages the outbox carries for the alerts job: their topics and shapes.

Queued by access control in the transaction of the request that causes them, delivered later by
:mod:`fhir_server.dmp.alerts.job`. A message holds ids only: everything else is read again at delivery,
as it stands then (a document hidden in between is not announced; a revoked representative is
not told).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

#: A document became current in a DMP with an active Subscription: one message per Subscription,
#: so that each is delivered, retried and given up on its own.
SUBSCRIPTION_TOPIC = "subscription"
#: A professional reached a DMP by an emergency access (R5): the patient is told.
EMERGENCY_TOPIC = "patient-alert"


@dataclass(frozen=True)
class DocumentEvent:
    subscription: str  # Subscription id
    document: str  # DocumentReference id
    created: bool  # a new document (POST), or an existing one that became current (PUT)
    at: str  # when it happened (FHIR instant)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {"subscription": self.subscription, "document": self.document, "created": self.created, "at": self.at}
        )

    @classmethod
    def loads(cls, payload: bytes) -> DocumentEvent:
        value: dict[str, Any] = orjson.loads(payload)
        return cls(str(value["subscription"]), str(value["document"]), bool(value["created"]), str(value["at"]))


@dataclass(frozen=True)
class EmergencyEvent:
    patient: tuple[str, str]  # the DMP's INS (system, value)
    audit_event: str  # the AuditEvent of the access: who, when, from where

    def dumps(self) -> bytes:
        return orjson.dumps({"kind": "emergency-access", "patient": list(self.patient), "auditEvent": self.audit_event})

    @classmethod
    def loads(cls, payload: bytes) -> EmergencyEvent:
        value: dict[str, Any] = orjson.loads(payload)
        system, ins = value["patient"]
        return cls((str(system), str(ins)), str(value["auditEvent"]))
