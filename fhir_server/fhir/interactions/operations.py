"""FHIR operations: the ones this server implements, where each is invoked, and its code.

An operation is invoked on a type (``[base]/[type]/$name``) or on one resource
(``[base]/[type]/[id]/$name``); which one is part of its definition (OperationDefinition ``type``
and ``instance``), so the router asks the service's registry rather than knowing any operation itself. The
CapabilityStatement lists every registered operation under its resource type.
"""

from __future__ import annotations

from fhir_server.fhir.interactions.everything import EVERYTHING, everything
from fhir_server.fhir.service import Extensions, Level, Operation

#: The operations of the FHIR machinery itself; capabilities register theirs the same way.
CORE = Extensions(
    operations=(Operation("Patient", "everything", EVERYTHING, everything, method="GET", level="instance"),)
)


def find(operations: tuple[Operation, ...], resource_type: str, name: str, level: Level) -> Operation | None:
    """The operation ``$name`` on ``resource_type`` at that level, if the server implements it."""
    return next(
        (op for op in operations if (op.resource_type, op.name, op.level) == (resource_type, name, level)),
        None,
    )
