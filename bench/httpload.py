"""Load over HTTP as DMP clients do, with their tokens, and the client-side look-ups the bench needs.

Every request goes through the whole path: token verification, the access decision, validation,
the transaction, indexing and the AuditEvent each request about a record writes (R17). What the
rules impose shapes the load:

* the directory (Practitioners) is written with an ``ADM`` token, the only role allowed to;
* each DMP is created by ``PUT Patient/{id}`` with the bench doctor's token about that patient,
  which makes the server grant that doctor access (R16) — nothing is seeded behind its back;
* a token reaches one patient only (R1), so a transaction Bundle carries one patient's documents.
  Documents are generated in the same random order as the direct load, taken
  :data:`HTTP_WINDOW` at a time and posted as one Bundle per patient of that window (at 10 000
  documents: one Bundle of ~20 documents per patient).
"""

from __future__ import annotations

import base64
import http.client
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from bench.auth import DOCTOR, NURSE, Professional, Tokens, access_grant, bearer
from bench.datagen import (
    BigPatient,
    Population,
    documents,
    is_masked,
    make_patient,
    masque_ps_label,
    patient_id,
    patient_index_of,
    patient_ins,
    practitioners,
    unmasked,
)
from bench.loader import IdSample, LoadPlan, LoadStats, Progress, big_patient_rng, chunks
from bench.mhd import provide_bundle

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
#: Documents generated before being grouped by patient: bounds memory, and spreads a patient's
#: documents over the file as they would arrive over the years in a real DMP.
HTTP_WINDOW = 10_000
#: The most the server returns in one page (``DMP_MAX_COUNT`` default).
MAX_COUNT = 1000

#: A unit of load: the patient the resources are about (None: the directory) and the resources.
Job = tuple[int | None, list[dict[str, Any]]]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    base_path: str  # "/fhir"


@dataclass(frozen=True)
class Call:
    """One request of the loader, with the token of the actor who sends it."""

    method: str
    path: str
    token: str
    body: bytes | None = None
    content_type: str = FHIR_JSON


class RequestFailed(RuntimeError):
    """A non-2xx answer while loading: the data set would be incomplete, so the run stops."""


