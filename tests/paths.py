"""Where the tests find the project's reference data: ``../shared`` beside the checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
EXAMPLES = SHARED_DATA / "examples"
HL7_EXAMPLES = EXAMPLES / "hl7-fhir-r4-examples" / "resources"


def example_transaction_bundles() -> list[Path]:
    """The transaction Bundles among the IHE MHD, ANS PDSm and PDSm-for-DMP examples."""
    import json

    folders = [
        EXAMPLES / "ihe-mhd/examples",
        EXAMPLES / "ans-pdsm/examples",
        EXAMPLES / "ans-pdsm4dmp/examples",
        SHARED_DATA / "fhir-examples",
    ]
    return [
        path
        for folder in folders
        for path in sorted(folder.glob("Bundle-*.json"))
        if json.loads(path.read_text()).get("type") == "transaction"
    ]
