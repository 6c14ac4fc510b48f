"""PATCH bodies: JSON Patch (RFC 6902) and FHIRPath Patch (R4 fhirpatch.html).

FHIRPath Patch paths are resolved by a small locator that understands what patch documents use in
practice — element names, ``[n]`` and ``.where(name='value')`` — so that every operation knows
the container and key it changes. Anything else is refused with a clear 422, never guessed.
"""

from __future__ import annotations

import re
from typing import Any

from fhirmodel.errors import FhirError, bad_request

JSON_PATCH_TYPE = "application/json-patch+json"


def apply_patch(resource: dict[str, Any], body: Any, content_type: str | None) -> dict[str, Any]:
    """Apply a JSON Patch (list of operations) or FHIRPath Patch (Parameters) to ``resource``."""
    if isinstance(body, list) or (content_type or "").startswith(JSON_PATCH_TYPE):
        return _json_patch(resource, body)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        return _fhirpath_patch(resource, body)
    raise FhirError(415, "PATCH needs a JSON Patch document or a FHIRPath Patch Parameters resource", "not-supported")


# -- JSON Patch -----------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"JSON Patch: invalid pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise FhirError(422, f"JSON Patch: path {path} does not exist", "processing")


def _json_patch(doc: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise bad_request("JSON Patch: the body must be an array of operations")
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"JSON Patch: operation {n} needs 'op' and 'path'")
        path = op["path"]
        tokens = _pointer(path)
        if not tokens:
            raise FhirError(422, "JSON Patch: the whole resource cannot be replaced by a patch", "processing")
        match op["op"]:
            case "add":
                _add(doc, tokens, _value(op, n), path)
            case "remove":
                _remove(doc, tokens, path)
            case "replace":
                _remove(doc, tokens, path)
                _add(doc, tokens, _value(op, n), path)
            case "move" | "copy":
                source = op.get("from")
                src_tokens = _pointer(source)
                if not src_tokens:
                    whole = f"JSON Patch: operation {n} cannot {op['op']} the whole resource"
                    raise FhirError(422, whole, "processing")
                parent, key = _resolve_parent(doc, src_tokens, str(source))
                value = _child(parent, key, str(source))
                if op["op"] == "move":
                    _remove(doc, src_tokens, str(source))
                else:
                    import copy

                    value = copy.deepcopy(value)
                _add(doc, tokens, value, path)
            case "test":
                parent, key = _resolve_parent(doc, tokens, path)
                if _child(parent, key, path) != _value(op, n):
                    raise FhirError(422, f"JSON Patch: test failed at {path}", "processing")
            case other:
                raise bad_request(f"JSON Patch: unknown operation '{other}'")
    return doc


def _value(op: dict[str, Any], n: int) -> Any:
    if "value" not in op:
        raise bad_request(f"JSON Patch: operation {n} needs a 'value'")
    return op["value"]


def _add(doc: Any, tokens: list[str], value: Any, path: str) -> None:
    parent, key = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise FhirError(422, f"JSON Patch: index out of range at {path}", "processing")
    else:
        raise FhirError(422, f"JSON Patch: cannot add at {path}", "processing")


def _remove(doc: Any, tokens: list[str], path: str) -> None:
    parent, key = _resolve_parent(doc, tokens, path)
    _child(parent, key, path)
    if isinstance(parent, dict):
        del parent[key]
    else:
        del parent[int(key)]


# -- FHIRPath Patch -------------------------------------------------------------------------

_STEP = re.compile(r"\.?(?P<name>[A-Za-z_]\w*)(?:\[(?P<index>\d+)\])?|\.where\((?P<wf>\w+)\s*=\s*'(?P<wv>[^']*)'\)")


def _parts(param: dict[str, Any]) -> dict[str, Any]:
    return {str(p.get("name")): p for p in param.get("part") or [] if isinstance(p, dict)}


def _part_value(part: dict[str, Any] | None) -> Any:
    """The value of a ``value`` part: a ``value[x]`` or, for complex values, nested parts."""
    if part is None:
        raise bad_request("FHIRPath Patch: operation without a value")
    for key, value in part.items():
        if key.startswith("value") and key != "value":
            return value
    if "resource" in part:
        return part["resource"]
    nested = part.get("part")
    if nested:
        return {p["name"]: _part_value(p) for p in nested if isinstance(p, dict) and "name" in p}
    raise bad_request("FHIRPath Patch: operation without a value")


