"""An OpenAPI 3 document generated from the CapabilityStatement.

Why generated: integrators' tools (code generators, API explorers) read OpenAPI, not FHIR
CapabilityStatements. Deriving it from the statement — itself derived from what the server does —
keeps the two from disagreeing: a path appears for exactly the interactions, search parameters and
operations the statement lists.
"""

from __future__ import annotations

from typing import Any

from fhir_server.fhir.capability import PATIENT_COMPARTMENT_DEFINITION
from fhir_server.fhir.interactions.compartment import PATIENT_COMPARTMENT
from fhir_server.fhir.service import Operation

FHIR_JSON = "application/fhir+json"
_RESOURCE = {"$ref": "#/components/schemas/Resource"}
_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$"}}
_VID = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}}
#: What a search parameter's value looks like, per R4 search parameter type (OpenAPI has strings).
_FORMAT = {
    "token": "[system|]code",
    "reference": "[Type/]id or URL",
    "date": "[prefix]date",
    "number": "[prefix]number",
    "quantity": "[prefix]number[|system|code]",
    "string": "text",
    "uri": "URI",
    "composite": "value$value",
    "special": "",
}


def openapi_document(capability: dict[str, Any], operations: tuple[Operation, ...]) -> dict[str, Any]:
    """The OpenAPI document of a statement; ``operations`` say at which levels and with which
    methods each operation it lists is invoked."""
    rest = capability["rest"][0]
    paths: dict[str, dict[str, Any]] = {
        "/metadata": {
            "get": _op("The CapabilityStatement", "capabilities", [], FHIR_JSON, public=True),
        },
    }
    system = {i["code"] for i in rest.get("interaction", [])}
    if system & {"transaction", "batch"}:
        paths["/"] = {"post": _op("A batch or transaction Bundle", "transaction", [], FHIR_JSON, body=True)}
    if "history-system" in system:
        paths["/_history"] = {"get": _op("The history of every resource", "history-system", [], FHIR_JSON)}
    for resource in rest["resource"]:
        _type_paths(paths, resource, rest.get("searchParam", []), operations)
    if PATIENT_COMPARTMENT_DEFINITION in rest.get("compartment", []):
        for resource in rest["resource"]:
            if resource["type"] in PATIENT_COMPARTMENT:
                rtype, params = resource["type"], [_search_param(p) for p in resource.get("searchParam", [])]
                summary, op_id = f"Search {rtype} in a patient's compartment", f"search-Patient-compartment-{rtype}"
                paths[f"/Patient/{{id}}/{rtype}"] = {"get": _op(summary, op_id, [_ID, *params], FHIR_JSON)}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": capability.get("title", capability["name"]),
            "version": capability.get("version", ""),
            "description": f"Generated from the CapabilityStatement {capability['url']} (FHIR "
            f"{capability['fhirVersion']}). {rest.get('security', {}).get('description', '')}",
        },
        "servers": [{"url": capability["implementation"]["url"]}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Resource": {
                    "type": "object",
                    "required": ["resourceType"],
                    "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
                    "additionalProperties": True,
                },
                "OperationOutcome": {
                    "type": "object",
                    "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]}},
                    "additionalProperties": True,
                },
            },
        },
    }


def _type_paths(
    paths: dict[str, dict[str, Any]],
    resource: dict[str, Any],
    common: list[dict[str, Any]],
    operations: tuple[Operation, ...],
) -> None:
    rtype = resource["type"]
    offered = {i["code"] for i in resource.get("interaction", [])}
    search = [_search_param(p) for p in [*resource.get("searchParam", []), *common]]
    type_path, instance = paths.setdefault(f"/{rtype}", {}), paths.setdefault(f"/{rtype}/{{id}}", {})
    if "search-type" in offered:
        type_path["get"] = _op(f"Search {rtype}", f"search-{rtype}", search, FHIR_JSON)
        paths[f"/{rtype}/_search"] = {"post": _op(f"Search {rtype} (form)", f"search-post-{rtype}", [], FHIR_JSON)}
    if "create" in offered:
        type_path["post"] = _op(f"Create a {rtype}", f"create-{rtype}", [], FHIR_JSON, body=True)
    if "read" in offered:
        instance["get"] = _op(f"Read a {rtype}", f"read-{rtype}", [_ID], FHIR_JSON)
    if "update" in offered:
        instance["put"] = _op(f"Update (or create) a {rtype}", f"update-{rtype}", [_ID], FHIR_JSON, body=True)
    if "patch" in offered:
        instance["patch"] = _op(f"Patch a {rtype}", f"patch-{rtype}", [_ID], FHIR_JSON, body=True)
    if "delete" in offered:
        instance["delete"] = _op(f"Delete a {rtype}", f"delete-{rtype}", [_ID], None)
    if "history-type" in offered:
        paths[f"/{rtype}/_history"] = {"get": _op(f"History of every {rtype}", f"history-type-{rtype}", [], FHIR_JSON)}
    if "history-instance" in offered:
        paths[f"/{rtype}/{{id}}/_history"] = {
            "get": _op(f"History of a {rtype}", f"history-instance-{rtype}", [_ID], FHIR_JSON)
        }
    if "vread" in offered:
        paths[f"/{rtype}/{{id}}/_history/{{vid}}"] = {
            "get": _op(f"A version of a {rtype}", f"vread-{rtype}", [_ID, _VID], FHIR_JSON)
        }
    for declared in resource.get("operation", []):
        _operation_paths(paths, rtype, declared, operations)
    for path in (f"/{rtype}", f"/{rtype}/{{id}}"):
        if not paths[path]:
            del paths[path]


def _operation_paths(
    paths: dict[str, dict[str, Any]], rtype: str, declared: dict[str, Any], operations: tuple[Operation, ...]
) -> None:
    """An operation at the levels and with the methods the server implements it."""
    for operation in operations:
        if operation.definition != declared["definition"] or operation.resource_type not in (rtype, "Resource"):
            continue
        for level in operation.levels:
            path = f"/{rtype}/${operation.name}" if level == "type" else f"/{rtype}/{{id}}/${operation.name}"
            params = [_ID] if level == "instance" else []
            entry = paths.setdefault(path, {})
            for method in operation.methods:
                summary = f"${operation.name} ({declared['definition']})"
                op_id = f"{operation.name}-{level}-{rtype}-{method.lower()}"
                entry[method.lower()] = _op(summary, op_id, params, FHIR_JSON, body=method == "POST")


def _search_param(param: dict[str, Any]) -> dict[str, Any]:
    described = f"{param['type']} parameter: {_FORMAT.get(param['type'], '')}".rstrip(": ")
    if param.get("definition"):
        described += f" ({param['definition']})"
    return {
        "name": param["name"],
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": described,
    }


def _op(
    summary: str,
    operation_id: str,
    parameters: list[dict[str, Any]],
    media: str | None,
    *,
    body: bool = False,
    public: bool = False,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "success"}
    if media:
        ok["content"] = {media: {"schema": _RESOURCE}}
    error = {"description": "an OperationOutcome saying what went wrong", "content": {FHIR_JSON: {"schema": _OUTCOME}}}
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "parameters": parameters,
        "responses": {"200": ok, "4XX": error},
    }
    if body:
        operation["requestBody"] = {"required": True, "content": {FHIR_JSON: {"schema": _RESOURCE}}}
    if public:
        operation["security"] = []
    return operation