class FhirClient:
    """One keep-alive connection to the FHIR server."""

    def __init__(self, target: Target):
        self.target = target
        self.conn = http.client.HTTPConnection(target.host, target.port, timeout=600)

    def send(self, call: Call) -> bytes:
        headers = {"Accept": FHIR_JSON, "Prefer": "return=minimal", **bearer(call.token)}
        if call.body is not None:
            headers["Content-Type"] = call.content_type
        self.conn.request(call.method, call.path, body=call.body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise RequestFailed(f"{call.method} {call.path} failed: HTTP {resp.status}: {data[:2000]!r}")
        return data

    def search(self, query: dict[str, str], token: str) -> dict[str, Any]:
        path = f"{self.target.base_path}/DocumentReference?{urlencode(query)}"
        bundle: dict[str, Any] = orjson.loads(self.send(Call("GET", path, token)))
        return bundle

    def close(self) -> None:
        self.conn.close()


def transaction_bundle(resources: list[dict[str, Any]]) -> bytes:
    """Resources with an id are PUT (practitioners); the others are POSTed (documents)."""
    entries = []
    for resource in resources:
        rtype = resource["resourceType"]
        if "id" in resource:
            request = {"method": "PUT", "url": f"{rtype}/{resource['id']}"}
            entries.append({"fullUrl": f"{rtype}/{resource['id']}", "resource": resource, "request": request})
        else:
            full_url = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def created_ids(response_body: bytes, resource_type: str = "DocumentReference") -> list[str]:
    """Ids the server assigned, in entry order, from ``entry.response.location`` (``Type/id/_history/1``)."""
    bundle = orjson.loads(response_body)
    ids = []
    for entry in bundle.get("entry", []):
        parts = entry.get("response", {}).get("location", "").split("/")
        if len(parts) >= 4 and parts[-2] == "_history" and parts[-4] == resource_type:
            ids.append(parts[-3])
    return ids


# -- the load ----------------------------------------------------------------------------------


def load_http(target: Target, plan: LoadPlan, sample: IdSample, clients: int, tokens: Tokens) -> LoadStats:
    """Directory, DMPs, documents, then the big patient, each phase from ``clients`` threads."""
    stats = LoadStats("http")
    pop = plan.population
    started = time.perf_counter()
    directory = ((None, batch) for batch in chunks(practitioners(pop), plan.batch))
    stats.practitioners = _post_all(target, directory, clients, lambda job: _directory_call(target, tokens, job))
    stats.practitioner_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _post_all(target, _patient_jobs(pop), clients, lambda job: _create_dmp_call(target, tokens, job))
    stats.patients = pop.patients
    stats.patient_seconds = time.perf_counter() - started
    _http_documents(target, plan, sample, clients, tokens, stats)
    if plan.big is not None:
        _http_big_patient(target, plan.big, plan, tokens, stats)
    return stats


def _directory_call(target: Target, tokens: Tokens, job: Job) -> Call:
    return Call("POST", target.base_path, tokens.admin(), transaction_bundle(job[1]))


def _patient_jobs(pop: Population) -> Iterator[Job]:
    for index in range(pop.patients):
        yield index, [make_patient(index)]


def _create_dmp_call(target: Target, tokens: Tokens, job: Job) -> Call:
    """``PUT Patient/{id}`` by the doctor, about that patient: the server grants the doctor access."""
    index, (patient,) = job
    return _as_doctor_about(target, tokens, index, "PUT", f"Patient/{patient['id']}", orjson.dumps(patient))


def _as_doctor_about(target: Target, tokens: Tokens, index: int | None, method: str, path: str, body: bytes) -> Call:
    if index is None:
        raise ValueError("a call about a patient needs the patient's index")
    return Call(method, f"{target.base_path}/{path}".rstrip("/"), tokens.professional(DOCTOR, index), body)


def patient_groups(docs: Iterator[dict[str, Any]], window: int, batch: int) -> Iterator[Job]:
    """Per window of ``window`` documents, each patient's share, cut to at most ``batch`` per Bundle."""
    for chunk in chunks(docs, window):
        groups: dict[int, list[dict[str, Any]]] = {}
        for doc in chunk:
            groups.setdefault(patient_index_of(doc), []).append(doc)
        for index, group in groups.items():
            for part in chunks(group, batch):
                yield index, part


def _http_documents(
    target: Target, plan: LoadPlan, sample: IdSample, clients: int, tokens: Tokens, stats: LoadStats
) -> None:
    """The measured ingest: per-patient transaction Bundles with the doctor's token about that patient."""
    generated = documents(random.Random(plan.seed), plan.population, plan.documents, with_ids=False)
    jobs = patient_groups(generated, HTTP_WINDOW, plan.batch)
    progress = Progress("documents (http)", plan.documents)
    started = time.perf_counter()

    def on_done(job: Job, body: bytes) -> None:
        ids = created_ids(body)
        index = job[0]
        if index is not None:
            for rid in ids:
                sample.add((rid, index))
        stats.documents += len(ids)
        stats.document_seconds = time.perf_counter() - started
        progress.update(stats.documents)

    def keep_going() -> bool:
        within = plan.max_seconds is None or time.perf_counter() - started <= plan.max_seconds
        stats.stopped_early = stats.stopped_early or not within
        return within

    def call(job: Job) -> Call:
        return _as_doctor_about(target, tokens, job[0], "POST", "", transaction_bundle(job[1]))

    _post_all(target, jobs, clients, call, on_done, keep_going)
    stats.document_seconds = time.perf_counter() - started
    progress.update(stats.documents, force=True)


def _http_big_patient(target: Target, big: BigPatient, plan: LoadPlan, tokens: Tokens, stats: LoadStats) -> None:
    """The big patient the way it happens in a DMP: the doctor creates it and adds the documents,
    then the patient masks some (only the patient sets ``MASQUE_PS``, R18) and authorises a nurse."""
    started = time.perf_counter()
    client = FhirClient(target)
    try:
        patient = make_patient(big.index)
        client.send(_create_dmp_call(target, tokens, (big.index, [patient])))
        docs = list(big.documents_of(big_patient_rng(plan.seed), plan.population, with_ids=False))
        ids: list[str] = []
        for part in chunks(docs, plan.batch):
            bundle = transaction_bundle([unmasked(doc) for doc in part])
            ids += created_ids(client.send(_as_doctor_about(target, tokens, big.index, "POST", "", bundle)))
        masked = [rid for rid, doc in zip(ids, docs, strict=True) if is_masked(doc)]
        _mask(client, target, tokens.patient(big.index), masked)
        grant = access_grant(patient_ins(big.index), NURSE, datetime.now(UTC))
        client.send(Call("POST", f"{target.base_path}/Consent", tokens.patient(big.index), orjson.dumps(grant)))
    finally:
        client.close()
    stats.big_documents = len(ids)
    stats.big_seconds = time.perf_counter() - started


def _mask(client: FhirClient, target: Target, patient_token: str, ids: list[str]) -> None:
    """The patient adds ``MASQUE_PS`` with a JSON Patch (CONTRACT §5), one document at a time."""
    patch = orjson.dumps([{"op": "add", "path": "/securityLabel/-", "value": masque_ps_label()}])
    for rid in ids:
        client.send(Call("PATCH", f"{target.base_path}/DocumentReference/{rid}", patient_token, patch, JSON_PATCH))


def _post_all(
    target: Target,
    jobs: Iterator[Job],
    clients: int,
    to_call: Callable[[Job], Call],
    on_done: Callable[[Job, bytes], None] | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Drain ``jobs`` with ``clients`` threads; returns how many resources were sent.

    Jobs are generated under the lock (the generators are not thread-safe); the request body and
    the token are made by the client thread, outside it.
    """
    lock = threading.Lock()
    sent = [0]
    failures: list[BaseException] = []

    def next_job() -> Job | None:
        with lock:
            if failures or not keep_going():
                return None
            return next(jobs, None)

    def client() -> None:
        poster = FhirClient(target)
        try:
            while (job := next_job()) is not None:
                data = poster.send(to_call(job))
                with lock:
                    sent[0] += len(job[1])
                    if on_done is not None:
                        on_done(job, data)
        except BaseException as exc:
            failures.append(exc)
        finally:
            poster.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sent[0]


# -- look-ups ----------------------------------------------------------------------------------


def sample_ids(
    target: Target, pop: Population, searches: int, rng: random.Random, sample: IdSample, tokens: Tokens
) -> None:
    """Document ids of a reused directory, found the way a client would: searching random patients."""
    client = FhirClient(target)
    try:
        for _ in range(searches):
            index = rng.randrange(pop.patients)
            bundle = client.search({"patient": f"Patient/{patient_id(index)}"}, tokens.professional(DOCTOR, index))
            for entry in bundle.get("entry", []):
                sample.add((entry["resource"]["id"], index))
    finally:
        client.close()


@dataclass(frozen=True)
class BigProbe:
    """What the professionals see of the big patient, read once before measuring."""

    doctor_total: int | None
    nurse_total: int | None
    visible_ids: list[str]  # documents the doctor may read (up to MAX_COUNT): the big-read targets


def probe_big_patient(target: Target, big: BigPatient, tokens: Tokens) -> BigProbe:
    """One search per professional: the totals to check against the labels and the matrix."""
    client = FhirClient(target)
    try:
        doctor = _search_big(client, big, tokens, DOCTOR, MAX_COUNT)
        nurse = _search_big(client, big, tokens, NURSE, 1)
    finally:
        client.close()
    ids = [entry["resource"]["id"] for entry in doctor.get("entry", []) if entry["search"]["mode"] == "match"]
    return BigProbe(doctor.get("total"), nurse.get("total"), ids)


def _search_big(client: FhirClient, big: BigPatient, tokens: Tokens, who: Professional, count: int) -> dict[str, Any]:
    query = {"patient": f"Patient/{patient_id(big.index)}", "_count": str(count)}
    return client.search(query, tokens.professional(who, big.index))


@dataclass(frozen=True)
class MhdProbe:
    """One patient's documents found both ways ITI-67 names the patient, then one ITI-65 of a
    CDA and what the server gives back of it: the MHD scenarios measure requests that work."""

    patient: int
    by_reference: int | None  # total of ?patient=Patient/{id}
    by_identifier: int | None  # total of ?patient.identifier=INS|{ins}
    provided: str  # "HTTP 200", or the refusal
    after: int | None  # total by identifier after the ITI-65: one more
    cda_bytes: int
    content_back: bool  # the Binary read back holds the CDA sent

    @property
    def ok(self) -> bool:
        return (
            self.by_reference == self.by_identifier
            and self.provided == "HTTP 200"
            and self.after == (self.by_identifier or 0) + 1
            and self.content_back
        )


def probe_mhd(target: Target, pop: Population, tokens: Tokens, rng: random.Random) -> MhdProbe:
    """As the doctor, about a random patient; adds one document to the data set."""
    index = rng.randrange(pop.patients)
    token = tokens.professional(DOCTOR, index)
    system, value = patient_ins(index)
    by_identifier = {"patient.identifier": f"{system}|{value}"}
    client = FhirClient(target)
    try:
        by_reference = client.search({"patient": f"Patient/{patient_id(index)}"}, token).get("total")
        before = client.search(by_identifier, token).get("total")
        bundle = provide_bundle(rng, index, DOCTOR.idnatps, 1)
        sent = next(e["resource"]["data"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary")
        try:
            response = client.send(Call("POST", target.base_path, token, orjson.dumps(bundle)))
        except RequestFailed as exc:
            return MhdProbe(index, by_reference, before, str(exc)[:600], None, len(base64.b64decode(sent)), False)
        after = client.search(by_identifier, token).get("total")
        binaries = created_ids(response, "Binary")
        back = orjson.loads(client.send(Call("GET", f"{target.base_path}/Binary/{binaries[0]}", token)))
    finally:
        client.close()
    size = len(base64.b64decode(sent))
    return MhdProbe(index, by_reference, before, "HTTP 200", after, size, back.get("data") == sent)
