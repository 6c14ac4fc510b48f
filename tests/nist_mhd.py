"""The NIST FHIR Toolkit (Asbestos) MHD Document Recipient test cases, assembled for pytest.

The collections in ``../shared/data/examples/nist-mhd-testcollections`` are Asbestos TestScripts
(see its PROVENANCE.md): a MHDv420 test names, in the ``urn:variable-in`` parameters of the module
it imports, a fixture ``?fixtureId=pdb&baseTestCollection=MHD_DocumentRecipient_minimal[&baseTestName=X]``
— the Bundle ``<baseTestCollection>/<baseTestName or its own name>/Bundle/<fixtureId>.xml`` — whose
``<!--@{Name}-->`` comments Asbestos replaces with the fragment ``Name.xml`` found first in the
test's own ``Bundle/`` directory, then in its collection's ``Common/``, then in the base test's
``Bundle/`` and the base collection's ``Common/``. ``@{RandomUUID}`` is a fresh UUID and
``${patientResourceId}`` (``${original}``) the reference to the test patient (the document a
replacement targets).

One defect of the fixtures is repaired: their practiceSetting Coding repeats ``<code>`` where
``<display>`` was meant (``<code value="225728007"/><code value="Accident and Emergency
department (environment)"/>``). FHIR XML refuses a repeated ``code`` outright (400), so unrepaired
every case using it would be refused for that typo rather than for what it tests
(``test_nist_fixture_typo_alone_is_refused`` keeps the typo's own refusal covered).

The outcome a test expects is read from its TestScript: the module
``MHDPDBFails`` (transaction refused, nothing persisted), ``MHDPDBSuccess*`` (accepted), or the
replace/addendum/transform modules (two submissions).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from tests.paths import EXAMPLES

NIST = EXAMPLES / "nist-mhd-testcollections"
COLLECTIONS = ("MHDv420_DocumentRecipient_minimal", "MHDv420_DocumentRecipient_comprehensive")
_INCLUDE = re.compile(r"<!--@\{(\w+)\}-->")
_FIXTURE = re.compile(r"'\?(fixtureId=[^']*)'")
_COMPONENT = re.compile(r'url="component">\s*<valueString value="([^"]+)"')
_REPEATED_CODE = re.compile(r'(<code value="[^"]*"/>\s*)<code value="([^"]*)"/>')


class NotAssembled(Exception):
    """A fixture that cannot be put together from the files (an include nowhere to be found)."""


@dataclass(frozen=True)
class NistCase:
    collection: str
    name: str
    module: str  # MHDPDBFails, MHDPDBSuccess, MHDPDBSuccess2, DocumentReplace, DocumentAddendum, ...
    fixtures: tuple[str, ...]  # the fixture parameters, in the order the test sends them

    @property
    def id(self) -> str:
        return f"{self.collection.removeprefix('MHDv420_DocumentRecipient_')}/{self.name}"

    @property
    def expects_failure(self) -> bool:
        return self.module == "MHDPDBFails"

    def bundle_xml(self, fixture: str, patient_reference: str, original: str = "", *, repair: bool = True) -> bytes:
        """One fixture Bundle as XML, its includes and variables resolved (and its typo repaired)."""
        params = dict(parse_qsl(fixture))
        base_collection = params.get("baseTestCollection", self.collection)
        base_test = params.get("baseTestName", self.name)
        path = NIST / base_collection / base_test / "Bundle" / f"{params['fixtureId']}.xml"
        search = [
            NIST / self.collection / self.name / "Bundle",
            NIST / self.collection / "Common",
            NIST / base_collection / base_test / "Bundle",
            NIST / base_collection / "Common",
        ]
        text = _resolve(path.read_text(encoding="utf-8"), search, depth=0)
        text = text.replace("@{RandomUUID}", str(uuid.uuid4()))
        text = text.replace("${patientResourceId}", patient_reference).replace("${original}", original)
        if repair:
            text = _REPEATED_CODE.sub(r'\1<display value="\2"/>', text)
        return text.encode("utf-8")


def _resolve(text: str, search: list[Path], depth: int) -> str:
    if depth > 5:
        raise NotAssembled("includes nested too deep")

    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "RandomUUID":
            return match.group(0)
        for folder in search:
            candidate = folder / f"{name}.xml"
            if candidate.is_file():
                return _resolve(candidate.read_text(encoding="utf-8"), search, depth + 1)
        raise NotAssembled(f"no fragment {name}.xml")

    return _INCLUDE.sub(include, text)


def cases() -> list[NistCase]:
    """Every MHDv420 Document Recipient test of the two collections."""
    found = []
    for collection in COLLECTIONS:
        for script in sorted((NIST / collection).glob("*/TestScript.xml")):
            text = script.read_text(encoding="utf-8")
            component = _COMPONENT.search(text)
            if component is None:
                continue
            module = Path(component.group(1)).stem
            fixtures = tuple(f.replace("&amp;", "&") for f in _FIXTURE.findall(text))
            if not fixtures:  # the success modules take the fixture as a variable's default value
                fixtures = tuple(
                    m.replace("&amp;", "&") for m in re.findall(r'defaultValue value="\?(fixtureId=[^"]*)"', text)
                )
            found.append(NistCase(collection, script.parent.name, module, fixtures))
    return found
