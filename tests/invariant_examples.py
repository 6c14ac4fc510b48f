"""Resources the invariants are checked on in the tests: the reference data's, and made ones."""

from __future__ import annotations

import json
from typing import Any

from tests.paths import SHARED_DATA


def patient(**elements: Any) -> dict[str, Any]:
    """A valid Patient with ``elements`` added."""
    return {"resourceType": "Patient", "name": [{"family": "Martin"}], **elements}


def examples() -> list[dict[str, Any]]:
    """The reference data's FHIR resources (HL7, IHE, ANS examples), and resources made to break
    or reach what the shortcuts skip: primitive extensions, contained resources, Bundle entries."""
    found = []
    for path in sorted(SHARED_DATA.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
            found.append(data)
    backwards = {"start": "2024-02-01", "end": "2024-01-01"}
    found += [
        patient(contact=[{"name": {"family": "X"}, "period": backwards}]),
        {"resourceType": "Patient", "contact": [{"gender": "female"}]},  # pat-1, read at Patient.contact
        {"resourceType": "List", "status": "current", "mode": "working", "meta": {"versionId": "1"}},
        patient(_birthDate={"extension": [{"url": "http://example.org/x"}]}, birthDate="2000-01-01"),
        patient(extension=[{"url": "http://example.org/a", "extension": [{"url": "b", "valueAge": {"value": -1}}]}]),
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "contained": [{"resourceType": "Patient", "id": "p", "meta": {"versionId": "2"}}],
            "content": [{"attachment": {"data": "aGVsbG8="}}],
            "context": {"period": backwards},
        },
        {"resourceType": "List", "status": "current", "mode": "working", "emptyReason": {"text": "none"}},
        {
            "resourceType": "List",
            "status": "current",
            "mode": "snapshot",
            "emptyReason": {"text": "none"},
            "entry": [{"item": {"reference": "Patient/p"}, "deleted": True, "date": "2024-01-01"}],
        },
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "total": 1,
            "entry": [{"fullUrl": "urn:uuid:1", "resource": patient(telecom=[{"value": "0600000000"}])}],
        },
    ]
    return found
