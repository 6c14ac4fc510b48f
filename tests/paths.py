"""Where the tests find the project's reference data: ``../shared`` beside the checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
EXAMPLES = SHARED_DATA / "examples"
HL7_EXAMPLES = EXAMPLES / "hl7-fhir-r4-examples" / "resources"
