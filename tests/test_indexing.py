"""Unit tests of what search compares: date ranges and the index values extracted from resources.

``date_range`` turns every FHIR date, dateTime and instant into ``[low, high)`` UTC microseconds;
``extract_index`` turns a resource into typed values per search parameter, the way each FHIR data
type meets each search parameter type (R4 search.html §3.1.1.4).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Any

import pytest

from fhir_server.fhir.service import SERVED_TYPES
from fhir_server.runtime.config import PROJECT_ROOT
from fhirmodel.dates import MAX_US, MIN_US, DateFormatError, date_range, us_to_instant
from fhirmodel.fhirpath import Typed, _compile_fhirpath
from fhirmodel.indexing import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    contained_param,
    extract_index,
    normalize_string,
    parse_reference,
    values_for,
)
from fhirmodel.searchparams import ACCEPTED_KEPT, SearchParam, SearchParamRegistry

BASE = "http://127.0.0.1:8080/fhir"
INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
US = timedelta(microseconds=1)
DAY = 86_400_000_000


def us(instant: str) -> int:
    """UTC microseconds of an ISO instant with its zone, computed independently of the code under test."""
    return (datetime.fromisoformat(instant) - datetime.fromisoformat("1970-01-01T00:00:00+00:00")) // US


# -- date_range ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", "2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"),
        ("2024-02", "2024-02-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"),
        ("2024-12", "2024-12-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"),
        ("2024-02-29", "2024-02-29T00:00:00+00:00", "2024-03-01T00:00:00+00:00"),
        ("2024-03-01T10", "2024-03-01T10:00:00+00:00", "2024-03-01T11:00:00+00:00"),
        ("2024-03-01T10:15", "2024-03-01T10:15:00+00:00", "2024-03-01T10:16:00+00:00"),
        ("2024-03-01T10:15:30", "2024-03-01T10:15:30+00:00", "2024-03-01T10:15:31+00:00"),
        ("2024-03-01T10:15:30Z", "2024-03-01T10:15:30+00:00", "2024-03-01T10:15:31+00:00"),
        ("2024-03-01T10:15:30.5Z", "2024-03-01T10:15:30.500000+00:00", "2024-03-01T10:15:30.600000+00:00"),
        ("2024-03-01T10:15:30.123Z", "2024-03-01T10:15:30.123000+00:00", "2024-03-01T10:15:30.124000+00:00"),
        ("2024-03-01T10:15:30.123456Z", "2024-03-01T10:15:30.123456+00:00", "2024-03-01T10:15:30.123457+00:00"),
        ("2024-03-01T10:15:30.1234567Z", "2024-03-01T10:15:30.123456+00:00", "2024-03-01T10:15:30.123457+00:00"),
        ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59+00:00", "1970-01-01T00:00:00+00:00"),
    ],
)
def test_date_range_follows_the_precision(text: str, low: str, high: str) -> None:
    assert date_range(text) == (us(low), us(high))


@pytest.mark.parametrize(
    ("year", "days"),
    [(2024, 366), (2023, 365), (2000, 366), (1900, 365), (2100, 365)],
)
def test_date_range_of_a_year_counts_leap_days(year: int, days: int) -> None:
    low, high = date_range(str(year))
    assert high - low == days * DAY


@pytest.mark.parametrize(
    ("month", "days"),
    [("2024-02", 29), ("2023-02", 28), ("2000-02", 29), ("1900-02", 28), ("2024-04", 30), ("2024-01", 31)],
)
def test_date_range_of_a_month_has_its_length(month: str, days: int) -> None:
    low, high = date_range(month)
    assert high - low == days * DAY


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-03-01T10:00:00+01:00", "2024-03-01T09:00:00+00:00"),
        ("2024-03-01T00:30:00+02:00", "2024-02-29T22:30:00+00:00"),
        ("2024-03-01T10:00:00-05:30", "2024-03-01T15:30:00+00:00"),
        ("2024-12-31T23:00:00-01:00", "2025-01-01T00:00:00+00:00"),
        ("2024-03-01T10:00:00+14:00", "2024-02-29T20:00:00+00:00"),
        ("2024-03-01T10:00:00-00:00", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01T10:00:00", "2024-03-01T10:00:00+00:00"),  # no zone: the server's, UTC
    ],
)
def test_date_range_converts_time_zones_to_utc(text: str, utc: str) -> None:
    low, high = date_range(text)
    assert low == us(utc)
    assert high - low == 1_000_000
    assert us_to_instant(low) == datetime.fromisoformat(utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(("text", "hours"), [("0001-01-01T00:00:00+14:00", -14), ("9999-12-31T23:59:59-14:00", 14)])
def test_date_range_at_the_ends_of_the_calendar_is_a_range_like_any_other(text: str, hours: int) -> None:
    """A zone that moves the instant past year 1 or 9999 (beyond ``datetime``) still gives its range."""
    low, high = date_range(text)
    assert low == date_range(text[:19] + "Z")[0] + hours * 3_600_000_000
    assert high - low == 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "24",
        "2024-1",
        "2024-01-1",
        "2024-13",
        "2024-00",
        "2023-02-29",
        "1900-02-29",
        "2024-04-31",
        "2024-01-00",
        "2024-01-01T",
        "2024-01-01 10:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T10:60:00Z",
        "2024-01-01T10:00:60Z",
        "2024-01-01T10:00:00+0100",
        "2024-01-01T10:00:00+25:00",
        "2024-01-01T10:00:00+14:30",
        "2024-01-01T10:00:00+01:60",
        "2024-01-01T10:00:00.Z",
        "2024-01-01Z",
        "gt2024",
    ],
)
def test_date_range_refuses_what_is_not_a_fhir_date(text: str) -> None:
    with pytest.raises(DateFormatError):
        date_range(text)


# -- strings and references ----------------------------------------------------------------


def test_normalize_string_folds_case_and_accents() -> None:
    assert normalize_string("Élodie") == normalize_string("ELODIE") == "elodie"
    assert normalize_string("Ça se Déçoit") == "ca se decoit"
    assert normalize_string("Straße") == "strasse"


def test_normalize_string_takes_ascii_as_the_full_folding_would() -> None:
    """ASCII text is only case-folded, without decomposing it: the same as the full folding."""

    def folded(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text)
        return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()

    every_ascii = "".join(map(chr, range(128)))
    for text in (every_ascii, "RESTful Operation", "DUPONT Jean-Marie", ""):
        assert normalize_string(text) == folded(text)
    assert normalize_string("Œuvre") == "œuvre"
    assert normalize_string("ﬁn") == "fin"  # compatibility ligature


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/p1", ("Patient", "p1", None)),
        (f"{BASE}/Patient/p1", ("Patient", "p1", None)),
        (f"{BASE}/Patient/p1/_history/3", ("Patient", "p1", None)),
        ("Patient/p1/_history/3", ("Patient", "p1", None)),
        ("https://other.example/fhir/Patient/p1", (None, None, "https://other.example/fhir/Patient/p1")),
        (
            "urn:uuid:2b9f1b8e-1c1d-4a0e-9c7d-0d9c4c0f1e2a",
            (None, None, "urn:uuid:2b9f1b8e-1c1d-4a0e-9c7d-0d9c4c0f1e2a"),
        ),
        ("#contained", (None, None, "#contained")),
        ("Unknown/1", (None, None, "Unknown/1")),
        ("Patient/", (None, None, "Patient/")),
    ],
)
def test_parse_reference(ref: str, expected: tuple[str | None, str | None, str | None]) -> None:
    assert parse_reference(ref, BASE) == expected


def test_parse_reference_keeps_a_foreign_base_whole() -> None:
    assert parse_reference(f"{BASE}/Patient/p1", None) == (None, None, f"{BASE}/Patient/p1")
    assert parse_reference(f"{BASE}x/Patient/p1", BASE) == (None, None, f"{BASE}x/Patient/p1")


# -- extract_index over real SearchParameters -----------------------------------------------


@pytest.fixture(scope="module")
def registry() -> SearchParamRegistry:
    return SearchParamRegistry.load(PROJECT_ROOT / "ig" / "SearchParameter", SERVED_TYPES)


def index_of(registry: SearchParamRegistry, resource: dict[str, Any]) -> dict[str, list[IndexValue]]:
    return extract_index(registry, resource, BASE)


def strings(*texts: str) -> list[StringValue]:
    return [StringValue(normalize_string(t), t) for t in texts]


def test_patient_tokens(registry: SearchParamRegistry) -> None:
    index = index_of(
        registry,
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [
                {"system": INS, "value": "180059912345658", "type": {"text": "INS-NIR"}},
                {"value": "IPP-1"},
            ],
            "active": False,
            "gender": "female",
            "telecom": [
                {"system": "phone", "value": "0102030405"},
                {"system": "email", "value": "Elodie@Example.org"},
            ],
            "communication": [
                {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-FR", "display": "Français"}]}}
            ],
        },
    )
    assert index["_id"] == [TokenValue(None, "p1", None)]
    assert index["identifier"] == [
        TokenValue(INS, "180059912345658", "ins-nir"),  # Identifier.type.text, for :text
        TokenValue(None, "IPP-1", None),
    ]
    assert index["active"] == [TokenValue(None, "false", None)]  # a boolean is a code
    assert index["gender"] == [TokenValue(None, "female", None)]
    assert index["telecom"] == [
        TokenValue("phone", "0102030405", None),  # ContactPoint.system plays the part of the system
        TokenValue("email", "Elodie@Example.org", None),
    ]
    assert index["phone"] == [TokenValue("phone", "0102030405", None)]
    assert index["email"] == [TokenValue("email", "Elodie@Example.org", None)]
    assert index["language"] == [TokenValue("urn:ietf:bcp:47", "fr-FR", "francais")]
    assert "deceased" in index and index["deceased"] == [TokenValue(None, "false", None)]


def test_patient_strings_from_name_and_address_parts(registry: SearchParamRegistry) -> None:
    index = index_of(
        registry,
        {
            "resourceType": "Patient",
            "id": "p1",
            "name": [
                {"family": "Dupont", "given": ["Élodie", "Marie"], "prefix": ["Mme"], "suffix": ["PhD"]},
                {"text": "Élodie Dupont"},
                {"family": "Dupont"},  # the same value once
            ],
            "address": [
                {
                    "line": ["12 rue de la Paix", "Bât. B"],
                    "city": "Saint-Étienne",
                    "district": "Loire",
                    "state": "ARA",
                    "postalCode": "42000",
                    "country": "FRA",
                    "text": "12 rue de la Paix, 42000 Saint-Étienne",
                },
                {"postalCode": "75001"},
            ],
        },
    )
    assert index["name"] == strings("Dupont", "Élodie", "Marie", "Mme", "PhD", "Élodie Dupont")
    assert index["family"] == strings("Dupont")
    assert index["given"] == strings("Élodie", "Marie")
    assert index["address"] == strings(
        "12 rue de la Paix", "Bât. B", "Saint-Étienne", "Loire", "ARA", "42000", "FRA",
        "12 rue de la Paix, 42000 Saint-Étienne", "75001",
    )  # fmt: skip
    assert index["address-city"] == strings("Saint-Étienne")
    assert index["address-postalcode"] == strings("42000", "75001")
    assert index["address-country"] == strings("FRA")
    assert StringValue("saint-etienne", "Saint-Étienne") in index["address"]


def test_patient_dates_and_references(registry: SearchParamRegistry) -> None:
    index = index_of(
        registry,
        {
            "resourceType": "Patient",
            "id": "p1",
            "birthDate": "1980-05",
            "deceasedDateTime": "2020-01-01T10:00:00+01:00",
            "generalPractitioner": [
                {"reference": "Practitioner/pr1"},
                {"reference": f"{BASE}/Organization/o1"},
                {"reference": "https://annuaire.example/fhir/PractitionerRole/r1"},
                {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10001234567"}},
                {"reference": "#gp"},
            ],
            "managingOrganization": {"reference": "Organization/o2/_history/4"},
            "meta": {
                "lastUpdated": "2024-03-01T10:00:00.123Z",
                "tag": [{"system": "http://example.org/tags", "code": "vip", "display": "Très important"}],
                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
                "profile": ["http://interopsante.org/fhir/StructureDefinition/FrPatient"],
            },
        },
    )
    assert index["birthdate"] == [DateValue(*date_range("1980-05"))]
    assert index["death-date"] == [DateValue(us("2020-01-01T09:00:00+00:00"), us("2020-01-01T09:00:01+00:00"))]
    assert index["deceased"] == [TokenValue(None, "true", None)]
    assert index["_lastUpdated"] == [DateValue(*date_range("2024-03-01T10:00:00.123Z"))]
    assert index["general-practitioner"] == [
        ReferenceValue("Practitioner", "pr1", None),
        ReferenceValue("Organization", "o1", None),  # local, though absolute
        ReferenceValue(None, None, "https://annuaire.example/fhir/PractitionerRole/r1"),
        ReferenceValue(None, None, None, "urn:oid:1.2.250.1.71.4.2.1", "10001234567"),
    ]  # and nothing for the contained "#gp"
    assert index["organization"] == [ReferenceValue("Organization", "o2", None)]
    assert index["_tag"] == [TokenValue("http://example.org/tags", "vip", "tres important")]
    assert index["_security"] == [TokenValue("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", None)]
    assert index["_profile"] == [UriValue("http://interopsante.org/fhir/StructureDefinition/FrPatient")]
    assert "link" not in index and "address" not in index  # parameters without values are left out


def test_document_reference_codeable_concepts_periods_and_uris(registry: SearchParamRegistry) -> None:
    index = index_of(
        registry,
        {
            "resourceType": "DocumentReference",
            "id": "d1",
            "status": "current",
            "type": {
                "coding": [
                    {"system": LOINC, "code": "11488-4", "display": "Consult note"},
                    {"system": "urn:oid:1.2.250.1.213.1.1.4.12", "code": "CR-CONS"},
                ],
                "text": "Compte rendu de consultation",
            },
            "category": [{"text": "Comptes rendus"}],
            "securityLabel": [{"coding": [{"code": "N"}]}],
            "subject": {"reference": "Patient/p1", "identifier": {"system": INS, "value": "180059912345658"}},
            "author": [{"reference": "#a1"}],
            "content": [
                {
                    "attachment": {"url": "http://example.org/docs/1.pdf", "contentType": "application/pdf"},
                    "format": {
                        "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                        "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                    },
                }
            ],
            "context": {"period": {"start": "2024-01-15"}, "event": [{"coding": [{"system": LOINC, "code": "x"}]}]},
            "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d0"}}],
        },
    )
    assert index["type"] == [
        TokenValue(LOINC, "11488-4", "consult note"),
        TokenValue("urn:oid:1.2.250.1.213.1.1.4.12", "CR-CONS", "compte rendu de consultation"),
    ]
    assert index["category"] == [TokenValue(None, None, "comptes rendus")]  # text only, for :text
    assert index["security-label"] == [TokenValue(None, "N", None)]
    assert index["status"] == [TokenValue(None, "current", None)]
    assert index["contenttype"] == [TokenValue(None, "application/pdf", None)]
    assert index["subject"] == [
        ReferenceValue("Patient", "p1", None),
        ReferenceValue(None, None, None, INS, "180059912345658"),
    ]
    assert index["patient"] == index["subject"]
    assert "author" not in index  # a contained author is not a searchable reference
    assert index["period"] == [DateValue(date_range("2024-01-15")[0], MAX_US)]  # still open
    assert index["location"] == [UriValue("http://example.org/docs/1.pdf")]
    assert index["relatesto"] == [ReferenceValue("DocumentReference", "d0", None)]
    assert index["relation"] == [TokenValue(None, "replaces", None)]


def test_contained_targets_are_indexed_under_the_chain_that_reaches_them(registry: SearchParamRegistry) -> None:
    """A contained resource a reference parameter points at is indexed on its container under the
    name of the chain asking for it; a contained resource reads its siblings' ``#id``."""
    index = index_of(
        registry,
        {
            "resourceType": "DocumentReference",
            "id": "d1",
            "status": "current",
            "contained": [
                {"resourceType": "PractitionerRole", "id": "r", "practitioner": {"reference": "#p"}},
                {"resourceType": "Practitioner", "id": "p", "name": [{"family": "Durand", "given": ["Paul"]}]},
                {"resourceType": "Patient", "id": "src", "name": [{"family": "Source"}]},
                {"resourceType": "Organization", "id": "o", "partOf": {"reference": "Organization/o2"}},
            ],
            "author": [{"reference": "#r"}, {"reference": "Practitioner/pr1"}],
            "custodian": {"reference": "#o"},
            "context": {"sourcePatientInfo": {"reference": "#src"}},
            "content": [],
        },
    )
    assert index["author"] == [ReferenceValue("Practitioner", "pr1", None)]
    assert index["author:PractitionerRole._id"] == [TokenValue(None, "r", None)]
    assert index["author:PractitionerRole.family"] == strings("Durand")  # the role's practitioner's
    assert index["author:PractitionerRole.practitioner:Practitioner.given"] == strings("Paul")
    assert index["author:PractitionerRole.practitioner:Practitioner._id"] == [TokenValue(None, "p", None)]
    assert index["custodian:Organization.partof"] == [ReferenceValue("Organization", "o2", None)]
    assert not [name for name in index if "Patient" in name]  # sourcePatientInfo is no search parameter
    assert contained_param("author:PractitionerRole.practitioner:Practitioner.given") == ("Practitioner", "given")
    assert contained_param("author") is None and contained_param("address-city") is None


