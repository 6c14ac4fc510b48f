"""The INS (CONTRACT §3): 15 characters, the NIR and its key ``97 - (NIR mod 97)``, Corsica's
``2A``/``2B`` counted as ``19``/``18``; a malformed one is refused wherever it is written — FHIR
resources (422 naming the element), accounts and creation codes (422 naming the member), tokens'
``person_id`` (the token describes no patient: 403; the token endpoint: OAuth ``invalid_request``)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirmodel.ins import ins_problem, nir_key, with_key
from tests.dmp import INS_SYSTEM, World

#: CONTRACT §2's own example person_id: a valid INS whose key was not computed by this project.
CONTRACT_EXAMPLE = "180017512345660"
DR = "810002673899"
INS_A = CONTRACT_EXAMPLE


def test_the_key_is_97_minus_the_nir_mod_97() -> None:
    assert nir_key(CONTRACT_EXAMPLE[:13]) == CONTRACT_EXAMPLE[13:]
    assert with_key("2790351215189") == "279035121518989"
    assert nir_key("1000175101001") == "51"  # a key below 10 keeps its two digits is checked next
    assert with_key("1800175000070") == "1800175000070" + f"{97 - 1800175000070 % 97:02d}"
    assert len(with_key("1800175000070")) == 15


def test_corsica_counts_2a_as_19_and_2b_as_18() -> None:
    assert nir_key("180012A123456") == f"{97 - 1800119123456 % 97:02d}"
    assert nir_key("180012B123456") == f"{97 - 1800118123456 % 97:02d}"
    assert nir_key("180012A123456") != nir_key("180012B123456")
    assert ins_problem(with_key("180012A123456")) is None
    assert ins_problem(with_key("180012B123456")) is None
    assert ins_problem("180012C123456" + nir_key("180012A123456")) is not None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1234", "15 characters"),
        ("1800175123456", "15 characters"),  # the NIR without its key
        ("18001751234566O", "13 digits"),
        ("1800A7512345660", "13 digits"),
        ("180017512345661", "its key is 61"),
        ("280017512345660", "its key is 60"),  # one digit changed: the key catches it
    ],
)
def test_malformed_ins_are_named(value: str, says: str) -> None:
    problem = ins_problem(value)
    assert problem is not None and says in problem


def new_patient(*values: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_SYSTEM, "value": value} for value in values],
        "name": [{"family": "Nouveau", "given": ["Patient"]}],
        "birthDate": "1980-01-17",
    }


def test_a_patient_with_a_malformed_ins_is_refused_naming_the_element(world: World) -> None:
    doctor = world.doctor(DR, INS_A)
    wrong_key = INS_A[:13] + "61"
    response = doctor.post("Patient", new_patient(INS_A, wrong_key))
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.identifier[1].value"] and "key" in issue["diagnostics"]
    response = doctor.post("Patient", new_patient(INS_A[:13]))
    assert response.status_code == 422
    assert response.get_json()["issue"][0]["expression"] == ["Patient.identifier[0].value"]
    assert doctor.total(f"Patient?identifier={INS_SYSTEM}|{INS_A}") == 0
    assert doctor.post("Patient", new_patient(INS_A)).status_code == 201


def test_an_ins_inside_another_resource_is_checked_too(world: World) -> None:
    world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [
            {"coding": [{"system": "https://dmp.example.org/fhir/CodeSystem/dmp-consent-type", "code": "access"}]}
        ],
        "patient": {"identifier": {"system": INS_SYSTEM, "value": INS_A}},
        "policyRule": {"text": "x"},
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
                        ]
                    },
                    "reference": {"identifier": {"system": INS_SYSTEM, "value": "1700475123459"}},
                }
            ],
        },
    }
    response = patient.post("Consent", consent)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["Consent.provision.actor[0].reference.identifier.value"]


def test_a_token_whose_person_id_is_no_ins_reaches_nothing(world: World) -> None:
    world.seed_patient(INS_A)
    for person_id in (INS_A[:13], INS_A[:13] + "61", "1234"):
        response = world.as_("HCP", patient=person_id, idnatps=DR).get(f"Patient?identifier={INS_SYSTEM}|{INS_A}")
        assert response.status_code == 403, person_id
        assert "person_id" in response.get_json()["issue"][0]["diagnostics"]


def test_accounts_and_creation_codes_refuse_a_malformed_ins(world: World) -> None:
    world.seed_patient(INS_A)
    client = world.client
    admin = {"Authorization": f"Bearer {world.token('ADM')}"}
    response = client.post("/fhir/auth/accounts", json={"ins": INS_A[:13], "email": "a@example.org"}, headers=admin)
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "invalid_request" and body["expression"] == ["ins"] and "15" in body["error_description"]
    response = client.post(
        "/fhir/auth/accounts", json={"ins": INS_A[:13] + "61", "email": "a@example.org"}, headers=admin
    )
    assert response.status_code == 422 and "key" in response.get_json()["error_description"]
    doctor = {"Authorization": f"Bearer {world.token('HCP', patient=INS_A, idnatps=DR)}"}
    response = client.post("/fhir/auth/creation-codes", json={"ins": INS_A[:13] + "61"}, headers=doctor)
    assert response.status_code == 422 and response.get_json()["expression"] == ["ins"]
    created = client.post("/fhir/auth/accounts", json={"ins": INS_A, "email": "a@example.org"}, headers=admin)
    assert created.status_code == 201, created.get_data(as_text=True)
