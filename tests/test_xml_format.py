"""FHIR XML format: lossless round trip with the JSON form, specification order, safe parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from fhir_server.fhir.formats.xml import MAX_DEPTH, XmlFormatError, json_to_xml, xml_to_json
from tests.paths import HL7_EXAMPLES as EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
F = "{http://hl7.org/fhir}"
H = "{http://www.w3.org/1999/xhtml}"
NS = 'xmlns="http://hl7.org/fhir"'


def load(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def local_names(node: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in node]


def test_examples_are_present() -> None:
    assert len(EXAMPLE_FILES) > 100


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_round_trip_of_official_example(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    xml = json_to_xml(resource)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = parse(xml)
    assert root.tag == F + resource["resourceType"]
    assert xml_to_json(xml) == resource


def test_patient_xml_follows_specification_order() -> None:
    root = parse(json_to_xml(load("Patient-example.json")))
    assert local_names(root) == [
        "id",
        "text",
        "identifier",
        "active",
        "name",
        "name",
        "name",
        "telecom",
        "telecom",
        "telecom",
        "telecom",
        "gender",
        "birthDate",
        "deceasedBoolean",
        "address",
        "contact",
        "managingOrganization",
    ]
    # Resource.id is an element; primitive values are attributes; Extension.url is an attribute.
    assert root.find(F + "id").get("value") == "example"
    assert local_names(root.find(F + "identifier")) == [
        "use",
        "type",
        "system",
        "value",
        "period",
        "assigner",
    ]
    assert [g.get("value") for g in root.find(F + "name").findall(F + "given")] == ["Peter", "James"]
    assert root.find(F + "active").get("value") == "true"
    birth = root.find(F + "birthDate")
    assert birth.get("value") == "1974-12-25"
    extension = birth.find(F + "extension")
    assert extension.get("url") == "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert extension.find(F + "valueDateTime").get("value") == "1974-12-25T14:35:45-05:00"
    assert local_names(root.find(F + "contact")) == [
        "relationship",
        "name",
        "telecom",
        "address",
        "gender",
        "period",
    ]
    div = root.find(F + "text").find(H + "div")
    assert div is not None and div.find(f".//{H}b").text == "Chalmers"


def test_nested_types_and_resources_are_wrapped() -> None:
    bundle = load("Bundle-bundle-transaction.json")
    root = parse(json_to_xml(bundle))
    entries = root.findall(F + "entry")
    assert len(entries) == len(bundle["entry"])
    for entry, source in zip(entries, bundle["entry"], strict=True):
        if "resource" in source:
            (inner,) = entry.find(F + "resource")
            assert inner.tag == F + source["resource"]["resourceType"]
    first = local_names(entries[0])
    assert first.index("fullUrl") < first.index("resource") < first.index("request")


def test_document_reference_content_order() -> None:
    root = parse(json_to_xml(load("DocumentReference-example.json")))
    (content,) = root.findall(F + "content")
    assert local_names(content) == ["attachment", "format"]
    assert local_names(root)[:3] == ["id", "text", "contained"]


def test_element_id_is_an_attribute_but_resource_id_an_element() -> None:
    resource = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"id": "n1", "family": "Martin"}],
        "_birthDate": {"id": "b1"},
    }
    root = parse(json_to_xml(resource))
    assert root.get("id") is None and root.find(F + "id").get("value") == "p1"
    assert root.find(F + "name").get("id") == "n1"
    assert root.find(F + "birthDate").attrib == {"id": "b1"}
    assert xml_to_json(json_to_xml(resource)) == resource


def test_spec_style_xml_with_primitive_extension() -> None:
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment that must be ignored -->
<Patient {NS} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://hl7.org/fhir ../../schema/patient.xsd">
  <id value="pat1"/>
  <!-- another comment -->
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml"><p>Jean &quot;Jo&quot; Dupont</p></div>
  </text>
  <active value="false"/>
  <name>
    <family value="Dupont"/>
    <given value="Jean"/>
  </name>
  <birthDate value="1970-03-30">
    <extension url="http://example.org/x">
      <valueString value="y"/>
    </extension>
  </birthDate>
  <multipleBirthInteger value="2"/>
</Patient>
""".encode()
    assert xml_to_json(xml) == {
        "resourceType": "Patient",
        "id": "pat1",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jean &quot;Jo&quot; Dupont</p></div>',
        },
        "active": False,
        "name": [{"family": "Dupont", "given": ["Jean"]}],
        "birthDate": "1970-03-30",
        "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        "multipleBirthInteger": 2,
    }