def test_concept_text_gets_its_own_row_only_when_no_coding_carries_it(registry: SearchParamRegistry) -> None:
    def type_index(concept: dict[str, Any]) -> list[IndexValue]:
        resource = {"resourceType": "DocumentReference", "id": "d", "status": "current", "type": concept, "content": []}
        return index_of(registry, resource)["type"]

    displayed = {"coding": [{"system": LOINC, "code": "1", "display": "One"}], "text": "Un"}
    assert type_index(displayed) == [TokenValue(LOINC, "1", "one"), TokenValue(None, None, "un")]
    undisplayed = {"coding": [{"system": LOINC, "code": "1"}], "text": "Un"}
    assert type_index(undisplayed) == [TokenValue(LOINC, "1", "un")]
    same = {"coding": [{"system": LOINC, "code": "1", "display": "Un"}], "text": "un"}
    assert type_index(same) == [TokenValue(LOINC, "1", "un")]


def test_consent_and_audit_event(registry: SearchParamRegistry) -> None:
    consent = index_of(
        registry,
        {
            "resourceType": "Consent",
            "id": "c1",
            "status": "active",
            "dateTime": "2024-01-01T12:00:00Z",
            "patient": {"reference": "Patient/p1"},
            "provision": {
                "period": {"end": "2020-06"},
                "actor": [{"role": {"text": "x"}, "reference": {"reference": "Practitioner/pr1"}}],
            },
        },
    )
    assert consent["period"] == [DateValue(MIN_US, date_range("2020-06")[1])]  # no start
    assert consent["date"] == [DateValue(*date_range("2024-01-01T12:00:00Z"))]
    assert consent["actor"] == [ReferenceValue("Practitioner", "pr1", None)]
    assert consent["patient"] == [ReferenceValue("Patient", "p1", None)]
    audit = index_of(
        registry,
        {
            "resourceType": "AuditEvent",
            "id": "a1",
            "recorded": "2024-03-01T10:00:00+01:00",
            "agent": [{"who": {"reference": "Patient/p1"}}, {"who": {"reference": "Practitioner/pr1"}}],
            "entity": [{"what": {"reference": "Patient/p2"}}, {"what": {"reference": "DocumentReference/d1"}}],
        },
    )
    assert audit["date"] == [DateValue(us("2024-03-01T09:00:00+00:00"), us("2024-03-01T09:00:01+00:00"))]
    assert audit["patient"] == [ReferenceValue("Patient", "p1", None), ReferenceValue("Patient", "p2", None)]
    assert audit["agent"] == [ReferenceValue("Patient", "p1", None), ReferenceValue("Practitioner", "pr1", None)]