def _locate(resource: dict[str, Any], path: str) -> list[Any]:
    """Nodes the path selects (dicts or lists), following FHIR's JSON shape."""
    rtype = resource.get("resourceType", "")
    if not path.startswith(rtype):
        raise FhirError(422, f"FHIRPath Patch: path '{path}' must start with {rtype}", "processing")
    nodes: list[Any] = [resource]
    rest = path[len(rtype) :]
    pos = 0
    while pos < len(rest):
        m = _STEP.match(rest, pos)
        if not m or m.end() == pos:
            raise FhirError(422, f"FHIRPath Patch: unsupported path '{path}'", "not-supported")
        pos = m.end()
        if m["wf"]:
            nodes = [n for n in nodes if isinstance(n, dict) and n.get(m["wf"]) == m["wv"]]
            continue
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(node, dict) and m["name"] in node:
                value = node[m["name"]]
                nxt.extend(value if isinstance(value, list) else [value])
        if m["index"] is not None:
            idx = int(m["index"])
            nxt = nxt[idx : idx + 1]
        nodes = nxt
    return nodes


def _split_path(path: str) -> tuple[str, str]:
    """``A.b.c`` → (``A.b``, ``c``): the owner of the last element and its name."""
    m = re.match(r"^(.*)\.([A-Za-z_]\w*)$", path)
    if not m:
        raise FhirError(422, f"FHIRPath Patch: path '{path}' does not name an element", "processing")
    return m.group(1), m.group(2)


def _single(nodes: list[Any], path: str) -> Any:
    if len(nodes) != 1:
        raise FhirError(422, f"FHIRPath Patch: path '{path}' matches {len(nodes)} elements, not one", "processing")
    return nodes[0]


def _fhirpath_patch(resource: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    for op_param in params.get("parameter") or []:
        if not isinstance(op_param, dict) or op_param.get("name") != "operation":
            raise bad_request("FHIRPath Patch: every parameter must be an 'operation'")
        parts = _parts(op_param)
        op_type = (parts.get("type") or {}).get("valueCode")
        path = (parts.get("path") or {}).get("valueString")
        if not op_type or not path:
            raise bad_request("FHIRPath Patch: an operation needs a type and a path")
        match op_type:
            case "add":
                owner = _single(_locate(resource, path), path)
                name = (parts.get("name") or {}).get("valueString")
                if not name or not isinstance(owner, dict):
                    raise bad_request("FHIRPath Patch: add needs a name and an element to add to")
                value = _part_value(parts.get("value"))
                existing = owner.get(name)
                if isinstance(existing, list):
                    existing.append(value)
                elif existing is None:
                    owner[name] = value
                else:
                    raise FhirError(422, f"FHIRPath Patch: {path}.{name} already has a value", "processing")
            case "replace" | "delete":
                owner_path, name = _split_path(path)
                targets = _locate(resource, path)
                if op_type == "replace":
                    _single(targets, path)
                    _replace(resource, owner_path, name, targets[0], _part_value(parts.get("value")))
                elif targets:
                    _single(targets, path)
                    _replace(resource, owner_path, name, targets[0], None)
            case "insert" | "move":
                _list_op(resource, op_type, path, parts)
            case other:
                raise bad_request(f"FHIRPath Patch: unknown operation type '{other}'")
    return resource


def _replace(resource: dict[str, Any], owner_path: str, name: str, target: Any, value: Any) -> None:
    """Replace (or delete, when ``value`` is None) the element ``target`` under its owner."""
    for owner in _locate(resource, owner_path):
        if not isinstance(owner, dict) or name not in owner:
            continue
        current = owner[name]
        if isinstance(current, list):
            for i, item in enumerate(current):
                if item is target:
                    if value is None:
                        del current[i]
                        if not current:
                            del owner[name]
                    else:
                        current[i] = value
                    return
        elif current is target:
            if value is None:
                del owner[name]
            else:
                owner[name] = value
            return


def _list_op(resource: dict[str, Any], op_type: str, path: str, parts: dict[str, Any]) -> None:
    owner_path, name = _split_path(path)
    owner = _single(_locate(resource, owner_path), owner_path)
    items = owner.get(name) if isinstance(owner, dict) else None
    if not isinstance(items, list):
        raise FhirError(422, f"FHIRPath Patch: {path} is not a list", "processing")
    if op_type == "insert":
        index = (parts.get("index") or {}).get("valueInteger")
        if not isinstance(index, int) or not 0 <= index <= len(items):
            raise FhirError(422, "FHIRPath Patch: insert index out of range", "processing")
        items.insert(index, _part_value(parts.get("value")))
        return
    source = (parts.get("source") or {}).get("valueInteger")
    dest = (parts.get("destination") or {}).get("valueInteger")
    if not isinstance(source, int) or not isinstance(dest, int) or not (0 <= source < len(items)):
        raise FhirError(422, "FHIRPath Patch: move indexes out of range", "processing")
    item = items.pop(source)
    if not 0 <= dest <= len(items):
        raise FhirError(422, "FHIRPath Patch: move destination out of range", "processing")
    items.insert(dest, item)
