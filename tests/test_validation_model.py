"""The validation walk finds what the fhir.resources models find, without them.

Why this test: the walk replaced the models on the write path (half a document's validation time),
so it must keep finding every problem they found. It mutates real resources of ``../shared/data``
(ANS, IHE and HL7 examples, and the bench's MHD documents) — an element removed, or given a value of
another shape — and checks that whenever the R4B model refuses a mutant, the walk does too. The
models stay here, as the reference.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from bench.mhd import provide_bundle_bytes
from fhir_server.fhir.service import SERVED_TYPES
from fhir_server.fhir.validation import ResourceValidator
from fhir_server.runtime.config import PROJECT_ROOT
from fhirmodel.errors import FhirError

DATA = PROJECT_ROOT.parent / "shared" / "data"
#: Values given in place of an element's own: wrong JSON types, and strings of every primitive's
#: lexical space but one (dates that are not dates, codes with spaces, numbers out of range...).
GARBAGE: tuple[Any, ...] = (
    "2024-13-45", "x y", " lead", "1.5", 1.5, -1, 0, "abc", "2024-01-01T10:00", "http://a b", True, "ABC_DEF!", 2**40,
)  # fmt: skip
#: Elements mutated per resource, each in 1 + 3 ways: enough to cover every type in a few seconds.
PER_RESOURCE = 12


def _corpus() -> list[dict[str, Any]]:
    resources = []
    for path in sorted(DATA.rglob("*.json")):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("resourceType") in set(SERVED_TYPES) - {"Bundle"}:
                resources.append(data)
    bundle = orjson.loads(provide_bundle_bytes(random.Random(1), 3, "810002673899", 2))
    return resources + [entry["resource"] for entry in bundle["entry"]]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        yield (*path, key)
        yield from _paths(value, (*path, key))


def _mutants(resource: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    paths = [p for p in _paths(resource) if p[0] not in ("text", "resourceType")]
    for path in rng.sample(paths, min(len(paths), PER_RESOURCE)):
        for value in (None, *rng.sample(GARBAGE, 3)):
            mutant = copy.deepcopy(resource)
            parent = mutant
            for key in path[:-1]:
                parent = parent[key]
            if value is None:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            yield mutant


def _model_refuses(resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception:  # a ValidationError, or the library failing on some input (a contained resourceType unknown)
        return True
    return False


def _walk_refuses(validator: ResourceValidator, resource: dict[str, Any]) -> bool:
    try:
        validator.validate(resource)
    except FhirError:
        return True
    return False


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside the project")
def test_the_walk_refuses_whatever_the_model_refuses() -> None:
    validator = ResourceValidator(frozenset(SERVED_TYPES))
    rng = random.Random(7)
    corpus = _corpus()
    assert len(corpus) > 100
    refused_by_model, missed = 0, []
    for resource in corpus:
        assert not _model_refuses(resource) or _walk_refuses(validator, resource)
        for mutant in _mutants(resource, rng):
            if _model_refuses(mutant):
                refused_by_model += 1
                if not _walk_refuses(validator, mutant):
                    missed.append(mutant)
    assert refused_by_model > 1000  # the mutations do reach the model's rules
    assert not missed, json.dumps(missed[:3], indent=1)[:3000]
