"""The patient downloads their record (DMP-RULES R22): ``Patient/[id]/$everything`` and the ZIP
export ``Patient/[id]/$dmp-export``, over HTTP with real tokens (tests/dmp.py).

One record holds a document of each visibility (plain, MASQUE_PS, INVISIBLE_PATIENT,
INVISIBLE_REPRESENTANTS_LEGAUX, and one with inline content), Consents, a related person, a
submission set and a trail that mentions every document. What each caller should get is computed
here from the rules (:func:`expected`), independently of the server, from the store as it stands
just before the request.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import random
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.test import TestResponse

from authz.terms import (
    ACCESS,
    IDNATPS_SYSTEM,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    MASKED_FROM_PROFESSIONALS,
    MEDECIN_TRAITANT,
    REPRESENTATIVE,
)
from fhir_server.dmp.export.zipstream import Member, stream_zip
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier
from tests.conftest import LiveServer
from tests.dmp import INS_SYSTEM, As, World

INS_A = "180017512345660"
INS_B = "285037512345787"
REP = "275017500000135"  # the legal representative's own INS
DR = "810000000001"  # a doctor the patient granted access to
DR_OUT = "810000000003"  # a doctor without access
MT = "810000000010"  # the médecin traitant

#: The documents of the record: their labels, content, media type, title and the file name the
#: export gives the content.
DOCUMENTS: dict[str, dict[str, Any]] = {
    "plain": {
        "labels": (),
        "content": b"%PDF-1.4 plain " + bytes(range(256)),
        "type": "application/pdf",
        "title": "Compte rendu n°1 / mars",
        "file": "Compte_rendu_n1_mars.pdf",
        "elements": {"context": {"period": {"start": "2023-03-01", "end": "2023-03-02"}}},
    },
    "masked": {
        "labels": (MASKED_FROM_PROFESSIONALS,),
        "content": b"masked from professionals",
        "type": "text/plain",
        "title": None,
        "file": "document.txt",
        "elements": {"date": "2024-05-06T10:00:00Z"},
    },
    "no-patient": {
        "labels": (INVISIBLE_TO_PATIENT,),
        "content": b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>",
        "type": "application/hl7-v3+xml",
        "title": "CR",
        "file": "CR.xml",
        "elements": {"date": "2024-06-01T10:00:00Z"},
    },
    "no-parents": {
        "labels": (INVISIBLE_TO_REPRESENTATIVES,),
        "content": b"\xff\xd8\xff\xe0 jpeg bytes \x00\x01",
        "type": "image/jpeg",
        "title": "Radio",
        "file": "Radio.jpg",
        "elements": {},
    },
}
#: A document whose content is inline (no Binary).
INLINE = {"content": "une note du patient, accentuée".encode(), "type": "text/plain", "title": "Note"}
#: Who cannot see which documents (R11, R12, R13).
HIDDEN = {"PAT": {"no-patient"}, "LEGREP": {"no-patient", "no-parents"}, "HCP": {"masked"}, "MT": set()}


def seed_record(world: World) -> str:
    """Patient A's record as the module docstring describes it; patient B's document beside it."""
    pid = world.seed_patient(INS_A)
    world.seed_document(world.seed_patient(INS_B), doc_id="theirs", with_binary=True)
    for did, spec in DOCUMENTS.items():
        world.seed_document(
            pid,
            doc_id=did,
            labels=spec["labels"],
            with_binary=True,
            content=spec["content"],
            content_type=spec["type"],
            title=spec["title"],
            **spec["elements"],
        )
    world.seed_document(pid, doc_id="inline", content=INLINE["content"], content_type=INLINE["type"], title="Note")
    world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    world.seed_consent(REPRESENTATIVE, INS_A, (INS_SYSTEM, REP))
    world.store.create({"resourceType": "RelatedPerson", "id": "rp", "patient": {"reference": f"Patient/{pid}"}})
    world.seed_submission_set(pid, [*DOCUMENTS, "inline"])
    mt = world.doctor(MT, INS_A)
    for did in DOCUMENTS:  # the trail then mentions every document and its content
        assert mt.get(f"DocumentReference/{did}").status_code == 200
        assert mt.get(f"Binary/bin-{did}").status_code == 200
    return pid


def readers(world: World) -> dict[str, As]:
    return {
        "PAT": world.patient(INS_A),
        "LEGREP": world.as_("LEGREP", patient=INS_A, sub=REP),
        "HCP": world.doctor(DR, INS_A),
        "MT": world.doctor(MT, INS_A),
    }


# -- the oracle ----------------------------------------------------------------------------------


def stored_about_a(world: World, rtype: str) -> list[dict[str, Any]]:
    about = ReferenceIdentifier("patient", INS_SYSTEM, INS_A)
    return [s.json() for s in world.store.search(Query(rtype, about, count=10_000), OPEN_SCOPE).matches]


def mentions(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})}


def expected(world: World, pid: str, reader: str) -> set[tuple[str, str]]:
    """What ``reader`` may see of A's record, from the rules (R10–R14, R17) and the store as it is."""
    visible = set(DOCUMENTS) - HIDDEN[reader]
    out = {("Patient", pid), ("RelatedPerson", "rp"), ("List", "submission"), ("DocumentReference", "inline")}
    out |= {("DocumentReference", d) for d in visible} | {("Binary", f"bin-{d}") for d in visible}
    for consent in stored_about_a(world, "Consent"):
        named = {a["reference"]["identifier"]["value"] for a in consent["provision"].get("actor", [])}
        if reader != "HCP" or DR in named:  # R14
            out.add(("Consent", consent["id"]))
    if reader != "HCP":  # R17: the patient, the representatives and the médecin traitant
        hidden = {f"DocumentReference/{d}" for d in HIDDEN[reader]} | {f"Binary/bin-{d}" for d in HIDDEN[reader]}
        out |= {("AuditEvent", e["id"]) for e in stored_about_a(world, "AuditEvent") if not mentions(e) & hidden}
    return out


