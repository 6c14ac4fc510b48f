"""``_summary`` and ``_elements`` (R4 search.html §3.1.1.5.7-8): subsets of a resource.

A subset is marked with the ``SUBSETTED`` tag so that nobody mistakes it for the whole resource
and writes it back.
"""

from __future__ import annotations

from typing import Any

from fhirmodel.schema import type_info

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if t != SUBSETTED]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta
    return resource


def _mandatory(resource_type: str) -> set[str]:
    info = type_info(resource_type)
    return {name for name, e in info.elements.items() if e.required}


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """Apply ``_summary=true|text|data|false`` to one resource (``count`` is handled by search)."""
    if mode == "false":
        return resource
    rtype = resource["resourceType"]
    if mode == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif mode == "text":
        keep = {*_ALWAYS, "text", *_mandatory(rtype)}
        out = {k: v for k, v in resource.items() if k in keep}
    else:  # true: the elements marked as summary in the definition
        info = type_info(rtype)
        keep = {name for name, e in info.elements.items() if e.summary} | set(_ALWAYS) | _mandatory(rtype)
        out = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    return _tag(out)


def select_elements(resource: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """Apply ``_elements``: the listed top-level elements plus mandatory ones."""
    rtype = resource["resourceType"]
    wanted = {e.split(".", 1)[1] if e.startswith(rtype + ".") else e for e in elements}
    keep = wanted | set(_ALWAYS) | _mandatory(rtype)
    out = {k: v for k, v in resource.items() if k in keep or k.lstrip("_") in keep}
    return _tag(out)