def test_an_index_limited_to_some_parameters_asks_which_once_per_type(registry: SearchParamRegistry) -> None:
    """``only`` (a lazy index family's eager rows) is judged once per parameter of a type, then
    the same parameters are indexed for every resource of it, and only them."""
    asked: list[str] = []

    def dates_only(code: str, param_type: str) -> bool:
        asked.append(code)
        return param_type == "date"

    event = {"resourceType": "AuditEvent", "id": "a1", "recorded": "2024-03-01T10:00:00Z"}
    event["agent"] = [{"who": {"reference": "Patient/p1"}}]
    first = extract_index(registry, event, BASE, dates_only)
    second = extract_index(registry, {**event, "recorded": "2025-01-01"}, BASE, dates_only)
    assert set(first) == set(second) == {"date"}
    assert second["date"] == [DateValue(*date_range("2025-01-01"))]
    assert sorted(asked) == sorted(registry.for_type("AuditEvent"))


def test_a_registry_keeps_a_bounded_number_of_predicates_answers(registry: SearchParamRegistry) -> None:
    """A new predicate each call (not how the stores call it) is answered, not kept past the bound."""
    fresh = SearchParamRegistry(p for rtype in registry.types() for p in registry.for_type(rtype).values())
    for n in range(ACCEPTED_KEPT + 10):
        assert [p.code for p in fresh.accepted("AuditEvent", lambda code, _type, n=n: code == "date")] == ["date"]
    assert len(fresh._accepted) == ACCEPTED_KEPT


