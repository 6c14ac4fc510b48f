"""The requests each scenario sends: what a DMP client does most (read, search by patient, create).

Targets are drawn at random for every request, so the figures reflect the whole data set and not
a few hot pages in the SQLite cache.
"""

from __future__ import annotations

import random
from urllib.parse import urlencode

import orjson

from bench.datagen import DOC_TYPES, LOINC, Population, make_document, patient_id, random_date
from bench.loadgen import Request, Scenario

FHIR_JSON = "application/fhir+json"
_GET_HEADERS = {"Accept": FHIR_JSON}
_POST_HEADERS = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}


def _random_patient(rng: random.Random, pop: Population) -> str:
    return f"Patient/{patient_id(rng.randrange(pop.patients))}"


def read_scenario(base_path: str, doc_ids: list[str]) -> Scenario:
    def make(rng: random.Random) -> Request:
        return "GET", f"{base_path}/DocumentReference/{rng.choice(doc_ids)}", None, _GET_HEADERS

    return Scenario("read", "GET DocumentReference/{id}, random id", make)


def search_patient_scenario(base_path: str, pop: Population) -> Scenario:
    def make(rng: random.Random) -> Request:
        query = urlencode({"patient": _random_patient(rng, pop)})
        return "GET", f"{base_path}/DocumentReference?{query}", None, _GET_HEADERS

    return Scenario("search-patient", "GET DocumentReference?patient=Patient/{pid}", make)


def search_patient_type_date_scenario(base_path: str, pop: Population) -> Scenario:
    def make(rng: random.Random) -> Request:
        code = rng.choice(DOC_TYPES)[0]
        since = random_date(rng).strftime("%Y-%m-%d")
        params = {"patient": _random_patient(rng, pop), "type": f"{LOINC}|{code}", "date": f"ge{since}"}
        return "GET", f"{base_path}/DocumentReference?{urlencode(params)}", None, _GET_HEADERS

    return Scenario("search-patient-type-date", "GET DocumentReference?patient=&type=loinc|code&date=ge", make)


def create_scenario(base_path: str, pop: Population) -> Scenario:
    def make(rng: random.Random) -> Request:
        body = orjson.dumps(make_document(rng, pop))
        return "POST", f"{base_path}/DocumentReference", body, _POST_HEADERS

    return Scenario("create", "POST DocumentReference (one resource)", make)


def fhir_scenarios(base_path: str, pop: Population, doc_ids: list[str]) -> list[Scenario]:
    return [
        read_scenario(base_path, doc_ids),
        search_patient_scenario(base_path, pop),
        search_patient_type_date_scenario(base_path, pop),
        create_scenario(base_path, pop),
    ]


def ceiling_scenario() -> Scenario:
    def make(rng: random.Random) -> Request:
        return "GET", "/ping", None, {"Accept": "application/json"}

    return Scenario("ceiling", "GET /ping on a trivial Flask app, same gunicorn settings", make)
