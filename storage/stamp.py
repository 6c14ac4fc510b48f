"""The version stamp every backend writes into a resource it stores."""

from __future__ import annotations

from typing import Any

import orjson

from fhirmodel.dates import instant_now


def stamp(resource: dict[str, Any], version: int) -> tuple[bytes, str]:
    """Set ``meta.versionId`` and ``meta.lastUpdated`` (now); the JSON to store and that instant."""
    last_updated = instant_now()
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    resource["meta"] = meta
    return orjson.dumps(resource), last_updated