def found(response: TestResponse) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in response.get_json().get("entry", [])]


def outcome(response: TestResponse, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code, body


# -- $everything ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["PAT", "LEGREP", "HCP", "MT"])
def test_everything_returns_exactly_what_each_reader_may_see(world: World, reader: str) -> None:
    pid = seed_record(world)
    want = expected(world, pid, reader)
    assert ("DocumentReference", "theirs") not in want and len(want) > 10
    response = readers(world)[reader].get(f"Patient/{pid}/$everything?_count=1000")
    got = found(response)
    assert len(got) == len(set(got))
    assert set(got) == want
    assert response.get_json()["total"] == len(want)
    assert response.get_json()["type"] == "searchset"
    # A submission set never names a document hidden from its reader (CONTRACT §8).
    listed = next(e["resource"] for e in response.get_json()["entry"] if e["resource"]["resourceType"] == "List")
    named = {e["item"]["reference"].split("/")[1] for e in listed.get("entry", [])}
    assert named == {d for t, d in want if t == "DocumentReference"}


def test_everything_pages_through_the_record_with_stable_totals(world: World) -> None:
    pid = seed_record(world)
    patient = world.patient(INS_A)
    before_counting = expected(world, pid, "PAT")
    assert patient.total(f"Patient/{pid}/$everything?_count=0") == len(before_counting)
    want = expected(world, pid, "PAT")  # the trail now holds that request too
    pages, seen = 0, []
    response = patient.get(f"Patient/{pid}/$everything?_count=4")
    first_next = None
    while True:
        pages += 1
        bundle = response.get_json()
        got = found(response)
        assert len(got) <= 4
        assert bundle["total"] == len(want)  # the trail grows as we page; the pages do not
        seen += got
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if "next" not in links:
            break
        first_next = first_next or links["next"]
        response = patient.get(
            links["next"].removeprefix(world.config.base_url + "/").removeprefix(world.config.base_url)
        )
    assert len(seen) == len(set(seen))
    assert set(seen) == want
    assert pages == -(-len(want) // 4)
    # A paging link is the caller's own (410 for anyone else).
    assert first_next is not None
    other = world.as_("LEGREP", patient=INS_A, sub=REP)
    link = first_next.removeprefix(world.config.base_url)
    assert other.get(link).status_code == 410


def test_everything_narrows_by_type_care_dates_and_since(world: World) -> None:
    pid = seed_record(world)
    patient = world.patient(INS_A)
    types = set(found(patient.get(f"Patient/{pid}/$everything?_type=DocumentReference,Binary&_count=1000")))
    assert types == {(t, i) for t, i in expected(world, pid, "PAT") if t in ("DocumentReference", "Binary")}
    # Care dates: documents by their period, or their date when they have none; content follows.
    # Consents and the trail are dated now, the Patient and related persons have no care date.
    in_2023 = set(found(patient.get(f"Patient/{pid}/$everything?end=2023-12-31&_count=1000")))
    assert in_2023 == {
        ("Patient", pid),
        ("RelatedPerson", "rp"),
        ("DocumentReference", "plain"),
        ("Binary", "bin-plain"),
    }
    in_2024 = set(found(patient.get(f"Patient/{pid}/$everything?start=2024-01&end=2024&_type=DocumentReference")))
    assert in_2024 == {("DocumentReference", "masked")}  # "no-patient" is dated 2024 too, but hidden (R12)
    # _since: only what changed since then.
    time.sleep(0.01)  # a later millisecond than every resource seeded
    changed = world.store.read("DocumentReference", "masked", OPEN_SCOPE).json()
    since = world.store.update({**changed, "description": "renamed"}).last_updated
    recent = set(found(patient.get(f"Patient/{pid}/$everything?_since={since}&_type=DocumentReference,Binary,Consent")))
    assert recent == {("DocumentReference", "masked")}


@pytest.mark.parametrize(
    "query",
    [
        "foo=1",
        "start=2024-13",
        "start=ge2024",
        "end=yesterday",
        "_type=Observation",
        "_type=",
        "_count=-1",
        "_since=not-a-date",
        "start=2023&start=2024",
    ],
)
def test_everything_bad_parameters_are_400(world: World, query: str) -> None:
    pid = seed_record(world)
    outcome(world.patient(INS_A).get(f"Patient/{pid}/$everything?{query}"), 400, "invalid")


def test_everything_refusals(world: World) -> None:
    pid = seed_record(world)
    outcome(world.doctor(DR_OUT, INS_A).get(f"Patient/{pid}/$everything"), 403, "forbidden")  # R3, R9
    outcome(world.as_("ASS", patient=INS_A).get(f"Patient/{pid}/$everything"), 403, "forbidden")  # R9
    outcome(world.patient(INS_B).get(f"Patient/{pid}/$everything"), 404, "not-found")  # R1
    outcome(world.patient(INS_A).get("Patient/unknown/$everything"), 404, "not-found")
    outcome(world.patient(INS_A).get(f"Patient/{pid}/$nothing"), 404, "not-supported")
    outcome(world.patient(INS_A).post(f"Patient/{pid}/$everything", {}), 405, "not-supported")
    # The types outside the token's scopes are left out (filtered in the queries, the total with
    # them); the Patient the operation is invoked on needs its own read scope.
    narrow = world.as_("PAT", patient=INS_A, scope="patient/Patient.rs patient/DocumentReference.rs")
    in_scope = {(t, i) for t, i in expected(world, pid, "PAT") if t in ("Patient", "DocumentReference")}
    assert in_scope < set(expected(world, pid, "PAT"))  # the record holds other types too
    response = narrow.get(f"Patient/{pid}/$everything")
    assert set(found(response)) == in_scope and response.get_json()["total"] == len(in_scope)
    narrowed = set(found(narrow.get(f"Patient/{pid}/$everything?_type=Patient,DocumentReference")))
    assert narrowed == in_scope
    no_patient = world.as_("PAT", patient=INS_A, scope="patient/DocumentReference.rs")
    outcome(no_patient.get(f"Patient/{pid}/$everything"), 403, "forbidden")


def test_everything_writes_one_audit_event(world: World) -> None:
    pid = seed_record(world)
    before = stored_about_a(world, "AuditEvent")
    assert world.patient(INS_A).get(f"Patient/{pid}/$everything").status_code == 200
    after = stored_about_a(world, "AuditEvent")
    assert len(after) == len(before) + 1
    event = after[-1]
    assert event["subtype"][0]["code"] == "operation" and event["outcome"] == "0"
    assert f"Patient/{pid}" in mentions(event)
    outcome(world.doctor(DR_OUT, INS_A).get(f"Patient/{pid}/$everything"), 403, "forbidden")
    refused = stored_about_a(world, "AuditEvent")
    assert len(refused) == len(after) + 1 and refused[-1]["outcome"] == "4"


# -- $dmp-export ---------------------------------------------------------------------------------


def download(client: As, path: str) -> zipfile.ZipFile:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.is_streamed and "Content-Length" not in response.headers
    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="dmp-')
    archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    assert archive.testzip() is None
    return archive


def checked_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    """The manifest, after checking it lists every other file once, with its size and SHA-256."""
    manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
    listed = [f["path"] for f in manifest["files"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(archive.namelist()) - {"manifest.json"}
    for entry in manifest["files"]:
        data = archive.read(entry["path"])
        assert entry["size"] == len(data), entry["path"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), entry["path"]
    return manifest


def exported(archive: zipfile.ZipFile) -> set[tuple[str, str]]:
    """The resources an archive holds, read from its files (not from the manifest)."""
    out: set[tuple[str, str]] = set()
    for name in archive.namelist():
        if name.endswith(".json") and name != "manifest.json":
            resource = json.loads(archive.read(name))
            out.add((resource["resourceType"], resource["id"]))
        elif name.endswith(".ndjson"):
            out |= {(r["resourceType"], r["id"]) for r in map(json.loads, archive.read(name).splitlines())}
    return out


@pytest.mark.parametrize("reader", ["PAT", "LEGREP"])
def test_export_holds_exactly_the_visible_record_with_its_bytes(world: World, reader: str) -> None:
    pid = seed_record(world)
    want = expected(world, pid, reader)
    archive = download(readers(world)[reader], f"Patient/{pid}/$dmp-export")
    manifest = checked_manifest(archive)
    assert manifest["parts"] == ["documents", "authorisations", "trail"]
    assert manifest["patient"] == {
        "reference": f"Patient/{pid}",
        "identifier": {"system": INS_SYSTEM, "value": INS_A},
    }
    assert manifest["requester"]["role"] == reader
    assert datetime.fromisoformat(manifest["generated"]).tzinfo is not None
    assert manifest["omitted"] == []
    # Exactly the visible documents, Consents and trail (no List, related person nor Binary resource:
    # a document's content is its file).
    kinds = ("Patient", "DocumentReference", "Consent", "AuditEvent")
    assert exported(archive) == {(t, i) for t, i in want if t in kinds}
    visible = set(DOCUMENTS) - HIDDEN[reader]
    for did in visible:
        spec = DOCUMENTS[did]
        path = f"documents/{did}/{spec['file']}"
        assert archive.read(path) == spec["content"]
        entry = next(f for f in manifest["files"] if f["path"] == path)
        assert entry["source"] == f"DocumentReference/{did}" and entry["content"] == f"Binary/bin-{did}"
        assert entry["contentType"] == spec["type"]
    assert archive.read("documents/inline/Note.txt") == INLINE["content"]
    assert not [n for n in archive.namelist() if any(f"documents/{d}/" in n for d in HIDDEN[reader])]
    trail = [json.loads(line) for line in archive.read("trail/AuditEvent.ndjson").splitlines()]
    assert all(agent.get("name") != "client" for event in trail for agent in event["agent"])  # the patient's view
    assert next(f for f in manifest["files"] if f["path"] == "trail/AuditEvent.ndjson")["count"] == len(trail)


def test_export_of_chosen_parts(world: World) -> None:
    pid = seed_record(world)
    patient = world.patient(INS_A)
    only_documents = download(patient, f"Patient/{pid}/$dmp-export?part=documents")
    assert checked_manifest(only_documents)["parts"] == ["documents"]
    assert {n.split("/")[0] for n in only_documents.namelist()} == {"Patient.json", "manifest.json", "documents"}
    others = download(patient, f"Patient/{pid}/$dmp-export?part=trail,authorisations")
    assert checked_manifest(others)["parts"] == ["authorisations", "trail"]
    assert {n.split("/")[0] for n in others.namelist()} == {"Patient.json", "manifest.json", "authorisations", "trail"}
    repeated = download(patient, f"Patient/{pid}/$dmp-export?part=authorisations&part=authorisations")
    assert {t for t, _ in exported(repeated)} == {"Patient", "Consent"}


def test_only_the_patient_and_representatives_export(world: World) -> None:
    pid = seed_record(world)
    for client in (
        world.doctor(DR, INS_A),
        world.doctor(MT, INS_A),
        world.doctor(DR_OUT, INS_A),
        world.as_("ASS", patient=INS_A),
        world.as_("TCU", patient=INS_A),
        world.as_("ADM", patient=INS_A),
    ):
        outcome(client.get(f"Patient/{pid}/$dmp-export"), 403, "forbidden")
    outcome(world.patient(INS_B).get(f"Patient/{pid}/$dmp-export"), 404, "not-found")  # R1
    outcome(world.as_("LEGREP", patient=INS_A, sub=INS_B).get(f"Patient/{pid}/$dmp-export"), 403, "forbidden")  # R8


@pytest.mark.parametrize("query", ["part=everything", "part=", "part=documents,", "format=zip"])
def test_export_bad_parameters_are_400(world: World, query: str) -> None:
    pid = seed_record(world)
    outcome(world.patient(INS_A).get(f"Patient/{pid}/$dmp-export?{query}"), 400, "invalid")


def test_export_is_recorded_once_and_not_in_a_batch(world: World) -> None:
    pid = seed_record(world)
    patient = world.patient(INS_A)
    before = stored_about_a(world, "AuditEvent")
    trail = {i for t, i in expected(world, pid, "PAT") if t == "AuditEvent"}
    assert len(trail) < len(before)  # entries about the INVISIBLE_PATIENT document are hidden (R12)
    archive = download(patient, f"Patient/{pid}/$dmp-export?part=trail")
    after = stored_about_a(world, "AuditEvent")
    assert len(after) == len(before) + 1 and after[-1]["subtype"][0]["code"] == "operation"
    # The archive holds the trail as it was when the export was asked for.
    assert {i for t, i in exported(archive) if t == "AuditEvent"} == trail
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}/$dmp-export"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}/$everything?_type=Patient"}},
        ],
    }
    response = patient.post("", batch)
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses == ["400 Bad Request", "200 OK"]


