"""docs/architecture.md and the import contracts in setup.cfg describe the same design.

`lint-imports` (CI) holds the code to the contracts; these tests hold the page to them, and the
contracts to the tree: a layer or capability added to one and not the other fails here.
"""

from __future__ import annotations

import configparser
import re

from tests.paths import ROOT

PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _contract(name: str) -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config[f"importlinter:contract:{name}"]


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def _table_packages(heading: str) -> list[str]:
    """The backticked package of each row of the first table after ``heading``, in order."""
    section = PAGE.split(heading, 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    table = []
    for row in rows[2:]:  # the header and its separator first
        cells = [c.strip() for c in row.strip("|").split("|")]
        match = re.fullmatch(r"`([\w.]+)`", cells[1])
        if match is None:
            break
        table.append(match.group(1))
    return table


def test_the_page_lists_the_layers_of_the_contract_in_order() -> None:
    assert _table_packages("The layers, top to bottom") == _lines(_contract("layers")["layers"])


def test_the_page_lists_the_independent_capabilities() -> None:
    assert sorted(_table_packages("## The DMP capabilities")) == sorted(_lines(_contract("capabilities")["modules"]))


def test_every_capability_package_is_held_independent() -> None:
    """A new package under fhir_server/dmp/ is a capability: it joins the independence contract
    (and the page) rather than silently depending on the others."""
    on_disk = sorted(
        f"fhir_server.dmp.{path.parent.name}" for path in (ROOT / "fhir_server" / "dmp").glob("*/__init__.py")
    )
    assert on_disk == sorted(_lines(_contract("capabilities")["modules"]))


def test_every_package_of_the_server_is_in_a_layer() -> None:
    layers = _lines(_contract("layers")["layers"])
    packages = [f"fhir_server.{path.parent.name}" for path in (ROOT / "fhir_server").glob("*/__init__.py")] + [
        "fhir_server.app"
    ]
    assert sorted(p for p in packages if p not in layers) == []
    assert {"authz", "storage", "fhirmodel"} <= set(layers)
