"""FHIR operations: the ones this server implements, where each is invoked, and its code.

An operation is invoked on a type (``[base]/[type]/$name``) or on one resource
(``[base]/[type]/[id]/$name``); which one is part of its definition (OperationDefinition ``type``
and ``instance``), so the router asks this registry rather than knowing any operation itself. The
CapabilityStatement lists every operation here under its resource type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fhir_server.conformance.validate import VALIDATE, validate
from fhir_server.documents.generate_metadata import GENERATE_METADATA, generate_metadata
from fhir_server.export.operation import DMP_EXPORT, dmp_export
from fhir_server.interactions.everything import EVERYTHING, everything
from fhir_server.messages import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from fhir_server.service import FhirService

Level = Literal["type", "instance"]
#: An operation's code: the service, the request, and the id of the resource it is invoked on
#: (None for a type-level operation).
Implementation = Callable[["FhirService", FhirRequest, "str | None"], FhirResponse]


@dataclass(frozen=True)
class Operation:
    """One operation: where it is invoked, its OperationDefinition, and its implementation."""

    resource_type: str  # "Resource": on every served type
    name: str  # without the "$"
    definition: str  # OperationDefinition canonical, for the CapabilityStatement
    run: Implementation
    methods: tuple[str, ...] = ("POST",)
    levels: tuple[Level, ...] = ("type",)


def find(resource_type: str, name: str, level: Level) -> Operation | None:
    """The operation ``$name`` on ``resource_type`` at that level, if the server implements it."""
    return next(
        (
            op
            for op in OPERATIONS
            if op.name == name and op.resource_type in (resource_type, "Resource") and level in op.levels
        ),
        None,
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "DocumentReference",
        "generate-metadata",
        GENERATE_METADATA,
        lambda svc, req, _id: generate_metadata(svc, req),
    ),
    Operation("Patient", "everything", EVERYTHING, everything, methods=("GET",), levels=("instance",)),
    Operation("Patient", "dmp-export", DMP_EXPORT, dmp_export, methods=("GET",), levels=("instance",)),
    Operation("Resource", "validate", VALIDATE, validate, methods=("GET", "POST"), levels=("type", "instance")),
)
