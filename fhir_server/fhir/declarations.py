"""What the server declares beyond its code: the interactions each type allows, the IHE actors
it implements and the implementation guides it follows (``ig/capability/capability.json``).

Why data: the router refuses (405) an interaction a type does not allow from this same table, and
the CapabilityStatement lists exactly what it holds, so the statement cannot advertise what the
server answers 405 to (the access trail is written by the server only, DMP-RULES R17, so
``AuditEvent`` allows no create, update, patch or delete).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: The R4 type-level restful interactions (CapabilityStatement.rest.resource.interaction.code), in
#: the order the statement lists them.
TYPE_INTERACTIONS: tuple[str, ...] = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


@dataclass(frozen=True)
class Declarations:
    interactions: dict[str, tuple[str, ...]]
    instantiates: tuple[str, ...]
    implementation_guides: tuple[str, ...]

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether ``interaction`` (a type-level code) is offered on ``resource_type``."""
        return interaction in self.interactions.get(resource_type, ())

    @classmethod
    def load(cls, path: Path, served_types: tuple[str, ...]) -> Declarations:
        """Read the file; every served type must be listed, with known interaction codes only (a
        mistake there would silently close or open a whole type, so it stops the start)."""
        data = json.loads(path.read_text(encoding="utf-8"))
        listed: dict[str, list[str]] = data["interactions"]
        missing = sorted(set(served_types) - set(listed))
        if missing:
            raise ValueError(f"{path}: no interactions listed for {', '.join(missing)}")
        interactions: dict[str, tuple[str, ...]] = {}
        for rtype in served_types:
            unknown = sorted(set(listed[rtype]) - set(TYPE_INTERACTIONS))
            if unknown:
                raise ValueError(f"{path}: unknown interaction(s) for {rtype}: {', '.join(unknown)}")
            interactions[rtype] = tuple(code for code in TYPE_INTERACTIONS if code in listed[rtype])
        return cls(interactions, tuple(data.get("instantiates", ())), tuple(data.get("implementationGuide", ())))
