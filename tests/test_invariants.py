"""The R4 FHIRPath invariants (ig/invariants) on every write, and ``$validate``."""

from __future__ import annotations

import json
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from fhir_server.fhir.invariants import Invariant, InvariantSet, elements_by_type, named_elements
from fhir_server.fhir.service import FhirService
from tests.conftest import Fhir
from tests.dmp import World
from tests.invariant_examples import examples, patient
from tests.paths import ROOT

INVARIANTS = ROOT / "ig" / "invariants" / "r4-invariants.json"
INS_A = "180017512345660"


def _issues(response: Any) -> list[dict[str, Any]]:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    issues: list[dict[str, Any]] = outcome["issue"]
    return issues


def test_the_invariants_file_is_what_the_server_checks(service: FhirService) -> None:
    data = json.loads(INVARIANTS.read_text(encoding="utf-8"))
    keys = {(i["key"], i["context"]) for i in data["invariants"]}
    assert {("per-1", "Period"), ("att-1", "Attachment"), ("ext-1", "Extension"), ("dom-2", "Patient")} <= keys
    assert all(e["reason"] for e in data["excluded"])  # every invariant left out says why
    loaded = service.validator.invariants
    assert isinstance(loaded, InvariantSet)
    assert len(loaded._compiled) == len(data["invariants"])


def test_a_write_breaking_an_invariant_is_refused_naming_it(fhir: Fhir) -> None:
    backwards = patient(contact=[{"name": {"family": "X"}, "period": {"start": "2024-02-01", "end": "2024-01-01"}}])
    response = fhir.request("POST", "Patient", backwards)
    assert response.status_code == 422
    assert any("per-1" in i["diagnostics"] for i in _issues(response))
    empty_extension = patient(extension=[{"url": "http://example.org/x"}])
    response = fhir.request("POST", "Patient", empty_extension)
    assert response.status_code == 422 and any("ext-1" in i["diagnostics"] for i in _issues(response))
    nested = patient(contained=[{"resourceType": "Patient", "id": "c", "contained": [{"resourceType": "Patient"}]}])
    response = fhir.request("POST", "Patient", nested)
    assert response.status_code in (400, 422)
    contactless = patient(contact=[{"gender": "female"}])  # pat-1: a contact names someone
    response = fhir.request("POST", "Patient", contactless)
    assert response.status_code == 422 and any("pat-1" in i["diagnostics"] for i in _issues(response))
    ok = patient(contact=[{"name": {"family": "X"}, "period": {"start": "2024-01-01", "end": "2024-02-01"}}])
    assert fhir.request("POST", "Patient", ok).status_code == 201
    # 10:00 at +02:00 is 08:00 UTC: the Period ends after it starts (fhirpathpy alone refused it)
    zones = {"start": "2024-01-01T10:00:00+02:00", "end": "2024-01-01T09:00:00Z"}
    across = patient(contact=[{"name": {"family": "X"}, "period": zones}])
    assert fhir.request("POST", "Patient", across).status_code == 201
    reversed_zones = {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T09:00:00+02:00"}
    response = fhir.request("POST", "Patient", patient(contact=[{"name": {"family": "X"}, "period": reversed_zones}]))
    assert response.status_code == 422 and any("per-1" in i["diagnostics"] for i in _issues(response))


def test_validate_at_type_and_instance_level(fhir: Fhir) -> None:
    good = fhir.request("POST", "Patient/$validate", patient())
    assert good.status_code == 200 and [i["severity"] for i in _issues(good)] == ["information"]
    bad = patient(contact=[{"gender": "female"}])
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad}]}
    answer = fhir.request("POST", "Patient/$validate", wrapped)
    assert answer.status_code == 200 and any("pat-1" in i["diagnostics"] for i in _issues(answer))
    assert fhir.request("GET", "Patient/$validate").status_code == 400  # nothing to validate
    created = fhir.request("POST", "Patient", patient()).get_json()
    stored = fhir.request("GET", f"Patient/{created['id']}/$validate")
    assert stored.status_code == 200 and _issues(stored)[0]["severity"] == "information"
    assert fhir.request("GET", "Patient/none/$validate").status_code == 404
    assert fhir.request("GET", f"Patient/{created['id']}/$validate?mode=delete").status_code == 200
    assert fhir.request("GET", f"Patient/{created['id']}/$validate?mode=nonsense").status_code == 400
    # Nothing was written by any of these.
    assert fhir.search("Patient")["total"] == 1


