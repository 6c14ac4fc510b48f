"""What a DocumentReference says of its visibility, its archiving and its authors, read the same
way by the read filters (as query expressions) and the write rules (on the resource itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authz.actor import Actor
from authz.state import PatientState
from authz.terms import (
    IDNATPS_SYSTEM,
    VISIBILITY_SYSTEM,
)
from fhirmodel.indexing import patient_id_in
from storage.query import (
    NOTHING,
    Chain,
    Expr,
    Token,
    any_of,
)


def visibility_label(code: str) -> Expr:
    return Token("security-label", VISIBILITY_SYSTEM, code)


def authored_by(actor: Actor) -> Expr:
    """Documents naming the professional as author: inline, or as the Practitioner or
    PractitionerRole (or the role's Practitioner) they contain or reference (chains read contained
    resources too)."""
    if not actor.idnatps:
        return NOTHING
    ident = Token("identifier", IDNATPS_SYSTEM, actor.idnatps)
    return any_of(
        Token("author-identifier", IDNATPS_SYSTEM, actor.idnatps),
        Chain("author", ("Practitioner",), ident),
        Chain("author", ("PractitionerRole",), any_of(ident, Chain("practitioner", ("Practitioner",), ident))),
    )


def labels(resource: dict[str, Any]) -> set[str]:
    return {
        c.get("code")
        for label in resource.get("securityLabel") or []
        for c in label.get("coding") or []
        if c.get("system") == VISIBILITY_SYSTEM
    }


ARCHIVED_URL = "https://dmp.example.org/fhir/StructureDefinition/dmp-archived"


def archived(resource: dict[str, Any]) -> bool:
    return any(e.get("url") == ARCHIVED_URL and e.get("valueBoolean") for e in resource.get("extension") or [])


def without_labels_and_archive(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", "securityLabel")}
    out["extension"] = [e for e in resource.get("extension") or [] if e.get("url") != ARCHIVED_URL]
    out["securityLabel"] = [
        label
        for label in resource.get("securityLabel") or []
        if not any(c.get("system") == VISIBILITY_SYSTEM for c in label.get("coding") or [])
    ]
    return out


def names_author(doc: dict[str, Any], idnatps: str | None, read: Callable[[str, str], dict[str, Any] | None]) -> bool:
    """Whether ``doc`` names the professional as author: inline, or as the Practitioner or
    PractitionerRole (or the role's Practitioner) it contains or references in the directory, as
    :func:`authored_by` does."""
    if not idnatps:
        return False
    wanted = (IDNATPS_SYSTEM, idnatps)
    return any(
        wanted in _identifiers(person)
        for author in doc.get("author") or []
        if isinstance(author, dict)
        for person in (author, *_author_entries(doc, author, read))
    )


def _author_entries(
    doc: dict[str, Any], author: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """What an author Reference names: its Practitioner or PractitionerRole and, for a role, the
    role's practitioner Reference and the Practitioner it names."""
    entry = _entry(author, read, doc)
    if entry is None or entry.get("resourceType") != "PractitionerRole":
        return [entry] if entry else []
    person = entry.get("practitioner")
    person = person if isinstance(person, dict) else {}
    return [entry, person, _entry(person, read, doc, entry) or {}]


def _entry(
    reference: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None], *holders: dict[str, Any]
) -> dict[str, Any] | None:
    """The Practitioner or PractitionerRole a Reference names: contained in one of ``holders``
    (the document, the role), or a directory entry."""
    ref = str(reference.get("reference", ""))
    for holder in holders:
        for contained in holder.get("contained") or []:
            if isinstance(contained, dict) and f"#{contained.get('id')}" == ref:
                return contained
    rtype, _, rid = ref.partition("/")
    if rtype in ("Practitioner", "PractitionerRole") and rid and "/" not in rid:
        return read(rtype, rid)
    return None


def _identifiers(person: dict[str, Any]) -> list[tuple[Any, Any]]:
    """``(system, value)`` of a Reference's identifier, or of a resource's identifiers."""
    found = person.get("identifier")
    items = found if isinstance(found, list) else [found]
    return [(i.get("system"), i.get("value")) for i in items if isinstance(i, dict)]


def authored_by_patient(doc: dict[str, Any], state: PatientState) -> bool:
    """A patient-authored document names this DMP's Patient as an author, by reference or as a
    contained Patient carrying the INS (R15, R19); another patient as author is not "their own"."""
    return any(is_the_patient(author, doc, state) for author in doc.get("author") or [])


def is_the_patient(author: Any, doc: dict[str, Any], state: PatientState) -> bool:
    """Whether one ``author`` Reference of ``doc`` designates this DMP's Patient."""
    if not isinstance(author, dict):
        return False
    ref = str(author.get("reference", ""))
    if patient_id_in(ref) in state.patient_ids:
        return True
    contained = {f"#{c.get('id')}": c for c in doc.get("contained") or [] if isinstance(c, dict)}
    target = contained.get(ref) or {}
    return target.get("resourceType") == "Patient" and any(
        (i.get("system"), i.get("value")) == state.ins for i in target.get("identifier") or []
    )


def replacements(doc: dict[str, Any]) -> dict[str, str]:
    """The ids of the local documents ``doc`` replaces (``relatesTo`` ``replaces``), each with the
    element that names it (the first, when several do)."""
    out: dict[str, str] = {}
    for k, relation in enumerate(doc.get("relatesTo") or []):
        ref = str((relation.get("target") or {}).get("reference", ""))
        parts = ref.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if relation.get("code") == "replaces" and len(parts) >= 2 and parts[-2] == "DocumentReference":
            out.setdefault(parts[-1], f"DocumentReference.relatesTo[{k}].target")
    return out
