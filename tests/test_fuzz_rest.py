"""Property-based fuzzing of the REST surface (``hypothesis``): methods × paths × parameters ×
bodies × content types × tokens, against the real app (Flask test client), the DMP gatekeeper with
real tokens and the real SQLite store.

Whatever the request: no 5xx; a 4xx carries an OperationOutcome; a refused request writes nothing
(no resource version but its AuditEvent). Derandomized and bounded so the suite stays fast and
deterministic; ``DMP_FUZZ_EXAMPLES`` raises the number of examples per test for a local run
(``DMP_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_rest.py``).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from authz.terms import ACCESS, IDNATPS_SYSTEM
from fhir_server.fhir.formats.xml import XmlFormatError, xml_to_json
from storage.query import OPEN_SCOPE
from tests.dmp import INS_SYSTEM, World
from tests.paths import HL7_EXAMPLES
from tests.test_mhd_provide import DR, INS, submission
from tests.test_robustness import _paths as places

EXAMPLES = int(os.environ.get("DMP_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TYPES = ["Patient", "DocumentReference", "Binary", "List", "Consent", "AuditEvent", "Bundle", "Subscription", "Nope"]
CONTENT_TYPES = [
    "application/fhir+json",
    "application/json-patch+json",
    "application/fhir+xml",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/pdf",
    None,
]
ACCEPTS = [None, "application/fhir+json", "application/fhir+xml", "text/html", "*/*", "text/csv", "image/png"]
#: Strings that have broken servers: control characters, escapes, huge numbers, injections.
NASTY = [
    "",
    " ",
    "\u0000",
    "\u0001x",
    "a\tb",
    "99999999999999999999",
    "-1",
    "²",
    "1e400",
    "' OR 1=1 --",
    "<x/>",
    "%00",
    "../..",
    "ü" * 40,
    "\\",
    "|",
    ",",
    "$",
    "urn:uuid:x",
]


@dataclass
class Target:
    """The world under fuzzing: a DMP with a document, and who may call."""

    world: World
    pid: str
    doc: str
    tokens: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    world = World(Path(tmp_path_factory.mktemp("fuzz")))
    pid = world.seed_patient(INS)
    world.seed_consent(ACCESS, INS, (IDNATPS_SYSTEM, DR))
    doc = world.seed_document(pid, author=DR, with_binary=True)
    tokens = {
        "patient": world.patient(INS).headers,
        "doctor": world.doctor(DR, INS).headers,
        "stranger": world.doctor("899700000999", INS).headers,
        "none": {},
        "bad": {"Authorization": "Bearer not.a.token"},
    }
    yield Target(world, pid, doc, tokens)
    world.close()


def samples(target: Target) -> list[Any]:
    """Valid bodies the mutations start from."""
    patient = {
        "resourceType": "Patient",
        "id": target.pid,
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"family": "Martin", "given": ["Jean"]}],
        "birthDate": "1980-05-17",
        "active": True,
    }
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "QUJD"}
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": binary, "request": {"method": "POST", "url": "Binary"}},
            {"resource": patient, "request": {"method": "PUT", "url": f"Patient/{target.pid}"}},
            {"request": {"method": "GET", "url": f"DocumentReference?patient={target.pid}"}},
        ],
    }
    return [
        patient,
        binary,
        transaction,
        {**transaction, "type": "batch"},
        submission(target.pid),
        [{"op": "replace", "path": "/active", "value": False}, {"op": "copy", "from": "/name/0", "path": "/name/1"}],
        {"resourceType": "Parameters", "parameter": [{"name": "document", "resource": binary}]},
        json.loads((HL7_EXAMPLES / "Consent-consent-example-basic.json").read_text()),
    ]


#: Keys a mutation adds: the ones FHIR code reads first, and anything.
KEYS = st.sampled_from(["url", "id", "x", "resourceType", "entry", "request"]) | st.text(max_size=5)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from(NASTY) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, base: list[Any]) -> Any:
    """A valid body with up to three places replaced, removed, or given a stray sibling."""
    body = copy.deepcopy(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(0, 3))):
        spots = [p for p in places(body) if p]
        if not spots:
            break
        place = draw(st.sampled_from(spots))
        parent = body
        for step in place[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            del parent[place[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extension", "bogus", "id", "meta", "contained"]))] = draw(JSON_VALUES)
        else:
            parent[place[-1]] = draw(JSON_VALUES)
    return body


def paths(target: Target) -> st.SearchStrategy[str]:
    ids = st.sampled_from([target.pid, target.doc, f"bin-{target.doc}", "unknown", "a$b", "x" * 65, *NASTY])
    kind = st.sampled_from(TYPES)
    return st.one_of(
        st.sampled_from(["", "metadata", "_history", "Patient/_search", "DocumentReference/$generate-metadata"]),
        kind,
        st.builds(lambda t, i: f"{t}/{i}", kind, ids),
        st.builds(lambda t, i, v: f"{t}/{i}/_history/{v}", kind, ids, st.sampled_from(["1", "2", *NASTY])),
        st.builds(lambda t, i: f"{t}/{i}/_history", kind, ids),
        st.builds(lambda i, op: f"Patient/{i}/${op}", ids, st.sampled_from(["everything", "dmp-export", "nope"])),
        st.text(max_size=30),
    )


def parameters(target: Target) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = st.sampled_from(
        [
            "patient",
            "_id",
            "identifier",
            "status",
            "date",
            "type",
            "name",
            "_count",
            "_sort",
            "_include",
            "_revinclude",
            "_summary",
            "_elements",
            "_total",
            "_format",
            "_getpages",
            "_getpagesoffset",
            "patient.identifier",
            "_has:List:item:_id",
            "subject:Patient.name",
            "date:missing",
            "_since",
            "part",
        ]
    )
    values = st.one_of(
        st.sampled_from(
            [
                target.pid,
                f"Patient/{target.pid}",
                f"{INS_SYSTEM}|{INS}",
                "ge2020-01-01",
                "xml",
                "json",
                "*",
                "DocumentReference:patient",
                "Provenance:target",
                "-date",
                "1000",
                "0",
                "true",
                *NASTY,
            ]
        ),
        st.text(max_size=12),
    )
    return st.lists(st.tuples(names, values), max_size=5)


@dataclass
class Call:
    method: str
    path: str
    params: list[tuple[str, str]]
    body: bytes | None
    content_type: str | None
    accept: str | None
    who: str


def send(target: Target, call: Call) -> TestResponse:
    headers = dict(target.tokens[call.who])
    if call.content_type:
        headers["Content-Type"] = call.content_type
    if call.accept:
        headers["Accept"] = call.accept
    return target.world.client.open(
        "/fhir/" + quote(call.path, safe="/$"),  # any character, percent-encoded as a client would
        method=call.method,
        query_string=call.params,
        data=call.body,
        headers=headers,
    )


def written(target: Target) -> int:
    """Resource versions stored but the trail's: what a refused request must leave unchanged."""
    store = target.world.store
    return store.history(OPEN_SCOPE).total - store.history(OPEN_SCOPE, "AuditEvent").total


