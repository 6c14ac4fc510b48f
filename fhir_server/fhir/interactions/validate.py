"""``$validate`` (R4 OperationDefinition ``Resource-validate``): is this resource valid, and would
the server accept it for this change?

Type level (``POST [type]/$validate``) checks a resource sent, instance level
(``GET|POST [type]/[id]/$validate``) the one sent or else the stored one. ``profile`` adds a profile
the server knows (``profiles/``); ``mode`` (``create``, ``update``, ``delete``) adds what that
write would meet besides validity: the document codes (CONTRACT §5) and the access rules, checked
as that write would check them — nothing is written. The answer is an OperationOutcome, ``200``
whatever it finds; a request that cannot be understood is ``400``, and what the caller may not
read is ``404``/``403`` as for a read.

A ``meta.profile`` the server does not know is reported as a warning: in R4 it is the sender's
claim, which a server is not required to verify; a write carrying one is accepted (a server may
refuse such profiles or accept them; this one accepts them and says so here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.profiles import load_profiles, violations
from fhirmodel.errors import FhirError, bad_request, not_found, outcome_issue
from storage.interface import Gone, NotFound

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = ("create", "update", "delete", "profile")
#: The HTTP method a write of each mode is, for the access check.
_WRITE_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}


def validate(svc: FhirService, req: FhirRequest, rid: str | None) -> FhirResponse:
    rtype = next(s for s in req.path.split("/") if s)
    resource, mode, profile = _inputs(req)
    if mode not in (None, *MODES):
        raise bad_request(f"mode must be one of {', '.join(MODES)}", expression=["mode"])
    old = _stored(svc, req, rtype, rid) if rid is not None else None
    if mode in ("update", "delete") and old is None:
        raise bad_request(f"mode={mode} is asked of a stored resource: [type]/[id]/$validate")
    if resource is None:
        if old is None:
            raise bad_request("a resource to validate is required (the body, or a 'resource' parameter)")
        resource = old if mode != "delete" else None
    issues: list[dict[str, Any]] = []
    if resource is not None:
        issues += _validity(svc, rtype, resource, rid)
        if profile is not None:
            issues += _profile_issues(profile, resource)
        issues += unknown_profiles(resource)
    if mode in _WRITE_METHOD and not _errors(issues):
        issues += _write_issues(svc, req, _WRITE_METHOD[str(mode)], rtype, resource, old)
    if not issues:
        issues = [outcome_issue("information", "informational", f"{rtype}: no problem found")]
    return FhirResponse(200, {"resourceType": "OperationOutcome", "issue": issues})


def unknown_profiles(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """A warning per ``meta.profile`` the server does not know (and so does not check)."""
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    known = load_profiles()
    return [
        outcome_issue(
            "warning",
            "not-supported",
            f"profile {url} is not known to this server: the resource was not checked against it",
            [f"{resource.get('resourceType')}.meta.profile[{index}]"],
        )
        for index, url in enumerate((meta or {}).get("profile") or [])
        if isinstance(url, str) and known.get(url) is None and not _base_definition(url)
    ]


def _base_definition(url: str) -> bool:
    """A profile that is an R4 base resource definition (every resource meets its own)."""
    return url.split("|")[0].startswith("http://hl7.org/fhir/StructureDefinition/")


def _inputs(req: FhirRequest) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """The ``resource``, ``mode`` and ``profile`` inputs: from a Parameters body, from a resource
    posted as the body itself, and from the URL."""
    values = dict(req.params)
    mode, profile = values.get("mode"), values.get("profile")
    body = req.body
    if body is None:
        return None, mode, profile
    if not isinstance(body, dict):
        raise bad_request("the body is neither a resource nor a Parameters resource", code="structure")
    if body.get("resourceType") != "Parameters":
        return body, mode, profile
    resource = None
    for parameter in body.get("parameter") or []:
        if not isinstance(parameter, dict):
            raise bad_request("Parameters.parameter must hold objects", code="structure")
        match parameter.get("name"):
            case "resource":
                resource = parameter.get("resource")
                if not isinstance(resource, dict):
                    raise bad_request("parameter 'resource' holds no resource", expression=["Parameters.parameter"])
            case "mode":
                mode = str(parameter.get("valueCode") or "")
            case "profile":
                profile = str(parameter.get("valueUri") or parameter.get("valueCanonical") or "")
    return resource, mode, profile


def _stored(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> dict[str, Any] | None:
    """The stored resource, checked as a read is: one the caller may not see is not found."""
    req.checks.check_read(rtype, "read")
    try:
        return svc.store.read(rtype, rid, req.scope).json()
    except NotFound:
        raise not_found(f"{rtype}/{rid} is not known") from None
    except Gone:
        return None


def _validity(svc: FhirService, rtype: str, resource: dict[str, Any], rid: str | None) -> list[dict[str, Any]]:
    """What the validation every write runs finds (R4 structure, extensions, invariants)."""
    issues = []
    if rid is not None and resource.get("id") not in (None, rid):
        issues.append(outcome_issue("error", "invalid", f"the resource's id is not {rid}", [f"{rtype}.id"]))
    try:
        svc.validator.validate(resource, expected_type=rtype)
    except FhirError as exc:
        if exc.status == 400:
            raise
        return issues + exc.outcome()["issue"]
    return issues


def _profile_issues(url: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    profile = load_profiles().get(url)
    if profile is None:
        if _base_definition(url) and url.split("|")[0].rsplit("/", 1)[1] == resource.get("resourceType"):
            return []
        return [outcome_issue("error", "not-supported", f"profile {url} is not known to this server", ["profile"])]
    if profile.type != resource.get("resourceType"):
        return [outcome_issue("error", "invalid", f"profile {url} is about {profile.type}", ["profile"])]
    rtype = profile.type
    found = violations(profile, resource)
    return [outcome_issue("error", "invariant", p.message, [f"{rtype}.{p.location}"]) for p in found]


def _write_issues(
    svc: FhirService,
    req: FhirRequest,
    method: str,
    rtype: str,
    resource: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """What the write of this mode would be refused for, checked as the write checks it (nothing is
    written). An access refusal is answered as the write's would be (403/404), not reported."""
    if not svc.declarations.allows(rtype, {"POST": "create", "PUT": "update", "DELETE": "delete"}[method]):
        return [outcome_issue("error", "not-supported", f"{rtype} does not offer this change (405)")]
    try:
        if resource is not None:
            for rule in svc.extensions.write_rules:  # what no caller may write (document codes...)
                rule.check(resource, old)
    except FhirError as exc:
        return list(exc.outcome()["issue"])
    req.checks.check_write(method, rtype, resource, old if method != "POST" else None)
    return []


def _errors(issues: list[dict[str, Any]]) -> bool:
    return any(issue.get("severity") in ("error", "fatal") for issue in issues)
