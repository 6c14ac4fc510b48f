"""The lexical rules of FHIR R4's primitive types, as the validation walk applies them."""

from __future__ import annotations

import pytest

from fhirmodel.primitives import integer_problem, string_problem


@pytest.mark.parametrize(
    ("fhir_type", "value"),
    [
        ("date", "2024"),
        ("date", "2024-02"),
        ("date", "2024-02-29"),
        ("dateTime", "2024-02-29"),
        ("dateTime", "2015-02-07T13:28:17-05:00"),
        ("dateTime", "2017-01-01T00:00:00.000Z"),
        ("dateTime", "2016-12-31T23:59:60Z"),  # a leap second
        ("instant", "2015-02-07T13:28:17.239+02:00"),
        ("instant", "0001-01-01T00:00:00+14:00"),
        ("time", "23:59:59.5"),
        ("code", "a b"),
        ("code", "urn:ihe:iti:xds:2017:mimeTypeSufficient"),
        ("oid", "urn:oid:1.2.250.1.213.1.4.8"),
        ("uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
        ("uri", "urn:uuid:c757873d"),
        ("string", "anything at all\nand more"),
        ("markdown", " leading space"),
    ],
)
def test_a_valid_value_has_no_problem(fhir_type: str, value: str) -> None:
    assert string_problem(fhir_type, value) is None


@pytest.mark.parametrize(
    ("fhir_type", "value"),
    [
        ("date", "2024-13"),
        ("date", "2024-02-30"),  # no such day
        ("date", "2023-02-29"),
        ("date", "24-01-01"),
        ("date", "2024-01-01T10:00:00Z"),  # a date has no time
        ("dateTime", "2024-01-01T10:00"),  # seconds are required
        ("dateTime", "2024-01-01T10:00:00"),  # a time needs a zone
        ("dateTime", "2024-01-01T24:00:00Z"),
        ("dateTime", "2024-04-31T10:00:00Z"),
        ("instant", "2024-01-01"),  # an instant is to the second
        ("instant", "2024-01-01T10:00:00+15:00"),
        ("time", "10:00"),
        ("code", " lead"),
        ("code", "trail "),
        ("code", "two  spaces"),
        ("oid", "1.2.250"),
        ("oid", "urn:oid:3.1"),
        ("uuid", "urn:uuid:C757873D-EC9A-4326-A141-556F43239520"),
        ("uri", "http://a b"),
        ("canonical", "http://a\tb"),
    ],
)
def test_an_invalid_value_is_named(fhir_type: str, value: str) -> None:
    problem = string_problem(fhir_type, value)
    assert problem is not None and fhir_type in problem


@pytest.mark.parametrize(
    ("fhir_type", "value", "valid"),
    [
        ("integer", -(2**31), True),
        ("integer", 2**31, False),
        ("unsignedInt", 0, True),
        ("unsignedInt", -1, False),
        ("positiveInt", 1, True),
        ("positiveInt", 0, False),
        ("decimal", 2**70, True),  # a decimal's JSON number has no integer range
    ],
)
def test_integers_keep_to_their_range(fhir_type: str, value: int, valid: bool) -> None:
    assert (integer_problem(fhir_type, value) is None) is valid
