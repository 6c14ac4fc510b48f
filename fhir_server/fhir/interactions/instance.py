"""Instance-level interactions: read, vread, create, update, patch, delete (and their
conditional forms), per FHIR R4 http.html."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.fhir.interactions.common import not_modified_since, parse_etag, version_headers, written
from fhir_server.fhir.interactions.search import result_params, shape
from fhir_server.fhir.messages import FhirRequest, FhirResponse
from fhir_server.fhir.numbers import natural
from fhir_server.fhir.patching import apply_patch
from fhir_server.fhir.service import FhirService, Then
from fhirmodel.errors import FhirError, bad_request, not_found
from fhirmodel.ids import new_id
from storage.interface import Gone, NotFound, Stored, VersionConflict
from storage.query import Expr, Query


def _gone(exc: Gone) -> FhirError:
    return FhirError(410, str(exc), "deleted", headers={"ETag": f'W/"{exc.version}"'})


def _conflict(exc: VersionConflict) -> FhirError:
    return FhirError(412, str(exc), "conflict")


def read(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    req.checks.check_read(rtype, "read")
    try:
        stored = svc.store.read(rtype, rid, req.scope)
    except NotFound:
        raise not_found(f"{rtype}/{rid} is not known") from None
    except Gone as exc:
        raise _gone(exc) from None
    headers = version_headers(svc, stored)
    if_none_match = req.header("If-None-Match")
    if if_none_match and parse_etag(if_none_match) == stored.version:
        return FhirResponse(304, None, headers)
    if not if_none_match and not_modified_since(req.header("If-Modified-Since"), stored.last_updated):
        return FhirResponse(304, None, headers)
    return FhirResponse(200, shape(req, stored, *result_params(req.params)), headers)


def vread(svc: FhirService, req: FhirRequest, rtype: str, rid: str, vid: str) -> FhirResponse:
    req.checks.check_read(rtype, "vread")
    version = natural(vid)
    if version is None:
        raise not_found(f"{rtype}/{rid} has no version '{vid}'")
    try:
        stored = svc.store.vread(rtype, rid, version, req.scope)
    except NotFound:
        raise not_found(f"{rtype}/{rid}/_history/{vid} is not known") from None
    if stored.deleted:
        raise FhirError(410, f"{rtype}/{rid} version {vid} is a deletion", "deleted")
    return FhirResponse(200, shape(req, stored, *result_params(req.params)), version_headers(svc, stored))


def _body(svc: FhirService, req: FhirRequest, rtype: str) -> dict[str, Any]:
    if req.body is None:
        raise bad_request(f"a {rtype} resource is required in the body", code="required")
    if not (req.validated and isinstance(req.body, dict) and req.body.get("resourceType") == rtype):
        svc.validator.validate(req.body, expected_type=rtype)
    body: dict[str, Any] = req.body
    return _server_managed(svc, body)


def validate_body(svc: FhirService, req: FhirRequest, rtype: str) -> None:
    """A create's or update's body checked against R4 before the request's store transaction
    (``Route.prepare``): the writer lock is not held for this CPU work. A missing body is left
    for the interaction to refuse."""
    if req.body is not None and not req.validated:
        svc.validator.validate(req.body, expected_type=rtype)
        req.validated = True


def _server_managed(svc: FhirService, resource: dict[str, Any]) -> dict[str, Any]:
    """A valid resource with the elements the server decides set by it (a Subscription's status)."""
    for rule in svc.extensions.write_rules:
        resource = rule.admit(resource)
    return resource


def matches(svc: FhirService, req: FhirRequest, rtype: str, where: Expr, limit: int = 2) -> list[Stored]:
    """Resources the caller can see that match a conditional operation's criteria."""
    result = svc.store.search(Query(rtype, where=where, count=limit, total=False), req.scope)
    return result.matches


def _criteria(svc: FhirService, rtype: str, params: list[tuple[str, str]]) -> Expr:
    return svc.parser.criteria(rtype, params)


def create(svc: FhirService, req: FhirRequest, rtype: str) -> FhirResponse:
    resource = _body(svc, req, rtype)
    with svc.store.transaction():
        if_none_exist = req.header("If-None-Exist")
        if if_none_exist:
            found = matches(svc, req, rtype, _criteria(svc, rtype, parse_qsl(if_none_exist.lstrip("?"))))
            if len(found) > 1:
                raise FhirError(412, "If-None-Exist matches more than one resource", "duplicate")
            if found:
                existing = found[0]
                return written(svc, req, existing, 200)
        resource = dict(resource)
        resource["id"] = req.assigned_id or new_id()  # the server assigns the id of a create (R4 3.1.0.8)
        companions: list[Then] = []  # what goes with it (ITI-105: the Binaries of documents sent inline)
        for rule in svc.extensions.write_rules:
            resource, companion = rule.prepare_create(svc, req, resource)
            companions.append(companion)
        then = _check_write(svc, req, "POST", rtype, resource, None)
        for companion in companions:
            companion()
        stored = svc.store.create(resource)
        _after_write(svc, req, "POST", stored, None, then)
    return written(svc, req, stored, 201)


def _check_write(
    svc: FhirService, req: FhirRequest, method: str, rtype: str, new: dict[str, Any] | None, old: dict[str, Any] | None
) -> list[Then]:
    """What every write passes before it is stored, in this order: the rules no caller may break
    (e.g. what a document says it is, CONTRACT §5), the guard's rules, then the checks that need
    the guard's verdict first (e.g. what a document replaces: hidden targets stay hidden)."""
    if new is not None:
        for rule in svc.extensions.write_rules:
            rule.check(new, old)
    req.checks.check_write(method, rtype, new, old)
    return [rule.plan(svc, req, new, old) for rule in svc.extensions.write_rules]


def _after_write(
    svc: FhirService,
    req: FhirRequest,
    method: str,
    stored: Stored,
    old: dict[str, Any] | None,
    then: list[Then],
) -> None:
    """What a stored write entails, in its transaction: the guard's consequences, then the rules'
    (e.g. the documents it replaces superseded)."""
    req.checks.after_write(method, stored, old)
    for step in then:
        step()


def update(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    resource = _body(svc, req, rtype)
    if "id" not in resource:
        raise bad_request("an update needs the resource id in the body", code="required", expression=[f"{rtype}.id"])
    if resource["id"] != rid:
        raise bad_request(f"the body's id '{resource['id']}' does not match the URL's '{rid}'")
    expected = parse_etag(req.header("If-Match"))
    with svc.store.transaction():
        return _store_update(svc, req, dict(resource), expected)


def _store_update(svc: FhirService, req: FhirRequest, resource: dict[str, Any], expected: int | None) -> FhirResponse:
    rtype, rid = resource["resourceType"], resource["id"]
    current = svc.store.exists(rtype, rid)
    if current is None:
        if expected is not None:
            raise FhirError(412, f"If-Match given but {rtype}/{rid} does not exist", "conflict")
        then = _check_write(svc, req, "PUT", rtype, resource, None)
        created = svc.store.create(resource, method="PUT")
        _after_write(svc, req, "PUT", created, None, then)
        return written(svc, req, created, 201)
    current_version = _visible_or_404(svc, req, rtype, rid)
    old = current_version.json() if current_version else None
    then = _check_write(svc, req, "PUT", rtype, resource, old)
    try:
        stored = svc.store.update(resource, expected_version=expected)
    except VersionConflict as exc:
        raise _conflict(exc) from None
    _after_write(svc, req, "PUT", stored, old, then)
    return written(svc, req, stored, 200)


def _visible_or_404(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> Stored | None:
    """The current version if the caller may see it; deleted resources give ``None``."""
    try:
        return svc.store.read(rtype, rid, req.scope)
    except NotFound:
        raise not_found(f"{rtype}/{rid} is not known") from None
    except Gone:
        return None


def conditional_update(svc: FhirService, req: FhirRequest, rtype: str) -> FhirResponse:
    resource = _body(svc, req, rtype)
    where = _criteria(svc, rtype, req.params)
    expected = parse_etag(req.header("If-Match"))
    with svc.store.transaction():
        found = matches(svc, req, rtype, where)
        if len(found) > 1:
            raise FhirError(412, "the criteria match more than one resource", "multiple-matches")
        resource = dict(resource)
        if found:
            if resource.get("id") not in (None, found[0].id):
                raise bad_request(f"the body's id does not match the matching resource {rtype}/{found[0].id}")
            resource["id"] = found[0].id
        elif "id" not in resource:
            resource["id"] = new_id()
        return _store_update(svc, req, resource, expected)


def patch(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    expected = parse_etag(req.header("If-Match"))
    with svc.store.transaction():
        current = _visible_or_404(svc, req, rtype, rid)
        if current is None:
            raise FhirError(410, f"{rtype}/{rid} was deleted", "deleted")
        return _apply_patch(svc, req, current, expected)


def _apply_patch(svc: FhirService, req: FhirRequest, current: Stored, expected: int | None) -> FhirResponse:
    if expected is not None and expected != current.version:
        raise FhirError(412, f"{current.resource_type}/{current.id} is at version {current.version}", "conflict")
    original = current.json()
    patched = apply_patch(copy.deepcopy(original), req.body, req.content_type)
    if patched.get("resourceType") != current.resource_type or patched.get("id") != current.id:
        raise FhirError(422, "a patch may not change the resource type or id", "invalid")
    svc.validator.validate(patched, expected_type=current.resource_type)
    patched = _server_managed(svc, patched)
    then = _check_write(svc, req, "PATCH", current.resource_type, patched, original)
    try:
        stored = svc.store.update(patched, expected_version=current.version, method="PATCH")
    except VersionConflict as exc:
        raise _conflict(exc) from None
    _after_write(svc, req, "PATCH", stored, original, then)
    return written(svc, req, stored, 200)


def conditional_patch(svc: FhirService, req: FhirRequest, rtype: str) -> FhirResponse:
    where = _criteria(svc, rtype, req.params)
    expected = parse_etag(req.header("If-Match"))
    with svc.store.transaction():
        found = matches(svc, req, rtype, where)
        if len(found) != 1:
            status = 404 if not found else 412
            raise FhirError(status, f"conditional patch: {len(found) or 'no'} match(es)", "not-found")
        return _apply_patch(svc, req, found[0], expected)


def delete(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    expected = parse_etag(req.header("If-Match"))
    with svc.store.transaction():
        current = _visible_or_404(svc, req, rtype, rid)
        if current is None:  # already deleted: nothing to do (R4 3.1.0.7.1)
            return FhirResponse(204)
        old = current.json()
        req.checks.check_write("DELETE", rtype, None, old)
        try:
            stored = svc.store.delete(rtype, rid, expected_version=expected)
        except VersionConflict as exc:
            raise _conflict(exc) from None
        req.checks.after_write("DELETE", stored, old)
    return FhirResponse(204, None, {"ETag": f'W/"{stored.version}"'})


def conditional_delete(svc: FhirService, req: FhirRequest, rtype: str) -> FhirResponse:
    where = _criteria(svc, rtype, req.params)
    with svc.store.transaction():
        found = matches(svc, req, rtype, where)
        if len(found) > 1:
            raise FhirError(412, "the criteria match more than one resource", "multiple-matches")
        if not found:
            raise not_found(f"no {rtype} matches the criteria")
        old = found[0].json()
        req.checks.check_write("DELETE", rtype, None, old)
        stored = svc.store.delete(rtype, found[0].id)
        req.checks.after_write("DELETE", stored, old)
    return FhirResponse(204, None, {"ETag": f'W/"{stored.version}"'})
