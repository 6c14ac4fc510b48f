"""The patient downloads their record (DMP-RULES R22): ``Patient/[id]/$everything`` and the ZIP
export ``Patient/[id]/$dmp-export``, over HTTP with real tokens (tests/dmp.py).

One record holds a document of each visibility (plain, MASQUE_PS, INVISIBLE_PATIENT,
INVISIBLE_REPRESENTANTS_LEGAUX, and one with inline content), Consents, a related person, a
submission set and a trail that mentions every document. What each caller should get is computed
here from the rules (:func:`expected`), independently of the server, from the store as it stands
just before the request.
"""

from __future__ import annotations

import time
from typing import Any

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
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier
from tests.dmp import INS_SYSTEM, As, World

INS_A = "1800175123456"
INS_B = "2850375123457"
REP = "2750175000001"  # the legal representative's own INS
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
    # The scopes are a coarse gate on every type the operation reads.
    narrow = world.as_("PAT", patient=INS_A, scope="patient/Patient.rs patient/DocumentReference.rs")
    outcome(narrow.get(f"Patient/{pid}/$everything"), 403, "forbidden")
    narrowed = set(found(narrow.get(f"Patient/{pid}/$everything?_type=Patient,DocumentReference")))
    assert narrowed == {(t, i) for t, i in expected(world, pid, "PAT") if t in ("Patient", "DocumentReference")}


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