def test_validate_with_a_profile_and_unknown_profiles(fhir: Fhir) -> None:
    minimal = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.DocumentReference"
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}],
    }
    answer = fhir.request("POST", f"DocumentReference/$validate?profile={minimal}", doc)
    errors = [i for i in _issues(answer) if i["severity"] == "error"]
    assert answer.status_code == 200 and errors  # the MHD Minimal profile wants more (masterIdentifier...)
    unknown = "http://example.org/StructureDefinition/nobody-knows"
    answer = fhir.request("POST", f"DocumentReference/$validate?profile={unknown}", doc)
    assert any(i["code"] == "not-supported" and i["severity"] == "error" for i in _issues(answer))
    declared = patient(meta={"profile": [unknown]})
    answer = fhir.request("POST", "Patient/$validate", declared)
    warnings = [i for i in _issues(answer) if i["severity"] == "warning"]
    assert warnings and "not known" in warnings[0]["diagnostics"]
    # On a write the server keeps a resource claiming a profile it does not know (R4 allows it).
    assert fhir.request("POST", "Patient", declared).status_code == 201


def test_validate_is_checked_like_the_read_or_write_it_stands_for(world: World) -> None:
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    assert patient.get(f"Patient/{pid}/$validate").status_code == 200
    stranger = world.patient("285037512345787")
    assert stranger.get(f"Patient/{pid}/$validate").status_code in (403, 404)
    event = {"resourceType": "AuditEvent"}
    answer = patient.post("AuditEvent/$validate?mode=create", event)
    assert answer.status_code == 200
    assert any(i["severity"] == "error" for i in _issues(answer))  # a trail nobody writes (405)
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{pid}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}],
    }
    # A patient may not add a professional's document: the write's refusal, not a report.
    refused = patient.post("DocumentReference/$validate?mode=create", doc)
    assert refused.status_code in (403, 422), refused.get_data(as_text=True)


# -- the invariants' shortcuts give the verdicts of full evaluation ---------------------------

_DESCENDANTS = compile_fhirpath("descendants()", models["r4"], {"returnRawData": True})


def _by_type_as_fhirpathpy_walks(resource: dict[str, Any]) -> dict[str, list[str]]:
    """The oracle: fhirpathpy's own ``descendants()``, grouped by type as the checks want them."""
    grouped: dict[str, list[str]] = {}
    for node in _DESCENDANTS(resource, {}):
        if isinstance(node.path, str) and "." not in node.path:
            grouped.setdefault(node.path, []).append(json.dumps(node.data, sort_keys=True))
    return {name: sorted(items) for name, items in grouped.items()}


def _fully_evaluated(invariants: InvariantSet, resource: dict[str, Any]) -> list[str]:
    """Every applicable invariant evaluated on the whole resource, its datatypes found by
    fhirpathpy's ``descendants()``, nothing skipped."""
    rtype = resource["resourceType"]
    by_type: dict[str, list[Any]] = {}
    for node in _DESCENDANTS(resource, {}):
        if isinstance(node.path, str) and "." not in node.path:
            by_type.setdefault(node.path, []).append(node)
    broken = []
    for invariant, check in invariants._compiled:
        if not invariant.applies_to(rtype):
            continue
        try:
            holds = check(resource, by_type)
        except Exception:
            continue
        if not holds:
            broken.append(invariant.key)
    return sorted(broken)


def test_the_elements_by_type_are_those_fhirpathpy_walks_to() -> None:
    for resource in examples():
        mine = {
            name: sorted(json.dumps(node.data, sort_keys=True) for node in nodes)
            for name, nodes in elements_by_type(resource).items()
        }
        assert mine == _by_type_as_fhirpathpy_walks(resource), resource.get("id")


def test_an_invariant_is_skipped_only_where_full_evaluation_agrees(service: FhirService) -> None:
    """The verdicts with the shortcuts (an invariant naming no element the resource has is given
    the empty resource's verdict; datatypes found by the lean walk) are those of evaluating every
    invariant on the whole resource, on every example, including ones that break invariants."""
    invariants = service.validator.invariants
    assert isinstance(invariants, InvariantSet)
    broken_somewhere = set()
    for resource in examples():
        fast = sorted(message.split(":")[0] for _, _, message in invariants.broken(resource))
        assert fast == _fully_evaluated(invariants, resource), resource.get("id")
        broken_somewhere.update(fast)
    assert {
        "per-1",
        "att-1",
        "ext-1",
        "age-1",
        "dom-4",
        "lst-1",
        "lst-2",
        "lst-3",
        "bdl-1",
        "cpt-2",
        "pat-1",
    } <= broken_somewhere


def test_what_an_invariant_names() -> None:
    lst = Invariant("lst-2", "List", "deleted only in changes", "mode = 'changes' or entry.deleted.empty()")
    assert named_elements(lst) == {"List", "mode", "or", "entry"}  # not "changes", nor what entry holds
    dom4 = Invariant(
        "dom-4", "List", "no versionId", "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"
    )
    assert named_elements(dom4) == {"List", "contained", "and"}  # a List with a meta but no contained: not evaluated
    within = Invariant("ctx", "Consent.provision", "x", "$this.actor.exists() or %resource.status = 'active'")
    assert named_elements(within) == {"Consent", "provision", "or", "actor", "status"}
    dom3 = Invariant("dom-3", "DomainResource", "referenced", "contained.where(descendants().exists()).empty()")
    assert named_elements(dom3) is None
