"""The CapabilityStatement, generated from what the server really supports.

Types come from the served list, search parameters from the loaded registry, interactions and
formats from the code that implements them. ``capability/`` holds the published copy; a test
checks that the two agree, so the documentation cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

from authz.authserver.discovery import launch_endpoints, token_endpoint
from fhir_server.fhir.declarations import Declarations
from fhir_server.fhir.profiles import load_profiles
from fhir_server.fhir.service import FhirService, Operation
from fhirmodel.searchparams import SearchParamRegistry

SOFTWARE_NAME = "dmp-server"
SOFTWARE_VERSION = "0.1.0"
RELEASE_DATE = "2026-11-22"
CANONICAL = "https://dmp.example.org/fhir/CapabilityStatement/dmp-server"
#: SMART's extension naming the OAuth endpoints in ``rest.security`` (the discovery document is
#: the primary source since SMART 2.0; the extension stays for clients that read only /metadata).
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
FORMATS = ("application/fhir+json", "application/fhir+xml", "json", "xml")
PATCH_FORMATS = ("application/json-patch+json", "application/fhir+json", "application/fhir+xml")
PATIENT_COMPARTMENT_DEFINITION = "http://hl7.org/fhir/CompartmentDefinition/patient"
#: Search result parameters every type supports (R4 §3.1.1.5).
RESULT_PARAMS = ("_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_has")


def _oauth_uris(base_url: str) -> dict[str, str]:
    return {"token": token_endpoint(base_url), **launch_endpoints(base_url)}


def capability_of(svc: FhirService) -> dict[str, Any]:
    """The CapabilityStatement of a service: what it serves, with the operations registered in it,
    the interactions its declarations allow and the profiles it knows (``profiles/``)."""
    return capability_statement(
        svc.registry,
        svc.served_types,
        svc.extensions.operations,
        svc.config.base_url,
        svc.declarations,
        load_profiles().resource_profiles(),
    )


def capability_statement(
    registry: SearchParamRegistry,
    served_types: tuple[str, ...],
    operations: tuple[Operation, ...],
    base_url: str,
    declarations: Declarations,
    profiles: dict[str, list[str]],
) -> dict[str, Any]:
    """The statement; ``profiles`` are the canonical urls of the profiles the server knows (and
    checks) per type they constrain."""
    resources = [
        _resource(registry, served_types, operations, rtype, declarations, profiles.get(rtype, []))
        for rtype in served_types
    ]
    return {
        "resourceType": "CapabilityStatement",
        "id": SOFTWARE_NAME,
        "url": CANONICAL,
        "version": SOFTWARE_VERSION,
        "name": "DmpServer",
        "title": "DMP FHIR R4 document server",
        "status": "active",
        "date": RELEASE_DATE,
        "publisher": "dmp-server project",
        "kind": "instance",
        "instantiates": list(declarations.instantiates),
        "software": {"name": SOFTWARE_NAME, "version": SOFTWARE_VERSION},
        "implementation": {"description": "DMP health-document server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": list(FORMATS),
        "patchFormat": list(PATCH_FORMATS),
        "implementationGuide": list(declarations.implementation_guides),
        "rest": [
            {
                "mode": "server",
                "security": {
                    "extension": [
                        {
                            "url": OAUTH_URIS,
                            "extension": [
                                {"url": name, "valueUri": uri}
                                for name, uri in _oauth_uris(base_url).items()
                            ],
                        }
                    ],
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "Every request but this statement carries a bearer JWT (RS256 or ES256) from a "
                    "trusted issuer, with the IHE IUA claims of the DMP contract; SMART v2 scopes are a coarse "
                    "gate, the DMP access rules decide the rest. Clinical software registered with the server gets "
                    "tokens from its SMART Backend Services token endpoint (client_credentials, private_key_jwt "
                    "RS384/ES384, patient named by person_id); see .well-known/smart-configuration.",
                },
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                # Searches in a patient's compartment: GET Patient/[id]/[type] (R4 §3.1.1.1.1).
                "compartment": [PATIENT_COMPARTMENT_DEFINITION],
                "searchParam": [
                    {"name": name, "type": "special" if name == "_has" else "number" if name == "_count" else "string"}
                    for name in RESULT_PARAMS
                ],
            }
        ],
    }


def _resource(
    registry: SearchParamRegistry,
    served_types: tuple[str, ...],
    operations: tuple[Operation, ...],
    rtype: str,
    declarations: Declarations,
    supported_profiles: list[str],
) -> dict[str, Any]:
    """What the server supports for one type: interactions, search parameters, operations."""
    params = registry.for_type(rtype)
    entry: dict[str, Any] = {
        "type": rtype,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
    }
    if supported_profiles:
        entry["supportedProfile"] = sorted(supported_profiles)
    offered = declarations.interactions[rtype]
    entry |= {
        "interaction": [{"code": code} for code in offered],
        "versioning": "versioned-update",
        "readHistory": "vread" in offered,
        "updateCreate": "update" in offered,
        "conditionalCreate": "create" in offered,
        # If-None-Match (ETag) and If-Modified-Since both answer 304 on a read.
        "conditionalRead": "full-support" if "read" in offered else "not-supported",
        "conditionalUpdate": "update" in offered,
        "conditionalDelete": "single" if "delete" in offered else "not-supported",
        "referencePolicy": ["literal", "logical", "resolves"],
        "searchInclude": sorted(f"{rtype}:{p.code}" for p in params.values() if p.type == "reference"),
        "searchRevInclude": sorted(
            f"{other}:{p.code}"
            for other in served_types
            for p in registry.for_type(other).values()
            if p.type == "reference" and (not p.targets or rtype in p.targets)
        ),
        "searchParam": [
            {"name": p.code, "definition": p.url, "type": p.type} for p in sorted(params.values(), key=lambda p: p.code)
        ],
    }
    # R4: operation.name is the name without "$"; the definition is the OperationDefinition's url.
    listed = [
        {"name": op.name, "definition": op.definition} for op in operations if op.resource_type in (rtype, "Resource")
    ]
    if listed:
        entry["operation"] = listed
    return entry