def test_primitive_arrays_keep_null_placeholders() -> None:
    xml = f"""<Patient {NS}><name>
      <given value="Jean"/>
      <given id="g2"><extension url="http://example.org/e"><valueCode value="x"/></extension></given>
      <given value="Paul"/>
    </name></Patient>""".encode()
    expected = {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["Jean", None, "Paul"],
                "_given": [
                    None,
                    {"id": "g2", "extension": [{"url": "http://example.org/e", "valueCode": "x"}]},
                    None,
                ],
            }
        ],
    }
    assert xml_to_json(xml) == expected
    names = parse(json_to_xml(expected)).find(F + "name").findall(F + "given")
    assert [g.get("value") for g in names] == ["Jean", None, "Paul"]
    assert names[1].get("id") == "g2"
    # Only extensions, no values at all: the value array is left out rather than all nulls.
    only = {"resourceType": "Patient", "name": [{"_given": [{"id": "a"}, {"id": "b"}]}]}
    assert xml_to_json(json_to_xml(only)) == only


def test_numbers_and_booleans_are_typed() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 72.50, "unit": "kg"},
        "component": [
            {"code": {"text": "a"}, "valueInteger": 3},
            {"code": {"text": "b"}, "valueQuantity": {"value": 4}},
            {"code": {"text": "c"}, "valueQuantity": {"value": 1e-7}},
            {"code": {"text": "d"}, "valueBoolean": True},
        ],
    }
    xml = json_to_xml(observation)
    root = parse(xml)
    assert root.find(f"{F}valueQuantity/{F}value").get("value") == "72.5"
    values = [c[1].get("value") or c[1][0].get("value") for c in root.findall(F + "component")]
    assert values == ["3", "4", "1e-07", "true"]
    back = xml_to_json(xml)
    assert back == observation
    assert isinstance(back["component"][1]["valueQuantity"]["value"], int)
    assert isinstance(back["valueQuantity"]["value"], float)
    decimal_xml = f'<Observation {NS}><valueQuantity><value value="1.50E2"/></valueQuantity></Observation>'
    assert xml_to_json(decimal_xml.encode())["valueQuantity"] == {"value": 150.0}


def test_unknown_xml_element_names_its_path() -> None:
    xml = f'<Patient {NS}><name><family value="X"/></name><name><foo value="x"/></name></Patient>'
    with pytest.raises(XmlFormatError, match=r"^Patient\.name\[1\]\.foo: unknown element$"):
        xml_to_json(xml.encode())


