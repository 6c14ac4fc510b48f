"""Resource validation: official R4 and IHE MHD examples pass, each kind of defect is reported at its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.fhir.validation import MAX_DEPTH, MAX_ISSUES, ResourceValidator
from fhirmodel.errors import FhirError
from tests.paths import EXAMPLES, HL7_EXAMPLES

SERVED = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "RelatedPerson",
        "DocumentReference",
        "Binary",
        "List",
        "Consent",
        "AuditEvent",
        "Subscription",
        "Device",
        "Bundle",
        "Provenance",
        "OperationOutcome",
    }
)
R4_EXAMPLES = HL7_EXAMPLES
MHD_EXAMPLES = EXAMPLES / "ihe-mhd" / "examples"
XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
VALIDATOR = ResourceValidator(SERVED)


def served_examples(folder: Path) -> list[Path]:
    return [
        path
        for path in sorted(folder.glob("*.json"))
        if json.loads(path.read_text(encoding="utf-8")).get("resourceType") in SERVED
    ]


R4_FILES = served_examples(R4_EXAMPLES)
MHD_FILES = served_examples(MHD_EXAMPLES)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def document_reference(**changes: Any) -> dict[str, Any]:
    """The comprehensive MHD DocumentReference (valid), with top-level elements replaced."""
    resource = load(MHD_EXAMPLES / "DocumentReference-ex-DocumentReferenceComprehensive.json")
    resource.update(changes)
    return resource


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **elements}


def narrative(div: str) -> dict[str, Any]:
    return patient(text={"status": "generated", "div": div})


def rejection(resource: Any, *, expected_type: str | None = None) -> FhirError:
    with pytest.raises(FhirError) as caught:
        VALIDATOR.validate(resource, expected_type=expected_type)
    return caught.value


def issues_at(error: FhirError, expression: str) -> list[dict[str, Any]]:
    """The OperationOutcome issues naming ``expression``."""
    return [issue for issue in error.outcome()["issue"] if expression in issue.get("expression", [])]


def assert_invalid(resource: Any, expression: str, code: str | None = None) -> dict[str, Any]:
    """422, with an issue at ``expression`` (of ``code``, if given); that issue is returned."""
    error = rejection(resource)
    assert error.status == 422
    found = issues_at(error, expression)
    assert found, f"no issue at {expression}: {error.outcome()}"
    if code is not None:
        assert found[0]["code"] == code
    assert found[0]["severity"] == "error"
    assert expression in found[0]["diagnostics"]
    return found[0]


# --- valid resources -------------------------------------------------------------------------------


def test_examples_are_present() -> None:
    assert len(R4_FILES) > 100
    assert len(MHD_FILES) > 40


@pytest.mark.parametrize("path", R4_FILES + MHD_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_served_example_is_valid_and_left_unchanged(path: Path) -> None:
    resource = load(path)
    before = copy.deepcopy(resource)
    VALIDATOR.validate(resource, expected_type=resource["resourceType"])  # raises if invalid
    assert resource == before


def test_attachment_url_may_be_a_urn_uuid() -> None:
    # IHE MHD points DocumentReference.content.attachment.url at the Binary of the same transaction.
    bundle = load(MHD_EXAMPLES / "Bundle-ex-minimalProvideDocumentBundleSimple.json")
    urls = [
        content["attachment"]["url"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "DocumentReference"
        for content in entry["resource"]["content"]
    ]
    assert urls and all(url.startswith("urn:uuid:") for url in urls)
    VALIDATOR.validate(bundle)
    content = [{"attachment": {"url": "urn:uuid:0c287d32-01e3-4d87-9953-9fcc9404eb21"}}]
    VALIDATOR.validate(document_reference(content=content))


def test_null_placeholders_of_primitive_arrays_are_accepted() -> None:
    name = {"given": ["Jean", None], "_given": [None, {"extension": [{"url": "http://x.org/e", "valueCode": "IN"}]}]}
    VALIDATOR.validate(patient(name=[name]))


def test_references_resolved_by_a_transaction_or_conditionally_are_accepted() -> None:
    VALIDATOR.validate(document_reference(subject={"reference": "urn:uuid:9b3f1f5e-5f39-4a4b-8e0e-6e5e8e2c0b1a"}))
    VALIDATOR.validate(document_reference(subject={"reference": "Patient?identifier=urn:oid:1.2.250|123"}))
    VALIDATOR.validate(document_reference(subject={"reference": "https://dmp.example/fhir/Patient/7/_history/2"}))


def test_narrative_with_basic_formatting_is_accepted() -> None:
    div = (
        f'<div {XHTML}><p style="color: red" class="x">Dr <b>Martin</b></p>'
        '<table border="1"><tr><td colspan="2"><a href="https://example.org/x">link</a></td></tr></table>'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo"/><!-- a comment --></div>'
    )
    VALIDATOR.validate(narrative(div))


# --- requests that do not carry a resource of the expected type: 400 ---------------------------------


@pytest.mark.parametrize("body", [["Patient"], "Patient", None, 42])
def test_body_that_is_not_an_object(body: Any) -> None:
    error = rejection(body)
    assert error.status == 400
    assert error.outcome()["issue"][0]["code"] == "structure"


@pytest.mark.parametrize("body", [{"resourceType": "Patientt"}, {"resourceType": 3}, {"id": "x"}])
def test_missing_or_unknown_resource_type(body: dict[str, Any]) -> None:
    error = rejection(body)
    assert error.status == 400
    assert error.outcome()["issue"][0]["code"] == "structure"


def test_resource_type_that_is_not_served() -> None:
    error = rejection({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}})
    assert error.status == 400
    issue = error.outcome()["issue"][0]
    assert issue["code"] == "not-supported"
    assert "Encounter" in issue["diagnostics"]


def test_resource_type_that_does_not_match_the_url() -> None:
    error = rejection(patient(), expected_type="Practitioner")
    assert error.status == 400
    issue = error.outcome()["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == ["resourceType"]
    assert "Patient" in issue["diagnostics"] and "Practitioner" in issue["diagnostics"]


# --- invalid resources: 422, one issue per problem, at the offending element ------------------------


def test_unknown_element_is_reported_once() -> None:
    error = rejection(patient(foo=1))
    assert error.status == 422
    # The walk and the model both notice it; the client reads it once.
    assert len(issues_at(error, "Patient.foo")) == 1
    assert len(error.outcome()["issue"]) == 1


def test_unknown_element_inside_a_backbone_element() -> None:
    resource = document_reference()
    resource["content"][0]["attachment"]["colour"] = "blue"
    assert_invalid(resource, "DocumentReference.content[0].attachment.colour", "structure")


def test_unknown_element_in_the_extras_of_a_primitive() -> None:
    # The model only says the `_family` object is wrong; the walk names the property.
    resource = patient(name=[{"family": "Martin", "_family": {"colour": "blue"}}])
    assert_invalid(resource, "Patient.name[0]._family.colour", "structure")


@pytest.mark.parametrize(
    ("elements", "expression"),
    [
        ({"active": "yes"}, "Patient.active"),  # the model would coerce it to True
        ({"active": 1}, "Patient.active"),
        ({"multipleBirthInteger": "2"}, "Patient.multipleBirthInteger"),
        ({"multipleBirthInteger": 2.0}, "Patient.multipleBirthInteger"),
        ({"birthDate": 1970}, "Patient.birthDate"),
        ({"name": [{"given": ["Jean", 7]}]}, "Patient.name[0].given[1]"),
        ({"name": {"family": "Martin"}}, "Patient.name"),
        ({"maritalStatus": "M"}, "Patient.maritalStatus"),
    ],
)
def test_wrong_json_type(elements: dict[str, Any], expression: str) -> None:
    assert_invalid(patient(**elements), expression, "structure")


def test_empty_array() -> None:
    assert_invalid(document_reference(author=[]), "DocumentReference.author", "structure")


def test_empty_object() -> None:
    assert_invalid(patient(contact=[{}]), "Patient.contact[0]", "structure")


def test_empty_string() -> None:
    assert_invalid(document_reference(description=""), "DocumentReference.description", "value")


def test_whitespace_only_string() -> None:
    assert_invalid(patient(name=[{"family": " \t "}]), "Patient.name[0].family", "value")


@pytest.mark.parametrize(
    ("elements", "expression"),
    [
        ({"active": None}, "Patient.active"),
        ({"contact": [None]}, "Patient.contact[0]"),
        ({"name": [{"given": ["Jean", None]}]}, "Patient.name[0].given[1]"),
        ({"name": [{"given": ["Jean", None], "_given": [None, None]}]}, "Patient.name[0]._given[1]"),
    ],
)
def test_null_outside_of_a_placeholder(elements: dict[str, Any], expression: str) -> None:
    assert_invalid(patient(**elements), expression, "structure")


def test_code_outside_of_a_required_binding() -> None:
    issue = assert_invalid(document_reference(status="bogus"), "DocumentReference.status", "code-invalid")
    assert "current" in issue["diagnostics"]


def test_code_outside_of_a_required_binding_in_a_datatype() -> None:
    assert_invalid(patient(name=[{"use": "nick", "family": "Martin"}]), "Patient.name[0].use", "code-invalid")


def test_reference_to_a_type_the_element_does_not_allow() -> None:
    issue = assert_invalid(
        document_reference(subject={"reference": "Organization/1"}), "DocumentReference.subject.reference", "value"
    )
    assert "Organization" in issue["diagnostics"]


def test_absolute_reference_to_a_type_the_element_does_not_allow() -> None:
    resource = document_reference(custodian={"reference": "https://dmp.example/fhir/Patient/1"})
    assert_invalid(resource, "DocumentReference.custodian.reference", "value")


def test_reference_type_that_contradicts_the_reference() -> None:
    resource = document_reference(subject={"reference": "Patient/1", "type": "Group"})
    assert_invalid(resource, "DocumentReference.subject.type", "value")


@pytest.mark.parametrize("reference", ["Foo/1", "patient 1"])
def test_relative_reference_that_names_no_resource(reference: str) -> None:
    assert_invalid(document_reference(subject={"reference": reference}), "DocumentReference.subject.reference")


def test_dangling_local_reference() -> None:
    assert_invalid(
        document_reference(author=[{"reference": "#in-author"}, {"reference": "#nobody"}]),
        "DocumentReference.author[1].reference",
        "invariant",
    )


def test_local_reference_is_resolved_in_its_own_bundle_entry() -> None:
    # Each Bundle entry is its own container: #in-author does not resolve across entries.
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": document_reference()},
            {
                "resource": {
                    "resourceType": "List",
                    "status": "current",
                    "mode": "working",
                    "source": {"reference": "#in-author"},
                }
            },
        ],
    }
    assert_invalid(bundle, "Bundle.entry[1].resource.source.reference", "invariant")


def test_contained_resource_with_contained_resources() -> None:
    resource = document_reference()
    resource["contained"][0]["contained"] = [{"resourceType": "Organization", "id": "o1", "name": "X"}]
    assert_invalid(resource, "DocumentReference.contained[0].contained", "invariant")


def test_contained_resource_with_version_or_security_labels() -> None:
    resource = document_reference()
    resource["contained"][0]["meta"] = {"versionId": "2", "security": [{"code": "R"}]}
    error = rejection(resource)
    assert issues_at(error, "DocumentReference.contained[0].meta.versionId")  # dom-4
    assert issues_at(error, "DocumentReference.contained[0].meta.security")  # dom-5


@pytest.mark.parametrize(
    ("div", "problem"),
    [
        pytest.param(f"<div {XHTML}><p>hello</p><script>alert(1)</script></div>", "<script>", id="script"),
        pytest.param(f'<div {XHTML}><p onclick="alert(1)">hello</p></div>', "onclick", id="onclick"),
        pytest.param(f'<div {XHTML}><a href=" java&#9;script:x()">hello</a></div>', "script", id="javascript-href"),
        pytest.param(f'<div {XHTML}><a href="data:text/html,&lt;b&gt;">hello</a></div>', "data URL", id="data-href"),
        pytest.param(f'<div {XHTML}><p style="background: url(https://t.example/x.gif)">hi</p></div>', "CSS", id="css"),
        pytest.param(f"<div {XHTML}><iframe>hello</iframe></div>", "<iframe>", id="iframe"),
        pytest.param(f'<div {XHTML}><form action="https://evil.example">hello</form></div>', "<form>", id="form"),
        pytest.param(f'<div {XHTML}><p xmlns:x="urn:x" x:onload="y">hello</p></div>', "onload", id="foreign-attr"),
        pytest.param(f"<div {XHTML}><svg xmlns='http://www.w3.org/2000/svg'/>hi</div>", "not XHTML", id="svg"),
        pytest.param(f"<div {XHTML}><?php echo 1 ?>hello</div>", "processing instruction", id="pi"),
        pytest.param(f'<!DOCTYPE div [<!ENTITY e "hello">]><div {XHTML}>&e;</div>', "DOCTYPE", id="doctype-entity"),
        pytest.param(f'<!DOCTYPE div SYSTEM "file:///etc/passwd"><div {XHTML}>hi</div>', "DOCTYPE", id="doctype-file"),
        # XML defines no &nbsp; and no DTD is read: the narrative is not well-formed.
        pytest.param(f"<div {XHTML}>&nbsp;hello</div>", "well-formed", id="html-entity"),
        pytest.param(f"<div {XHTML}><p>hello</div>", "well-formed", id="not-well-formed"),
        pytest.param("<div>hello</div>", "namespace", id="no-namespace"),
        pytest.param(f"<p {XHTML}>hello</p>", "root must be a div", id="root-not-div"),
        pytest.param(f"<div {XHTML}><p> </p></div>", "txt-2", id="no-content"),
    ],
)
def test_unsafe_or_invalid_narrative(div: str, problem: str) -> None:
    issue = assert_invalid(narrative(div), "Patient.text.div", "invariant")
    assert problem in issue["diagnostics"]


@pytest.mark.parametrize("resource_id", ["a b", "a_b", "x" * 65])
def test_bad_id(resource_id: str) -> None:
    assert_invalid(patient(id=resource_id), "Patient.id", "value")


def test_bad_id_of_a_contained_resource() -> None:
    resource = document_reference()
    resource["contained"][1]["id"] = "in patient"
    assert_invalid(resource, "DocumentReference.contained[1].id", "value")


def test_unknown_resource_type_in_contained() -> None:
    resource = document_reference()
    resource["contained"].append({"resourceType": "Foo", "id": "f"})
    assert_invalid(resource, "DocumentReference.contained[2]", "structure")


def test_model_checks_are_reported_with_paths() -> None:
    # Cardinality and primitive formats come from the fhir.resources model.
    resource = document_reference(date="2020-12-31")
    del resource["content"]
    error = rejection(resource)
    assert issues_at(error, "DocumentReference.content")[0]["code"] == "required"
    assert issues_at(error, "DocumentReference.date")[0]["code"] == "value"
    for issue in error.outcome()["issue"]:
        assert "pydantic" not in issue["diagnostics"]
        assert "errors.pydantic.dev" not in issue["diagnostics"]


def test_choice_given_twice_is_reported_with_other_problems() -> None:
    error = rejection(patient(deceasedBoolean=True, deceasedDateTime="2020-01-01", gender="bogus"))
    assert issues_at(error, "Patient.gender")
    (twice,) = issues_at(error, "Patient.deceasedDateTime")  # the choice's second element
    assert "deceased[x] is given twice (deceasedBoolean, deceasedDateTime)" in twice["diagnostics"]


def test_problem_inside_a_bundle_entry() -> None:
    bundle = load(MHD_EXAMPLES / "Bundle-ex-minimalProvideDocumentBundleSimple.json")
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "DocumentReference")
    bundle["entry"][index]["resource"]["status"] = "bogus"
    assert_invalid(bundle, f"Bundle.entry[{index}].resource.status", "code-invalid")


def test_every_problem_is_reported_up_to_the_limit() -> None:
    error = rejection(patient(name=[{"family": 1}] * (MAX_ISSUES + 5)))
    issues = error.outcome()["issue"]
    assert [i["expression"] for i in issues[:MAX_ISSUES]] == [[f"Patient.name[{n}].family"] for n in range(MAX_ISSUES)]
    assert issues[-1]["severity"] == "information"
    assert len(issues) == MAX_ISSUES + 1


def test_several_problems_each_have_an_issue() -> None:
    error = rejection(document_reference(status="bogus", description="", subject={"reference": "Organization/1"}))
    expressions = {e for issue in error.outcome()["issue"] for e in issue["expression"]}
    assert {
        "DocumentReference.status",
        "DocumentReference.description",
        "DocumentReference.subject.reference",
    } <= expressions


def test_nesting_is_bounded() -> None:
    extension: dict[str, Any] = {"url": "http://x.org/e", "valueString": "x"}
    for _ in range(MAX_DEPTH):
        extension = {"url": "http://x.org/e", "extension": [extension]}
    error = rejection(patient(extension=[extension]))
    assert error.status == 422
    assert "nested deeper" in error.outcome()["issue"][0]["diagnostics"]


# -- extensions defined in profiles/ -------------------------------------------------------------

CLOSURE = "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-fermeture"


def closed_patient(*parts: dict[str, Any], **top: Any) -> dict[str, Any]:
    closure = {"url": CLOSURE, "extension": list(parts), **top}
    return {"resourceType": "Patient", "active": False, "extension": [closure]}


def problems(resource: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(FhirError) as caught:
        VALIDATOR.validate(resource)
    assert caught.value.status == 422
    return {issue["expression"][0]: issue["diagnostics"] for issue in caught.value.issues}


def test_the_closure_extension_is_checked_against_its_structure_definition() -> None:
    date, reason = {"url": "date", "valueDate": "2025-03-01"}, {"url": "reason", "valueString": "à sa demande"}
    VALIDATOR.validate(closed_patient(date, reason))
    VALIDATOR.validate(closed_patient({"url": "date", "valueDateTime": "2025-03-01T10:00:00Z"}, reason))
    VALIDATOR.validate(closed_patient(date, {"url": "reason", "valueCoding": {"code": "deces"}}))
    VALIDATOR.validate(closed_patient(date, {"url": "motif", "valueString": "the former name, still accepted"}))
    assert problems(closed_patient(reason)) == {
        "Patient.extension[0].extension:date": "Patient.extension[0].extension:date (url date) is required by"
        " dmp-fermeture (found 0)"
    }
    wrong_type = problems(closed_patient({"url": "date", "valueString": "yesterday"}, reason))
    assert list(wrong_type) == ["Patient.extension[0].extension[0].valueString"]
    assert "allows only valueDate or valueDateTime" in wrong_type["Patient.extension[0].extension[0].valueString"]
    assert list(problems(closed_patient(date, reason, reason))) == ["Patient.extension[0].extension:reason"]
    assert list(problems(closed_patient(date, reason, valueString="closed"))) == ["Patient.extension[0].value[x]"]


def test_an_extension_nobody_defines_here_is_left_alone() -> None:
    VALIDATOR.validate({"resourceType": "Patient", "extension": [{"url": "https://example.org/x", "valueString": "y"}]})
