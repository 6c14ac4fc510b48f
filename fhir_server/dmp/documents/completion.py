"""A minimal DocumentReference completed from its CDA's header (IHE MHD ITI-65 minimal metadata).

What the client said is kept; only what it left out is filled in, from the DocumentReference the
CDA header yields (:func:`~fhir_server.dmp.documents.cda.document_reference_from_cda`), with the
contained resources that filling needs (renamed where their ids clash with the client's).
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

from fhir_server.dmp.documents.cda import CdaDocument, document_reference_from_cda


def complete_from_cda(
    reference: dict[str, Any], doc: CdaDocument, attachment: dict[str, Any], data: bytes, patient_id: str | None
) -> None:
    """Fill what the minimal DocumentReference leaves out with what the CDA header says (type,
    category, date, author, custodian, labels, context...), keeping everything it does say."""
    subject = reference.get("subject") or ({"reference": f"Patient/{patient_id}"} if patient_id else {})
    derived: dict[str, Any] = document_reference_from_cda(
        doc,
        patient_reference=subject,
        binary_url=str(attachment.get("url")),
        size=len(data),
        sha1_b64=base64.b64encode(hashlib.sha1(data).digest()).decode(),
        content_type=str(attachment.get("contentType") or "text/xml"),
    )
    if not subject:
        derived.pop("subject", None)
    renamed = _rename_contained(derived, {str(c.get("id")) for c in reference.get("contained") or []})
    before = _local_targets(reference)
    _fill(reference, {k: v for k, v in renamed.items() if k != "contained"})
    needed = _local_targets(reference) - before
    added = _closure(needed, renamed.get("contained") or [])
    if added:
        reference["contained"] = [*(reference.get("contained") or []), *added]


def _fill(target: dict[str, Any], source: dict[str, Any]) -> None:
    """Copy into ``target`` what it lacks of ``source``, descending into objects (and into the
    single ``content`` both have)."""
    for key, value in source.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(target[key], dict):
            _fill(target[key], value)
        elif key == "content" and len(value) == 1 and isinstance(target[key], list) and len(target[key]) == 1:
            _fill(target[key][0], value[0])


def _rename_contained(resource: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    """The CDA-derived resource with its contained ids prefixed where they clash with ours."""
    renames = {f"#{c['id']}": f"#cda-{c['id']}" for c in resource.get("contained") or [] if str(c.get("id")) in taken}
    if not renames:
        return resource

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(out.get("reference"), str) and out["reference"] in renames:
                out["reference"] = renames[out["reference"]]
            if out.get("resourceType") and f"#{out.get('id')}" in renames:
                out["id"] = renames[f"#{out['id']}"][1:]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    renamed: dict[str, Any] = walk(resource)
    return renamed


def _local_targets(node: Any) -> set[str]:
    """The ``#id`` references in ``node`` (outside its contained resources)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("#"):
                found.add(value[1:])
            elif key != "contained":
                found |= _local_targets(value)
    elif isinstance(node, list):
        for value in node:
            found |= _local_targets(value)
    return found


def _closure(needed: set[str], contained: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The contained resources ``needed`` names, and those they name in turn."""
    by_id = {str(c.get("id")): c for c in contained}
    wanted, queue = set(), list(needed)
    while queue:
        current = queue.pop()
        if current in wanted or current not in by_id:
            continue
        wanted.add(current)
        queue.extend(_local_targets({k: v for k, v in by_id[current].items() if k != "id"}))
    return [c for c in contained if str(c.get("id")) in wanted]