def test_mhd_extension_parameters(registry: SearchParamRegistry) -> None:
    mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition"
    index = index_of(
        registry,
        {
            "resourceType": "List",
            "id": "l1",
            "status": "current",
            "mode": "working",
            "extension": [
                {
                    "url": f"{mhd}/ihe-designationType",
                    "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "721914005"}]},
                },
                {
                    "url": f"{mhd}/ihe-sourceId",
                    "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"},
                },
                {"url": f"{mhd}/ihe-HomeCommunityId", "valueOid": "urn:oid:1.2.250.1.213"},
            ],
        },
    )
    assert index["designationType"] == [TokenValue("http://snomed.info/sct", "721914005", None)]
    assert index["sourceId"] == [TokenValue("urn:ietf:rfc:3986", "urn:oid:1.2.3", None)]
    assert index["targetCommunityIdList"] == [UriValue("urn:oid:1.2.250.1.213")]


ARCHIVED = "https://dmp.example.org/fhir/StructureDefinition/dmp-archived"


@pytest.mark.parametrize(
    ("extensions", "archived"),
    [
        ([{"url": ARCHIVED, "valueBoolean": True}], "true"),
        ([{"url": ARCHIVED, "valueBoolean": False}], "false"),
        ([], "false"),  # absent: not archived, so that archived=false finds it
        ([{"url": "http://example.org/other", "valueBoolean": True}], "false"),
        ([{"url": ARCHIVED, "valueBoolean": True}, {"url": ARCHIVED, "valueBoolean": False}], "true"),  # first()
    ],
)
def test_an_iif_is_indexed_without_fhirpathpy_as_fhirpathpy_would(
    registry: SearchParamRegistry, extensions: list[dict[str, Any]], archived: str
) -> None:
    """The DMP's ``archived`` is ``iif(<extension>.exists(), <extension>.value.first(), false)``:
    compiled to a path walk (fhirpathpy took a sixth of a document's indexing), which must find
    what fhirpathpy finds."""
    param = registry.get("DocumentReference", "archived")
    assert param is not None and "_compile_iif" in param.extractor.__qualname__
    document = {"resourceType": "DocumentReference", "status": "current", "extension": extensions}
    compiled = values_for(param, param.extractor(document), BASE)
    assert compiled == [TokenValue(None, archived, None)]
    assert values_for(param, _compile_fhirpath(param.expression)(document), BASE) == compiled