def test_unknown_json_key_names_its_path() -> None:
    with pytest.raises(XmlFormatError, match=r"^Patient\.name\[0\]\.foo: unknown element$"):
        json_to_xml({"resourceType": "Patient", "name": [{"family": "X", "foo": "bar"}]})
    with pytest.raises(XmlFormatError, match=r"^Patient\.name\[0\]\.family\._id: unknown element$"):
        json_to_xml({"resourceType": "Patient", "name": [{"_family": {"_id": {}}}]})


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<Patient", "malformed XML"),
        (b"", "malformed XML"),
        (b'<Patient xmlns="http://example.org/other"/>', "expected http://hl7.org/fhir"),
        (b"<Patient/>", "no namespace"),
        (f"<Foo {NS}/>".encode(), "unknown resource type 'Foo'"),
        (f"<DomainResource {NS}/>".encode(), "unknown resource type"),
        (f'<Patient {NS}><name value="x"/></Patient>'.encode(), r"Patient\.name\[0\]@value: value attribute"),
        (f'<Patient {NS} id="x"/>'.encode(), "Patient@id: unknown attribute"),
        (f'<Patient {NS}><active value="yes"/></Patient>'.encode(), "invalid boolean 'yes'"),
        (f'<Patient {NS}><multipleBirthInteger value="1.5"/></Patient>'.encode(), "invalid integer"),
        (f'<Patient {NS}><gender value="male"/><gender value="female"/></Patient>'.encode(), "repeats"),
        (f"<Patient {NS}><birthDate/></Patient>".encode(), "without value or extension"),
        (f"<Patient {NS}><name>text</name></Patient>".encode(), "unexpected text"),
        (
            f"<Patient {NS}><text><div/></text></Patient>".encode(),
            "div is in http://hl7.org/fhir, expected http://www.w3.org/1999/xhtml",
        ),
        (f"<Patient {NS}><contained/></Patient>".encode(), "exactly one resource"),
    ],
)
def test_invalid_xml_is_refused(xml: bytes, message: str) -> None:
    with pytest.raises(XmlFormatError, match=message):
        xml_to_json(xml)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"resourceType": "Nope"}, "unknown resource type"),
        ({"resourceType": "Patient", "active": "true"}, "Patient.active: expected a boolean"),
        ({"resourceType": "Patient", "multipleBirthInteger": 1.5}, "expected a number"),
        ({"resourceType": "Patient", "name": {"family": "X"}}, "Patient.name: expected an array"),
        ({"resourceType": "Patient", "gender": ["male"]}, "unexpected array"),
        ({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [None, None]}]}, "differ in length"),
        ({"resourceType": "Patient", "name": [{"given": [None]}]}, r"given\[0\]: null without"),
        ({"resourceType": "Patient", "name": [{"family": "a\x01b"}]}, "family"),
        ({"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x</p>"}}, "XHTML div"),
        ({"resourceType": "Patient", "text": {"status": "generated", "div": "<div"}}, "malformed XML"),
        ({"resourceType": "Patient", "contained": [{"id": "x"}]}, r"contained\[0\]: unknown resource type"),
    ],
)
def test_invalid_json_is_refused(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(XmlFormatError, match=message):
        json_to_xml(resource)


def test_nan_decimal_is_refused() -> None:
    with pytest.raises(XmlFormatError, match="finite"):
        json_to_xml({"resourceType": "Observation", "valueQuantity": {"value": float("nan")}})


def test_xxe_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xml = f"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>
<Patient {NS}><name><family value="&xxe;"/></name></Patient>"""
    with pytest.raises(XmlFormatError, match="DOCTYPE") as caught:
        xml_to_json(xml.encode())
    assert "TOP-SECRET" not in str(caught.value)
    utf16 = xml.replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    with pytest.raises(XmlFormatError) as caught:
        xml_to_json(utf16.encode("utf-16"))
    assert "TOP-SECRET" not in str(caught.value)


def test_doctype_is_refused_in_any_encoding() -> None:
    xml = f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Patient><Patient {NS}/>'
    for data in (xml.replace("UTF-16", "UTF-8").encode(), xml.encode("utf-16")):
        with pytest.raises(XmlFormatError, match=r"^DOCTYPE and entity declarations are not allowed$"):
            xml_to_json(data)


def test_billion_laughs_is_refused_unexpanded() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    patient = f'<Patient {NS}><name><family value="&lol9;"/></name></Patient>'
    body = f"<!DOCTYPE Patient [{''.join(entities)}]>{patient}"
    for data in (body.encode(), ('<?xml version="1.0" encoding="UTF-16"?>' + body).encode("utf-16")):
        with pytest.raises(XmlFormatError) as caught:
            xml_to_json(data)
        assert "lol" not in str(caught.value)  # refused before any entity is expanded


def test_doctype_in_narrative_json_is_refused() -> None:
    div = '<!DOCTYPE div [<!ENTITY e "x">]><div xmlns="http://www.w3.org/1999/xhtml">&e;</div>'
    with pytest.raises(XmlFormatError, match=r"^Patient\.text\.div: DOCTYPE"):
        json_to_xml({"resourceType": "Patient", "text": {"status": "generated", "div": div}})


def _nested_extension(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        extension = {"url": "http://example.org/n", "extension": [extension]}
    return extension


def test_depth_is_bounded() -> None:
    shallow = {"resourceType": "Patient", "extension": [_nested_extension(MAX_DEPTH - 3)]}
    assert xml_to_json(json_to_xml(shallow)) == shallow
    deep = {"resourceType": "Patient", "extension": [_nested_extension(MAX_DEPTH)]}
    with pytest.raises(XmlFormatError, match="nesting deeper"):
        json_to_xml(deep)
    # Far deeper than the Python stack allows: still a clean error.
    with pytest.raises(XmlFormatError, match="nesting deeper"):
        json_to_xml({"resourceType": "Patient", "extension": [_nested_extension(5000)]})
    opening = '<extension url="http://example.org/n">' * MAX_DEPTH
    xml = f"<Patient {NS}>{opening}{'</extension>' * MAX_DEPTH}</Patient>"
    with pytest.raises(XmlFormatError, match="nesting deeper than 64"):
        xml_to_json(xml.encode())
