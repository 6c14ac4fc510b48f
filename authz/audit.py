"""The access trail: one AuditEvent per request about a patient's record (R17, CONTRACT §6).

Events follow the IHE BALP pattern for RESTful interactions: the user agent (role, idNatPs or
INS, name, profession, purpose), the client agent, the server as source, the patient entity and
the resource or query entity. A search records its query, never its results. The events are
written by the service in the same transaction as the change they record.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from authz.actor import Actor
from authz.lifecycle import LIFECYCLE_SYSTEM
from authz.terms import (
    CANON,
    IDNATPS_SYSTEM,
    LEGAL_REPRESENTATIVE,
    PATIENT,
    PROFESSION_SYSTEM,
    PURPOSE_SYSTEM,
    ROLE_SYSTEM,
)
from fhirmodel.characters import without_forbidden
from fhirmodel.ids import new_id

EMERGENCY_EXTENSION = f"{CANON}/StructureDefinition/dmp-emergency-access"
_EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
#: The FHIR action code of each interaction (AuditEvent.action).
_ACTION = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
}
_CLIENT_AGENT = "client"
#: What the server's own events are about: a patient's record (DICOM "Patient Record").
_RECORD_EVENT = {"system": _DICOM, "code": "110110", "display": "Patient Record"}


@dataclass(frozen=True)
class AuditRecord:
    """What happened, as the service saw it."""

    interaction: str  # a restful-interaction code
    outcome_status: int  # the HTTP status answered
    resource_type: str | None
    resource_id: str | None
    query: str | None  # the query string of a search, as received
    reason: str | None = None  # why it was refused
    emergency: bool = False
    source_address: str | None = None
    lifecycle: str | None = None  # an ISO 21089 record lifecycle event: the DMP closed, reopened


def audit_event(
    actor: Actor,
    patient: tuple[str, str],
    patient_id: str | None,
    record: AuditRecord,
    recorded: str,
    server: str,
) -> dict[str, Any]:
    """The AuditEvent of one request by ``actor`` about the DMP of ``patient`` (INS)."""
    outcome = "0" if record.outcome_status < 400 else "4" if record.outcome_status < 500 else "8"
    purpose = {"coding": [{"system": PURPOSE_SYSTEM, "code": actor.purpose}]}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": _EVENT_TYPE,
        "subtype": [{"system": _INTERACTION_SYSTEM, "code": record.interaction}],
        "action": _ACTION.get(record.interaction, "E"),
        "recorded": recorded,
        "outcome": outcome,
        "purposeOfEvent": [purpose],
        "agent": [_user_agent(actor, purpose), _client_agent(actor, record.source_address)],
        "source": {"observer": {"display": server}, "type": [{"system": _SOURCE_TYPE, "code": "4"}]},
        "entity": [patient_entity(patient, patient_id)],
    }
    if record.lifecycle:
        event["subtype"].append({"system": LIFECYCLE_SYSTEM, "code": record.lifecycle})
    if record.reason:
        event["outcomeDesc"] = without_forbidden(record.reason)
    if record.emergency:
        event["extension"] = [{"url": EMERGENCY_EXTENSION, "valueBoolean": True}]
    if record.resource_type and record.resource_id:
        # As the URL named it, which may be anything a client sent (a refused request is recorded too).
        event["entity"].append(resource_entity(without_forbidden(f"{record.resource_type}/{record.resource_id}")))
    elif record.query is not None:
        event["entity"].append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2"},
                "role": {"system": _OBJECT_ROLE, "code": "24"},
                "description": without_forbidden(record.resource_type or ""),
                "query": base64.b64encode(record.query.encode()).decode("ascii"),
            }
        )
    return event


def server_event(
    *,
    action: str,
    lifecycle: str,
    agent: str,
    entities: list[dict[str, Any]],
    description: str,
    recorded: str,
    server: str,
) -> dict[str, Any]:
    """An AuditEvent of work the server does on its own (a periodic job, an operator's command):
    no token, so the agent is the server's process, named by ``agent``; ``lifecycle`` is the ISO
    21089 record lifecycle event it carried out."""
    return {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": _RECORD_EVENT,
        "subtype": [{"system": LIFECYCLE_SYSTEM, "code": lifecycle}],
        "action": action,
        "recorded": recorded,
        "outcome": "0",
        "outcomeDesc": description,
        "agent": [
            {
                "type": {"coding": [{"system": _DICOM, "code": "110150", "display": "Application"}]},
                "who": {"display": agent},
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": server}, "type": [{"system": _SOURCE_TYPE, "code": "4"}]},
        "entity": entities,
    }


#: The kinds of events about a person's account: a login; a change of their credentials.
ACCOUNT_EVENTS = {
    "login": (
        {"system": _DICOM, "code": "110114", "display": "User Authentication"},
        {"system": _DICOM, "code": "110122", "display": "Login"},
    ),
    "credentials": (
        {"system": _DICOM, "code": "110113", "display": "Security Alert"},
        {"system": _DICOM, "code": "110137", "display": "User Security Attributes Changed"},
    ),
}


def account_event(
    kind: str,
    *,
    who: dict[str, Any],
    role: str,
    about: tuple[str, str],
    about_id: str | None,
    succeeded: bool,
    description: str,
    recorded: str,
    server: str,
) -> dict[str, Any]:
    """An event of the server's own authorisation server (``kind`` in :data:`ACCOUNT_EVENTS`): a
    login, or an account created or reset, by ``who`` (a Reference) acting as ``role``, for the
    record of ``about`` (INS; ``about_id`` its Patient). Kept in the trail of that record, so that
    the patient sees who logged in to act on it, each failed attempt, and each change of the
    credentials that open it."""
    event_type, subtype = ACCOUNT_EVENTS[kind]
    return {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": event_type,
        "subtype": [subtype],
        "action": "E",
        "recorded": recorded,
        "outcome": "0" if succeeded else "4",
        "outcomeDesc": description,
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPATION, "code": "IRCP"}]},
                "role": [{"coding": [{"system": ROLE_SYSTEM, "code": role}]}],
                "who": who,
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": server}, "type": [{"system": _SOURCE_TYPE, "code": "4"}]},
        "entity": [patient_entity(about, about_id)],
    }


def patient_entity(patient: tuple[str, str] | None, patient_id: str | None) -> dict[str, Any]:
    """The entity naming the patient an event is about: by INS and/or by the Patient's id."""
    what: dict[str, Any] = {"type": "Patient"}
    if patient:
        what["identifier"] = {"system": patient[0], "value": patient[1]}
    if patient_id:
        what["reference"] = f"Patient/{patient_id}"
    return {"what": what, "type": {"system": _ENTITY_TYPE, "code": "1"}, "role": {"system": _OBJECT_ROLE, "code": "1"}}


def resource_entity(reference: str) -> dict[str, Any]:
    """The entity naming a resource an event is about."""
    return {
        "what": {"reference": reference},
        "type": {"system": _ENTITY_TYPE, "code": "2"},
        "role": {"system": _OBJECT_ROLE, "code": "4"},
    }


def _user_agent(actor: Actor, purpose: dict[str, Any]) -> dict[str, Any]:
    roles = [{"coding": [{"system": ROLE_SYSTEM, "code": actor.role}]}]
    if actor.profession:
        roles.append({"coding": [{"system": PROFESSION_SYSTEM, "code": actor.profession}]})
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _PARTICIPATION, "code": "IRCP"}]},
        "role": roles,
        "who": who(actor),
        "altId": actor.subject,
        "requestor": True,
        "purposeOfUse": [purpose],
    }
    if actor.organization:
        agent["location"] = {"identifier": {"system": actor.organization[0], "value": actor.organization[1]}}
    return agent


def who(actor: Actor) -> dict[str, Any]:
    """The user as a FHIR Reference: by idNatPs for a professional, else by the token's subject."""
    if actor.idnatps:
        ref: dict[str, Any] = {"identifier": {"system": IDNATPS_SYSTEM, "value": actor.idnatps}}
    else:
        ref = {"identifier": {"value": actor.subject}}
    if actor.name:
        ref["display"] = actor.name
    return ref


def _client_agent(actor: Actor, address: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _DICOM, "code": "110150", "display": "Application"}]},
        "who": {"display": actor.client_id or actor.issuer},
        "name": _CLIENT_AGENT,
        "requestor": False,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def for_patient_view(event: dict[str, Any], reader_role: str) -> dict[str, Any]:
    """The trail as the patient and their representatives see it: without the client system."""
    if reader_role not in (PATIENT, LEGAL_REPRESENTATIVE):
        return event
    shown = dict(event)
    shown["agent"] = [a for a in event.get("agent") or [] if a.get("name") != _CLIENT_AGENT]
    return shown