# -- values_for, type by type ----------------------------------------------------------------


def param_of(ptype: str) -> SearchParam:
    return SearchParam("x", ptype, "Basic", "", "", (), extractor=lambda _: [], definition={})


def values(ptype: str, *typed: Typed) -> list[IndexValue]:
    return values_for(param_of(ptype), list(typed), BASE)


def test_tokens_by_data_type() -> None:
    assert values("token", (True, "boolean"), (False, "boolean")) == [
        TokenValue(None, "true", None),
        TokenValue(None, "false", None),
    ]
    assert values("token", ("final", "code"), (3, "integer")) == [
        TokenValue(None, "final", None),
        TokenValue(None, "3", None),
    ]
    assert values("token", ({"system": "s", "code": "c", "display": "Disp"}, "Coding")) == [
        TokenValue("s", "c", "disp")
    ]
    assert values("token", ({"system": "s", "display": "Only text"}, "Coding")) == [TokenValue("s", None, "only text")]
    assert values("token", ({"system": "s"}, "Coding")) == []  # nothing to search
    assert values("token", ({"system": "s", "value": "v"}, "Identifier")) == [TokenValue("s", "v", None)]
    assert values("token", ({"system": "email", "value": "a@b", "use": "work"}, "ContactPoint")) == [
        TokenValue("email", "a@b", None)
    ]
    assert values("token", ({"coding": []}, "CodeableConcept")) == []
    # Without a known type, the shape decides.
    assert values("token", ({"coding": [{"code": "c"}]}, None)) == [TokenValue(None, "c", None)]
    assert values("token", ({"system": "s", "value": "v"}, None)) == [TokenValue("s", "v", None)]
    assert values("token", ({"system": "s", "code": "c"}, None)) == [TokenValue("s", "c", None)]


