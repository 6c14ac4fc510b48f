"""FHIR files as import units: what to send the FHIR service, and where it came from.

A unit is what lands whole or not at all: a ``transaction`` Bundle (or a ``batch``, whose entries
the service answers one by one) is one request to the base; a ``collection`` Bundle, a lone
resource and each line of an NDJSON file are one resource each, written by ``PUT`` when it has an
id (so importing it again changes nothing but its version) and by ``POST`` otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

#: File name endings read, and how.
JSON_SUFFIXES = (".json",)
NDJSON_SUFFIXES = (".ndjson", ".jsonl")


class SourceError(Exception):
    """A file that cannot be read as FHIR at all (its units are not tried)."""


@dataclass(frozen=True)
class Unit:
    """One request of an import. ``key`` names it for good (the file's digest and the unit's
    place in it), so a restarted import recognises what it already did even if the file moved."""

    key: str
    where: str  # for people: file name and line or entry
    method: str
    path: str
    body: Any


def files_of(source: Path) -> list[Path]:
    """The files to import: ``source`` itself, or every JSON and NDJSON file below it, in name order."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SourceError(f"{source}: no such file or directory")
    suffixes = JSON_SUFFIXES + NDJSON_SUFFIXES
    return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def units_of(path: Path) -> list[Unit]:
    """The units of one file (read whole: a unit is checked before any is sent)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() in NDJSON_SUFFIXES:
        return list(_ndjson_units(path, digest, data))
    try:
        resource = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{path}: not JSON ({exc})") from None
    return list(_json_units(path, digest, resource))


def _ndjson_units(path: Path, digest: str, data: bytes) -> Iterator[Unit]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"{where}: not JSON ({exc})") from None
        yield _resource_unit(f"{digest}:{number}", where, resource)


def _json_units(path: Path, digest: str, resource: Any) -> Iterator[Unit]:
    kind = resource.get("type") if isinstance(resource, dict) and resource.get("resourceType") == "Bundle" else None
    if kind in ("transaction", "batch"):
        yield Unit(f"{digest}:bundle", path.name, "POST", "", resource)
    elif kind == "collection":
        for index, entry in enumerate(resource.get("entry") or []):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            yield _resource_unit(f"{digest}:{index}", f"{path.name} entry[{index}]", inner)
    else:
        yield _resource_unit(f"{digest}:resource", path.name, resource)


def _resource_unit(key: str, where: str, resource: Any) -> Unit:
    """One resource: ``PUT Type/id`` when it has an id, else ``POST Type`` (the service refuses
    what is no resource, with a message naming the problem)."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    rid = resource.get("id") if isinstance(resource, dict) else None
    if isinstance(rtype, str) and isinstance(rid, str):
        return Unit(key, where, "PUT", f"{rtype}/{rid}", resource)
    return Unit(key, where, "POST", rtype if isinstance(rtype, str) else "", resource)
