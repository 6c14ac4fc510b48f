"""Rectification (CONTRACT §5; IHE MHD "replace"): a DocumentReference that ``replaces`` another
makes it ``superseded``, in the same transaction.

Why here and only here: every DocumentReference a client writes — ``POST``/``PUT``/``PATCH``, an
entry of a transaction Bundle, an ITI-65 Provide Document Bundle, an ITI-105 simplified publish —
is written by :mod:`fhir_server.fhir.interactions.instance`, which asks this module what a write
replaces (:func:`plan`) and, once it is stored, supersedes that (:func:`supersede`). The ITI-65
code has no replacement logic of its own.

The order of the checks keeps hidden documents hidden. The guard's ``check_write`` on the new
document runs first: under the DMP rules (``authz.policy``, R19) it answers a target the caller
neither authored nor may see exactly as one that does not exist, and refuses one they see but did
not author (403). Only then does :func:`plan` read the target as stored — a document of this
server, of the same patient, ``current`` — so its status is told only to whom the rules let
replace it. (Under a gatekeeper that screens nothing, these checks are the only ones.)

A single request supersedes at once. A transaction Bundle's entries leave it to the end of the
transaction (``FhirRequest.completion``): a Bundle that itself patches the replaced document to
``superseded``, as IHE MHD's replace example does, then ends with that one change, and one whose
own change leaves the document otherwise (``entered-in-error``...) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from fhir_server.fhir.messages import FhirRequest
from fhirmodel.errors import FhirError
from fhirmodel.indexing import parse_reference
from storage.interface import Gone, NotFound, VersionConflict
from storage.query import OPEN_SCOPE, Query, Token

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService

_TYPE = "DocumentReference"
_CURRENT, _SUPERSEDED = "current", "superseded"


@dataclass(frozen=True)
class Replaced:
    """A document a write replaces: the element naming it and its id."""

    where: str  # DocumentReference.relatesTo[k].target
    id: str


def plan(svc: FhirService, req: FhirRequest, new: dict[str, Any] | None, old: dict[str, Any] | None) -> list[Replaced]:
    """The documents ``new`` replaces that ``old`` (the stored version) did not: each known here,
    of the same patient and current, or 422 naming the ``relatesTo`` that points at it."""
    if new is None or new.get("resourceType") != _TYPE:
        return []
    before = {target for _, target in _relations(svc, old)} if old else set()
    found: list[Replaced] = []
    for where, target in _relations(svc, new):
        if target in before:
            continue
        if target is not None and target == new.get("id"):
            raise _refusal(where, f"DocumentReference/{target} cannot replace itself", "business-rule")
        stored = _stored(svc, target) if target else None
        patient = _patient_id(svc, new.get("subject"))
        if stored is None or patient is None or _patient_id(svc, stored.get("subject")) != patient:
            whose = f"of Patient/{patient}" if patient else "of this document's patient"
            what = f"DocumentReference/{target}" if target else "the target"
            raise _refusal(where, f"{what} is no document {whose} known here", "not-found")
        if stored.get("status") != _CURRENT:
            message = f"DocumentReference/{target} is '{stored.get('status')}': only a current document is replaced"
            raise _refusal(where, message, "business-rule")
        if all(r.id != target for r in found):
            found.append(Replaced(where, str(target)))
    return found


def supersede(svc: FhirService, req: FhirRequest, replaced: list[Replaced]) -> None:
    """Supersede now, or when the transaction the request belongs to has run all its entries."""
    for target in replaced:
        if req.completion is None:
            _supersede(svc, req, target)
        else:
            req.completion.append(partial(_settle, svc, req, target))


def _settle(svc: FhirService, req: FhirRequest, target: Replaced) -> None:
    """At the end of a transaction: superseded already (by the Bundle itself, or another document
    of it replacing the same one), or superseded now; any other outcome is refused."""
    stored = _stored(svc, target.id)
    status = stored.get("status") if stored else "deleted"
    if status == _CURRENT:
        _supersede(svc, req, target)
    elif status != _SUPERSEDED:
        message = (
            f"the transaction leaves DocumentReference/{target.id} '{status}', but a document another one "
            "replaces becomes 'superseded'"
        )
        raise _refusal(target.where, message, "business-rule")


def _supersede(svc: FhirService, req: FhirRequest, target: Replaced) -> None:
    """``status`` → ``superseded``, as a PATCH the caller makes: the guard decides (R19: its author
    only; R2 as for any change) and records it, in the caller's transaction. Read whoever may see
    it, as the rule itself does: an author may replace a document without access to the rest of
    the record."""
    try:
        current = svc.store.read(_TYPE, target.id, OPEN_SCOPE)
    except (NotFound, Gone):
        raise FhirError(409, f"the replaced DocumentReference/{target.id} is gone", "conflict") from None
    old = current.json()
    new = {**old, "status": _SUPERSEDED}
    req.checks.check_write("PATCH", _TYPE, new, old)
    try:
        stored = svc.store.update(new, expected_version=current.version, method="PATCH")
    except VersionConflict:
        raise FhirError(409, f"the replaced DocumentReference/{target.id} changed meanwhile", "conflict") from None
    req.checks.after_write("PATCH", stored, old)


def _relations(svc: FhirService, document: dict[str, Any]) -> list[tuple[str, str | None]]:
    """``(where, id)`` of each ``replaces`` relation; the id None when the target is no
    DocumentReference of this server (another server's, or named by identifier only)."""
    out = []
    for k, relation in enumerate(document.get("relatesTo") or []):
        if not isinstance(relation, dict) or relation.get("code") != "replaces":
            continue
        literal = (relation.get("target") or {}).get("reference")
        rtype, rid, _ = parse_reference(literal, svc.config.base_url) if isinstance(literal, str) else (None,) * 3
        out.append((f"{_TYPE}.relatesTo[{k}].target", rid if rtype == _TYPE else None))
    return out


def _stored(svc: FhirService, rid: str) -> dict[str, Any] | None:
    try:
        return svc.store.read(_TYPE, rid, OPEN_SCOPE).json()
    except (NotFound, Gone):
        return None


def _patient_id(svc: FhirService, subject: Any) -> str | None:
    """The id of the stored Patient a subject designates, by reference or by identifier."""
    if not isinstance(subject, dict):
        return None
    literal = subject.get("reference")
    if isinstance(literal, str):
        rtype, rid, _ = parse_reference(literal, svc.config.base_url)
        return rid if rtype == "Patient" else None
    identifier = subject.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        where = Token("identifier", str(identifier["system"]), str(identifier["value"]))
        found = svc.store.search(Query("Patient", where, count=2, total=False), OPEN_SCOPE).matches
        return found[0].id if len(found) == 1 else None
    return None


def _refusal(where: str, message: str, code: str) -> FhirError:
    return FhirError(422, f"{where}: {message}", code, expression=[where])