def test_dates_by_data_type() -> None:
    assert values("date", ("2024-03-01", "date")) == [DateValue(*date_range("2024-03-01"))]
    assert values("date", ({"start": "2024-01-01", "end": "2024-01-31"}, "Period")) == [
        DateValue(date_range("2024-01-01")[0], date_range("2024-01-31")[1])
    ]
    assert values("date", ({"start": "2024-01-01"}, "Period")) == [DateValue(date_range("2024-01-01")[0], MAX_US)]
    assert values("date", ({"end": "2024-01-31"}, "Period")) == [DateValue(MIN_US, date_range("2024-01-31")[1])]
    timing = {"event": ["2024-01-01", "2024-02-01T10:00:00Z"], "repeat": {"frequency": 1}}
    assert values("date", (timing, "Timing")) == [
        DateValue(*date_range("2024-01-01")),
        DateValue(*date_range("2024-02-01T10:00:00Z")),
    ]
    assert values("date", ({"repeat": {"frequency": 1}}, "Timing")) == []
    assert values("date", ("not a date", "dateTime")) == []
    assert values("date", ({"start": "2024-13"}, "Period")) == []


def test_numbers_quantities_and_uris() -> None:
    assert values("number", (3, "integer"), ("4.5", "decimal"), (True, "boolean")) == [
        NumberValue(3.0),
        NumberValue(4.5),
    ]
    not_finite = (("NaN", "decimal"), ("1e999", "decimal"), (float("inf"), "decimal"), (float("nan"), "decimal"))
    assert values("number", *not_finite) == []
    assert values("quantity", *(({"value": v}, "Quantity") for v, _ in not_finite)) == []
    ucum = "http://unitsofmeasure.org"
    assert values("quantity", ({"value": 5.5, "system": ucum, "code": "mg"}, "Quantity")) == [
        QuantityValue(5.5, ucum, "mg")
    ]
    assert values("quantity", ({"value": 2, "unit": "comprimé"}, "Quantity")) == [QuantityValue(2.0, None, "comprimé")]
    assert values("quantity", ({"unit": "mg"}, "Quantity")) == []
    assert values("quantity", (7, "integer")) == [QuantityValue(7.0, None, None)]
    assert values("uri", ("http://example.org/a", "uri"), ({"not": "a uri"}, None)) == [
        UriValue("http://example.org/a")
    ]


