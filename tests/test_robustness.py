"""Bad input never gets a 500: mutated resources, garbage searches, broken Bundles.

The mutations are pseudo-random with fixed seeds, so a failure is reproducible.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_server.fhir.service import FhirService
from tests.paths import EXAMPLES, HL7_EXAMPLES

SEEDS = range(6)
SAMPLES = [
    HL7_EXAMPLES / "Patient-example.json",
    HL7_EXAMPLES / "Consent-consent-example-basic.json",
    HL7_EXAMPLES / "AuditEvent-example.json",
    EXAMPLES / "ihe-mhd/examples/DocumentReference-ex-DocumentReferenceComprehensive.json",
    EXAMPLES / "ihe-mhd/examples/List-ex-minimalSubmissionSet.json",
]
WEIRD: list[Any] = [
    None,
    "",
    " ",
    0,
    -1,
    1.5e308,
    True,
    [],
    {},
    [None],
    {"x": 1},
    "\u0000",
    "ü" * 3,
    "<x>",
    "' OR 1=1 --",
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    mutated = copy.deepcopy(resource)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(mutated) if p and p[0] != "resourceType"]
        if not paths:
            break
        path = rng.choice(paths)
        parent = mutated
        for step in path[:-1]:
            parent = parent[step]
        action = rng.random()
        if action < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.5 and isinstance(parent, dict):
            parent["bogus" + str(rng.randint(0, 9))] = rng.choice(WEIRD)
        else:
            parent[path[-1]] = rng.choice(WEIRD)
    return mutated


@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_resources_get_4xx_not_500(client: FlaskClient, seed: int) -> None:
    rng = random.Random(seed)
    for sample in SAMPLES:
        resource = json.loads(sample.read_text())
        for _ in range(15):
            body = _mutate(resource, rng)
            response = client.post(f"/fhir/{resource['resourceType']}", json=body)
            assert response.status_code in (201, 400, 422), (body, response.get_data(as_text=True))
            if response.status_code != 201:
                assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("seed", SEEDS)
def test_garbage_searches_get_200_or_400(client: FlaskClient, service: FhirService, seed: int) -> None:
    rng = random.Random(seed)
    values = [
        "",
        "x",
        "|",
        "a|b|c",
        "ge",
        "gt2020-13-45",
        "eq1e400",
        "ap",
        "http://",
        "Patient/",
        "a,b,,c",
        "\\",
        "%00",
    ]
    modifiers = [
        "",
        ":missing",
        ":exact",
        ":contains",
        ":text",
        ":not",
        ":in",
        ":below",
        ":above",
        ":identifier",
        ":Foo",
    ]
    for rtype in ("Patient", "DocumentReference", "Consent", "List", "AuditEvent"):
        codes = [*service.registry.for_type(rtype), "_sort", "_count", "_include", "_has:List:item:_id", "x.y"]
        for _ in range(25):
            name = rng.choice(codes) + rng.choice(modifiers)
            params = {name: rng.choice(values)}
            for strict in (True, False):
                headers = {"Prefer": "handling=strict"} if strict else {}
                response = client.get(f"/fhir/{rtype}", query_string=params, headers=headers)
                assert response.status_code in (200, 400), (rtype, params, response.get_data(as_text=True))


def _bundle(kind: str, *entries: Any) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b'{"resourceType": "Bundle"}',
        b'{"resourceType": "Bundle", "type": "transaction", "entry": {}}',
        _bundle("transaction", None),
        _bundle("transaction", {"request": {"method": "POST", "url": "Nope"}, "resource": {}}),
        _bundle("batch", {"request": {"method": "PATCH", "url": "Patient/1"}, "resource": 7}),
        _bundle(
            "transaction",
            {"request": {"method": "PUT", "url": "Patient?name="}, "resource": {"resourceType": "Patient"}},
        ),
        _bundle("transaction", {"request": {"method": "DELETE", "url": "Patient/../../x"}}),
    ],
)
def test_broken_bundles_get_4xx(client: FlaskClient, body: bytes) -> None:
    response = client.post("/fhir", data=body, headers={"Content-Type": "application/fhir+json"})
    body_out = response.get_json()
    if body_out["resourceType"] == "Bundle":  # a batch answers 200; each failed entry carries its 4xx
        assert body_out["type"] == "batch-response"
        assert all(e["response"]["status"].startswith("4") for e in body_out["entry"]), body_out
    else:
        assert 400 <= response.status_code < 500, response.data
        assert body_out["resourceType"] == "OperationOutcome"


def test_deeply_nested_json_is_refused(client: FlaskClient) -> None:
    body = {"resourceType": "Patient", "extension": []}
    node = body
    for _ in range(300):
        child: dict[str, Any] = {"url": "http://x", "extension": []}
        node["extension"].append(child)
        node = child
    response = client.post("/fhir/Patient", json=body)
    assert response.status_code in (400, 422)
