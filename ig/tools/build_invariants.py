"""Extract the FHIRPath invariants the server checks on every write into ``ig/invariants/``.

Source: the R4 (4.0.1) StructureDefinitions of the npm package ``hl7.fhir.r4.examples@4.0.1``
(the HL7 FHIR R4 definitions and examples, CC0; ``hl7.fhir.r4.core`` is not on npm): get it with
``npm pack hl7.fhir.r4.examples@4.0.1`` (sha1 537ea7db3f3c7b3575fe2eaa7808bad21261cca3), unpack it, and run

    python ig/tools/build_invariants.py path/to/package

Kept: the ``constraint``s of severity ``error`` of the served resource types (every element of their
snapshot) and of the complex datatypes they use (on the datatype itself), each with where it applies
(``context``: an element path, or a datatype name), once where it is defined: ``ext-1`` on the
Extension datatype rather than on every ``extension`` element, and ``ele-1`` (Element's, on every
element) not at all — the structural validation already refuses empty values, objects and arrays.
Left out, each with its reason in the output: any invariant that fhirpathpy cannot evaluate or that
it finds false on one of the package's own examples of the served types (which are valid):
evaluating those would refuse valid resources. The output is deterministic;
``tests/test_invariants.py`` checks that the server checks what it holds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fhir_server.fhir.invariants import Invariant, compile_invariant  # noqa: E402
from fhir_server.fhir.service import SERVED_TYPES  # noqa: E402

OUTPUT = ROOT / "ig" / "invariants" / "r4-invariants.json"
#: Examples larger than this (the specification's own definition Bundles) are not used for trials.
MAX_EXAMPLE = 200_000
NOT_DATATYPES = {"Element", "BackboneElement", "Resource", "Extension.value[x]", "xhtml"}


def _definition(package: Path, name: str) -> dict[str, Any] | None:
    path = package / f"StructureDefinition-{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _constraints(definition: dict[str, Any], datatype: bool) -> list[Invariant]:
    found = []
    for element in definition["snapshot"]["element"]:
        path = element["path"]
        if datatype and path != definition["type"]:
            continue
        for constraint in element.get("constraint", []):
            if constraint.get("severity") != "error" or not constraint.get("expression"):
                continue
            own = (definition["type"], "") if datatype else (definition["type"], "", "DomainResource", "Resource")
            if constraint.get("source", "").rsplit("/", 1)[-1] not in own:
                continue  # a datatype's (ext-1 on every extension...): kept once, on the datatype
            found.append(Invariant(constraint["key"], path, constraint["human"], constraint["expression"], datatype))
    return found


def _datatypes(package: Path, types: list[str]) -> list[str]:
    """Every complex datatype reachable from the served types' elements."""
    seen: set[str] = set()
    pending = [t for t in types]
    while pending:
        definition = _definition(package, pending.pop())
        for element in definition["snapshot"]["element"] if definition else []:
            for type_ in element.get("type", []):
                code = type_.get("code", "")
                if code[:1].isupper() and code not in NOT_DATATYPES and code not in seen and code not in SERVED_TYPES:
                    seen.add(code)
                    pending.append(code)
    return sorted(seen)


def main(package: Path) -> None:
    candidates: list[Invariant] = []
    for rtype in SERVED_TYPES:
        definition = _definition(package, rtype)
        assert definition is not None, rtype
        candidates += _constraints(definition, datatype=False)
    for datatype in _datatypes(package, list(SERVED_TYPES)):
        definition = _definition(package, datatype)
        if definition and definition.get("kind") == "complex-type":
            candidates += _constraints(definition, datatype=True)
    examples = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(package.glob("*.json"))
        if path.name.split("-")[0] in SERVED_TYPES and path.stat().st_size < MAX_EXAMPLE
    ]
    examples = [e for e in examples if e.get("resourceType") in SERVED_TYPES]
    kept, excluded = [], []
    for invariant in sorted(set(candidates), key=lambda i: (i.context, i.key)):
        reason = _trial(invariant, examples)
        if reason:
            excluded.append({"key": invariant.key, "context": invariant.context, "reason": reason})
        else:
            kept.append(invariant.as_json())
    document = {
        "source": "hl7.fhir.r4.examples@4.0.1 (npm, CC0): StructureDefinitions of the served types and their datatypes",
        "generator": "ig/tools/build_invariants.py",
        "invariants": kept,
        "excluded": excluded,
    }
    OUTPUT.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(kept)} invariants kept, {len(excluded)} left out -> {OUTPUT.relative_to(ROOT)}")


def _trial(invariant: Invariant, examples: list[dict[str, Any]]) -> str | None:
    """Why ``invariant`` cannot be checked here, or None: it compiles, evaluates on every example
    and holds on each (they are valid R4)."""
    try:
        check = compile_invariant(invariant)
    except Exception as exc:  # fhirpathpy's parser raises several kinds
        return f"fhirpathpy cannot compile it: {exc}"
    for example in examples:
        if not invariant.datatype and example["resourceType"] != invariant.context.split(".")[0]:
            continue
        try:
            holds = check(example, None)
        except Exception as exc:  # an unsupported function or a type fhirpathpy does not handle
            detail = re.sub(r"\[<.*", "[...]", str(exc))[:120]  # no object addresses: a stable file
            return f"fhirpathpy cannot evaluate it: {type(exc).__name__}: {detail}"
        if not holds:
            return f"fhirpathpy finds it false on the valid example {example['resourceType']}/{example.get('id')}"
    return None


if __name__ == "__main__":
    main(Path(sys.argv[1]))