def check(target: Target, call: Call) -> None:
    before = written(target)
    response = send(target, call)
    status = response.status_code
    text = response.get_data(as_text=True)
    assert status < 500, (call, text)
    if status >= 400:
        assert written(target) == before, ("a refused request wrote something", call, text)
        if call.method != "HEAD":
            content_type = response.headers.get("Content-Type", "")
            body = xml_to_json(response.data) if "xml" in content_type else json.loads(text)
            assert body["resourceType"] == "OperationOutcome", (call, text)
            assert body["issue"] and all(i.get("diagnostics") or i.get("details") for i in body["issue"]), text


def encoded(body: Any, content_type: str | None) -> bytes:
    """A body in the request's content type when it can be (XML when asked, else JSON)."""
    if content_type == "application/fhir+xml" and isinstance(body, dict):
        from fhir_server.fhir.formats.xml import json_to_xml

        try:
            return json_to_xml(body)
        except (XmlFormatError, ValueError, TypeError, KeyError, AttributeError):
            pass
    return json.dumps(body).encode()


@FUZZ
@given(data=st.data())
def test_any_request_gets_no_5xx_and_an_outcome_when_refused(target: Target, data: st.DataObject) -> None:
    body = data.draw(st.one_of(st.none(), mutated(samples(target)), JSON_VALUES, st.binary(max_size=40)))
    content_type = data.draw(st.sampled_from(CONTENT_TYPES))
    raw = body if isinstance(body, bytes) or body is None else encoded(body, content_type)
    call = Call(
        method=data.draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])),
        path=data.draw(paths(target)),
        params=data.draw(parameters(target)),
        body=raw,
        content_type=content_type,
        accept=data.draw(st.sampled_from(ACCEPTS)),
        who=data.draw(st.sampled_from(list(target.tokens))),
    )
    check(target, call)


@FUZZ
@given(data=st.data())
def test_mutated_writes_are_whole_or_refused(target: Target, data: st.DataObject) -> None:
    """Writes of valid bodies with a few places mutated, by people who may write: stored whole or
    refused with nothing written."""
    body = data.draw(mutated(samples(target)))
    is_patch = isinstance(body, list)
    rtype = body.get("resourceType") if isinstance(body, dict) else None
    if is_patch:
        method, path = "PATCH", f"Patient/{target.pid}"
    elif rtype == "Bundle":
        method, path = "POST", ""
    elif rtype == "Parameters":
        method, path = "POST", "DocumentReference/$generate-metadata"
    elif rtype == "Patient":
        method, path = "PUT", f"Patient/{target.pid}"
    else:
        method, path = "POST", rtype if isinstance(rtype, str) else "Binary"
    content_type = (
        "application/json-patch+json"
        if is_patch
        else data.draw(st.sampled_from(["application/fhir+json", "application/fhir+xml"]))
    )
    who = data.draw(st.sampled_from(["patient", "doctor"]))
    check(target, Call(method, path, [], encoded(body, content_type), content_type, None, who))


@FUZZ
@given(data=st.data())
def test_searches_get_no_5xx(target: Target, data: st.DataObject) -> None:
    rtype = data.draw(st.sampled_from(["Patient", "DocumentReference", "List", "Consent", "AuditEvent", "Binary"]))
    call = Call(
        method="GET",
        path=rtype,
        params=[
            ("patient.identifier" if rtype == "AuditEvent" else "patient", target.pid),
            *data.draw(parameters(target)),
        ],
        body=None,
        content_type=None,
        accept=data.draw(st.sampled_from([None, "application/fhir+xml"])),
        who=data.draw(st.sampled_from(["patient", "doctor"])),
    )
    check(target, call)