def test_references_by_form() -> None:
    assert values("reference", ({"reference": "Patient/p1"}, "Reference")) == [ReferenceValue("Patient", "p1", None)]
    assert values("reference", ({"reference": f"{BASE}/Patient/p1"}, "Reference")) == [
        ReferenceValue("Patient", "p1", None)
    ]
    assert values("reference", ({"reference": "#c1"}, "Reference")) == []
    assert values("reference", ({"reference": "urn:uuid:1234"}, "Reference")) == [
        ReferenceValue(None, None, "urn:uuid:1234")
    ]
    assert values("reference", ({"identifier": {"value": "v"}}, "Reference")) == [
        ReferenceValue(None, None, None, None, "v")
    ]
    assert values("reference", ({"identifier": {"system": "s"}}, "Reference")) == []  # no value to search
    assert values("reference", ("http://example.org/fhir/ValueSet/vs", "canonical")) == [
        ReferenceValue(None, None, "http://example.org/fhir/ValueSet/vs")
    ]
    both = {"reference": "Patient/p1", "identifier": {"system": INS, "value": "1"}}
    assert values("reference", (both, "Reference"), (both, "Reference")) == [
        ReferenceValue("Patient", "p1", None),
        ReferenceValue(None, None, None, INS, "1"),
    ]  # duplicates dropped
