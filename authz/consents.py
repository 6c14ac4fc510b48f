"""Consents the server writes itself, in the shape CONTRACT.md §4 and §8 fix.

A new DMP starts with two emergency-access settings (permit) and, when a professional created
it, an access grant for that professional (R16). These are ordinary Consents, readable and
revocable by the patient like the ones they write.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from authz.terms import CONSENT_TYPE_SYSTEM, PURPOSE_SYSTEM
from fhirmodel.ids import new_id

_SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
_GRANTEE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
#: The policy rule of a patient's decision (R4 requires policy or policyRule).
_POLICY_RULE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}
#: How long a grant lasts when the patient does not say (CONTRACT §4: one year, renewable).
DEFAULT_GRANT = timedelta(days=365)


def new_consent(
    category: str,
    patient: tuple[str, str],
    moment: datetime,
    *,
    permit: bool = True,
    actor: tuple[str, str] | None = None,
    purpose: str | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": "permit" if permit else "deny"}
    if until is not None:
        provision["period"] = {"start": _instant(moment), "end": _instant(until)}
    if actor is not None:
        provision["actor"] = [{"role": _GRANTEE, "reference": {"identifier": {"system": actor[0], "value": actor[1]}}}]
    if purpose is not None:
        provision["purpose"] = [{"system": PURPOSE_SYSTEM, "code": purpose}]
    return {
        "resourceType": "Consent",
        "id": new_id(),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "active",
        "scope": _SCOPE,
        "category": [{"coding": [{"system": CONSENT_TYPE_SYSTEM, "code": category}]}],
        "patient": {"identifier": {"system": patient[0], "value": patient[1]}},
        "dateTime": _instant(moment),
        "policyRule": _POLICY_RULE,
        "provision": provision,
    }


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
