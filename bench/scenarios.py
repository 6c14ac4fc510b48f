"""The requests each scenario sends: what a DMP client does most (read, search by patient, create).

Targets are drawn at random for every request, so the figures reflect the whole data set and not
a few hot pages in the SQLite cache. Every request carries the token of the patient it targets
(a token reaches one patient only, R1): the bench doctor's, minted on first use and cached, so
the server verifies a real signature and applies the real rules on every request.

The ``big-*`` scenarios target one patient with many documents, some masked from professionals
(R11) and some of a type a nurse may not read (R10): what the policy filter costs when it has
something to filter.

The ``iti67-*`` scenarios are IHE MHD Find Document References as MHD clients send them (the
patient by INS through ``patient.identifier``, the status, the class, newest first), and the
``iti65-*`` ones Provide Document Bundles of real ~10 KB CDA documents (``bench.mhd``), one or a
few documents per Bundle, each a transaction the doctor's token is checked for and audited.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson

from bench.auth import DOCTOR, NURSE, Professional, Tokens, bearer
from bench.datagen import (
    DOC_TYPES,
    LOINC,
    BigPatient,
    Population,
    classes_of,
    make_document,
    patient_id,
    patient_ins,
    random_date,
)
from bench.loader import DocRef
from bench.loadgen import Request, Scenario
from bench.mhd import provide_bundle_bytes

FHIR_JSON = "application/fhir+json"
#: Page size of the big-patient searches: a client paging through a long record.
BIG_PAGE = 50
#: Page size an MHD client asks for with ``_sort=-date``: the latest documents first.
MHD_PAGE = 20
#: Documents per ITI-65 Bundle: one (the usual submission), and a few (a discharge with its letters).
ITI65_DOCUMENTS = (1, 5)


@dataclass(frozen=True)
class Workload:
    """What the scenarios draw their targets from."""

    base_path: str
    pop: Population
    tokens: Tokens
    docs: list[DocRef]  # (document id, patient index) sample for reads
    big: BigPatient | None = None
    big_ids: tuple[str, ...] = ()  # the big patient's documents the doctor may read


def _get(path: str, token: str) -> Request:
    return "GET", path, None, {"Accept": FHIR_JSON, **bearer(token)}


def _doctor(w: Workload, index: int) -> str:
    return w.tokens.professional(DOCTOR, index)


def read_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        doc_id, index = rng.choice(w.docs)
        return _get(f"{w.base_path}/DocumentReference/{doc_id}", _doctor(w, index))

    return Scenario("read", "GET DocumentReference/{id}, random id, token about its patient", make)


def search_patient_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        query = urlencode({"patient": f"Patient/{patient_id(index)}"})
        return _get(f"{w.base_path}/DocumentReference?{query}", _doctor(w, index))

    return Scenario("search-patient", "GET DocumentReference?patient=Patient/{pid}", make)


def search_patient_type_date_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        code = rng.choice(DOC_TYPES)[0]
        since = random_date(rng).strftime("%Y-%m-%d")
        params = {"patient": f"Patient/{patient_id(index)}", "type": f"{LOINC}|{code}", "date": f"ge{since}"}
        return _get(f"{w.base_path}/DocumentReference?{urlencode(params)}", _doctor(w, index))

    return Scenario("search-patient-type-date", "GET DocumentReference?patient=&type=loinc|code&date=ge", make)


def _search(w: Workload, index: int, params: dict[str, str]) -> Request:
    return _get(f"{w.base_path}/DocumentReference?{urlencode(params)}", _doctor(w, index))


def _by_ins(index: int) -> str:
    system, value = patient_ins(index)
    return f"{system}|{value}"


def iti67_identifier_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        return _search(w, index, {"patient.identifier": _by_ins(index)})

    return Scenario("iti67-identifier", "ITI-67 GET DocumentReference?patient.identifier=INS|{ins}", make)


def iti67_status_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        return _search(w, index, {"patient": f"Patient/{patient_id(index)}", "status": "current"})

    return Scenario("iti67-patient-status", "ITI-67 GET DocumentReference?patient=Patient/{pid}&status=current", make)


def iti67_category_sorted_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        class_system, class_code = classes_of(LOINC, rng.choice(DOC_TYPES)[0])[0]
        params = {
            "patient.identifier": _by_ins(index),
            "category": f"{class_system}|{class_code}",
            "_sort": "-date",
            "_count": str(MHD_PAGE),
        }
        return _search(w, index, params)

    description = f"ITI-67 GET DocumentReference?patient.identifier=&category=&_sort=-date&_count={MHD_PAGE}"
    return Scenario("iti67-identifier-category-sorted", description, make)


def iti65_scenario(w: Workload, documents: int) -> Scenario:
    """A Provide Document Bundle for a random patient, from the doctor: SubmissionSet, and per
    document a DocumentReference and a Binary holding a ~10 KB CDA."""

    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        body = provide_bundle_bytes(rng, index, DOCTOR.idnatps, documents)
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, **bearer(_doctor(w, index))}
        return "POST", w.base_path, body, headers

    plural = "document" if documents == 1 else "documents"
    name = f"iti65-{documents}doc" + ("" if documents == 1 else "s")
    description = f"ITI-65 POST Provide Document Bundle, {documents} {plural} (~10 KB CDA each), random patient"
    return Scenario(name, description, make, documents_per_request=documents)


def create_scenario(w: Workload) -> Scenario:
    def make(rng: random.Random) -> Request:
        index = rng.randrange(w.pop.patients)
        body = orjson.dumps(make_document(rng, w.pop, patient=index))
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, **bearer(_doctor(w, index))}
        return "POST", f"{w.base_path}/DocumentReference", body, headers

    return Scenario("create", "POST DocumentReference (one resource), random patient", make)


def big_search_scenario(w: Workload, big: BigPatient, who: Professional, label: str) -> Scenario:
    """The same first page again and again: what varies is only who asks, hence what is filtered."""
    query = urlencode({"patient": f"Patient/{patient_id(big.index)}", "_count": str(BIG_PAGE)})

    def make(rng: random.Random) -> Request:
        return _get(f"{w.base_path}/DocumentReference?{query}", w.tokens.professional(who, big.index))

    description = f"GET DocumentReference?patient=<{big.documents} docs>&_count={BIG_PAGE} as the {label}"
    return Scenario(f"big-search-{label}", description, make)


def big_read_scenario(w: Workload, big: BigPatient) -> Scenario:
    """Reads of documents the doctor may see: a masked one would answer 404 and count as an error."""

    def make(rng: random.Random) -> Request:
        return _get(f"{w.base_path}/DocumentReference/{rng.choice(w.big_ids)}", _doctor(w, big.index))

    return Scenario("big-read", f"GET DocumentReference/{{id}} of the {big.documents}-document patient", make)


def read_search_scenarios(w: Workload) -> list[Scenario]:
    """The scenarios measured with and without the policy (``--compare-open``): none adds documents,
    so both servers see the same data set (with the policy they write AuditEvents, R17)."""
    scenarios = [read_scenario(w), search_patient_scenario(w), search_patient_type_date_scenario(w)]
    scenarios += [iti67_identifier_scenario(w), iti67_status_scenario(w), iti67_category_sorted_scenario(w)]
    if w.big is not None:
        scenarios.append(big_search_scenario(w, w.big, DOCTOR, "doctor"))
        scenarios.append(big_search_scenario(w, w.big, NURSE, "nurse"))
        if w.big_ids:
            scenarios.append(big_read_scenario(w, w.big))
    return scenarios


def write_scenarios(w: Workload) -> list[Scenario]:
    """Last, since they grow the data set: ``create``, then the ITI-65 ingest."""
    return [create_scenario(w), *(iti65_scenario(w, n) for n in ITI65_DOCUMENTS)]


def ceiling_scenario() -> Scenario:
    def make(rng: random.Random) -> Request:
        return "GET", "/ping", None, {"Accept": "application/json"}

    return Scenario("ceiling", "GET /ping on a trivial Flask app, same gunicorn settings", make)