def test_the_zip_is_produced_while_its_members_are_read() -> None:
    """Streaming, not an archive built whole: when the last chunk of a 2.5 MB incompressible
    member is asked for, nearly all the bytes before it have already left."""
    noise = random.Random(22)
    left_before_last: list[int] = []
    sent = [0]

    def member() -> Iterator[bytes]:
        for i in range(40):
            if i == 39:
                left_before_last.append(sent[0])
            yield noise.randbytes(64 * 1024)

    chunks = stream_zip([Member("big.bin", member())], lambda w: Member("manifest.json", [b"{}"]), datetime.now(UTC))
    received = bytearray()
    for chunk in chunks:
        received += chunk
        sent[0] = len(received)
    assert left_before_last[0] > 38 * 64 * 1024
    archive = zipfile.ZipFile(io.BytesIO(bytes(received)))
    assert len(archive.read("big.bin")) == 40 * 64 * 1024 and archive.read("manifest.json") == b"{}"


# -- over real HTTP ------------------------------------------------------------------------------


def test_a_zip_streamed_by_a_real_server(live_server: LiveServer) -> None:
    ins, idnatps = "169057512345087", "810002673811"
    base = urlsplit(live_server.base_url)
    doctor = live_server.token("HCP", idnatps=idnatps, profession="10", person_id=ins)
    patient = live_server.token("PAT", person_id=ins, sub=ins, scope="patient/*.cruds")
    document = random.Random(7).randbytes(300_000)

    def call(method: str, path: str, token: str, body: Any = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(base.hostname or "", base.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/fhir+json"
        connection.request(method, f"{base.path}/{path}", json.dumps(body) if body is not None else None, headers)
        return connection.getresponse()

    created = call(
        "POST",
        "Patient",
        doctor,
        {"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": ins}], "birthDate": "1969-05-01"},
    )
    assert created.status == 201
    pid = json.loads(created.read())["id"]
    publish = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": idnatps}}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "title": "scan",
                    "data": base64.b64encode(document).decode(),
                }
            }
        ],
    }
    stored = call("POST", "DocumentReference", doctor, publish)
    assert stored.status == 201, stored.read()
    did = json.loads(stored.read())["id"]

    response = call("GET", f"Patient/{pid}/$dmp-export?part=documents", patient)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/zip"
    assert response.getheader("Content-Length") is None
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert (response.getheader("Content-Disposition") or "").startswith("attachment;")
    received = bytearray()
    while chunk := response.read(16 * 1024):
        received += chunk
    archive = zipfile.ZipFile(io.BytesIO(bytes(received)))
    manifest = checked_manifest(archive)
    content = [f for f in manifest["files"] if f["source"] == f"DocumentReference/{did}" and "content" in f]
    assert [f["path"] for f in content] == [f"documents/{did}/scan.pdf"]
    assert archive.read(f"documents/{did}/scan.pdf") == document
