"""The DMP access rules (DMP-RULES.md R1–R20), one or more tests per rule, over real HTTP.

Every request goes through the Flask test client of a real server with the DMP gatekeeper and a
real ES256 token signed by the server's key (tests/dmp.py). Records are seeded through the store
(as a migration would); every rule is then exercised by the HTTP requests that follow. Assertions
are exact: statuses, OperationOutcome codes, the set of ids returned and the ``total``.

Tokens are minted at the real time (the verifier's clock); the gatekeeper's clock
(``world.clock``) is moved *after* minting when a test needs time to pass (grant expiry,
majority), so the same token stays valid while the rules see a later instant.
"""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest
from werkzeug.test import TestResponse

from authz.audit import EMERGENCY_EXTENSION
from authz.authserver.creation_codes import mark_consumed
from authz.devtoken import iua_claims, make_dev_token
from authz.terms import (
    ACCESS,
    BLOCK,
    BREAK_THE_GLASS,
    CONSENT_TYPE_SYSTEM,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    MASKED_FROM_PROFESSIONALS,
    MEDECIN_TRAITANT,
    PURPOSE_SYSTEM,
    REGULATION_CENTRE,
    REPRESENTATIVE,
    ROLE_SYSTEM,
    VISIBILITY_SYSTEM,
)
from authz.tokens import own_issuer
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier, Token
from tests.dmp import CR_CONSULTATION, FINESS, INS_SYSTEM, LOINC, SYNTHESE, As, World, closed, reopened

TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
REIMBURSEMENT = (TRE_A05, "REMB")  # class 60: denied to Infirmier (60)
PATIENT_DOC = (TRE_A05, "EXPPAT_1")  # class 90: documents the patient adds
RESIDENCE = (TRE_A05, "ATTEST-RESID")  # class 95, denied to Médecin (10) by a type-level exception
CONSULTATION = (LOINC, CR_CONSULTATION)  # class 10: denied to Pharmacien (21)
SUMMARY = (LOINC, SYNTHESE)  # class 11
ARCHIVED = "https://dmp.example.org/fhir/StructureDefinition/dmp-archived"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}

# Patients (INS-NIR values) and people.
INS_A = "180017512345660"
INS_B = "285037512345787"
INS_MINOR = "115037512345874"
INS_NEW = "177017512345910"
REP_1 = "275017500000135"  # legal representatives (their own INS)
REP_2 = "175017500000284"
REP_3 = "275017500000333"

# Professionals (idNatPs).
DR = "810000000001"  # doctor, granted
DR_2 = "810000000002"  # doctor, granted, not médecin traitant
DR_OUT = "810000000003"  # doctor, no grant
MT = "810000000010"  # médecin traitant
PHARMACIST = "810000000021"
NURSE = "810000000060"
PHYSIO = "810000000031"  # TRE_G15 31: a profession the matrix does not list
HOSPITAL = "330780038"  # FINESS of an establishment
HOSPITAL_ORG = f"{FINESS}|{HOSPITAL}"


# -- fixtures and helpers ----------------------------------------------------------------------


def issue_code(response: TestResponse) -> str:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    code: str = body["issue"][0]["code"]
    return code


def assert_status(response: TestResponse, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    if code is not None:
        assert issue_code(response) == code


def forbidden(response: TestResponse) -> None:
    assert_status(response, 403, "forbidden")


def not_found(response: TestResponse) -> None:
    assert_status(response, 404, "not-found")


def business_rule(response: TestResponse) -> None:
    assert_status(response, 422, "business-rule")


def entries(response: TestResponse, mode: str) -> dict[str, set[str]]:
    """The ids of a searchset's entries of one search mode, per resource type."""
    assert response.status_code == 200, response.get_data(as_text=True)
    out: dict[str, set[str]] = {}
    for e in response.get_json().get("entry", []):
        if e["search"]["mode"] == mode:
            out.setdefault(e["resource"]["resourceType"], set()).add(e["resource"]["id"])
    return out


def grant(world: World, ins: str, idnatps: str, **kwargs: Any) -> str:
    return world.seed_consent(ACCESS, ins, (IDNATPS_SYSTEM, idnatps), **kwargs)


def docs_of(client: As, pid: str, extra: str = "") -> set[str]:
    """The patient's documents the caller sees, checking that ``total`` counts exactly them."""
    response = client.get(f"DocumentReference?patient={pid}&_count=100{extra}")
    found = entries(response, "match").get("DocumentReference", set())
    assert response.get_json()["total"] == len(found)
    return found


def document(
    pid: str,
    kind: tuple[str, str] = CONSULTATION,
    *,
    author: str | None = None,
    patient_author: str | None = None,
    labels: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A DocumentReference as a client submits it; ``patient_author`` is a Patient id."""
    authors = []
    if author:
        authors.append({"identifier": {"system": IDNATPS_SYSTEM, "value": author}})
    if patient_author:
        authors.append({"reference": f"Patient/{patient_author}"})
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": kind[0], "code": kind[1]}]},
        "subject": {"reference": f"Patient/{pid}"},
        "securityLabel": [{"coding": [{"system": VISIBILITY_SYSTEM, "code": label}]} for label in labels],
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"hello").decode()}}],
        **extra,
    }
    if authors:
        doc["author"] = authors
    if not labels:
        del doc["securityLabel"]
    return doc


def consent(
    category: str,
    ins: str,
    actor: tuple[str, str] | None = None,
    *,
    permit: bool = True,
    purpose: str | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """A Consent in the shape CONTRACT §4 and §8 fix, written here independently of the server."""
    provision: dict[str, Any] = {"type": "permit" if permit else "deny"}
    if actor:
        provision["actor"] = [
            {
                "role": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]
                },
                "reference": {"identifier": {"system": actor[0], "value": actor[1]}},
            }
        ]
    if purpose:
        provision["purpose"] = [{"system": PURPOSE_SYSTEM, "code": purpose}]
    if end:
        provision["period"] = {"end": end.isoformat(timespec="seconds").replace("+00:00", "Z")}
    return {
        "resourceType": "Consent",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": CONSENT_TYPE_SYSTEM, "code": category}]}],
        "patient": {"identifier": {"system": INS_SYSTEM, "value": ins}},
        "dateTime": "2024-01-01T00:00:00Z",
        "performer": [{"identifier": {"system": INS_SYSTEM, "value": ins}}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision,
    }


def by_identifier(resource: dict[str, Any]) -> str:
    return f"identifier={resource['identifier'][0]['value']}"


def stored(world: World, rtype: str, rid: str) -> dict[str, Any]:
    return world.store.read(rtype, rid, OPEN_SCOPE).json()


def consents_in_store(world: World, ins: str) -> list[dict[str, Any]]:
    about = ReferenceIdentifier("patient", INS_SYSTEM, ins)
    return [s.json() for s in world.store.search(Query("Consent", about, count=1000), OPEN_SCOPE).matches]


def audit_events(world: World, ins: str) -> list[dict[str, Any]]:
    """Every AuditEvent about the patient, read by the server itself (newest last)."""
    about = ReferenceIdentifier("patient", INS_SYSTEM, ins)
    result = world.store.search(Query("AuditEvent", about, count=10_000), OPEN_SCOPE)
    assert result.total == len(result.matches)
    return [s.json() for s in result.matches]


def trail(client: As, ins: str) -> list[dict[str, Any]]:
    response = client.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{ins}&_count=1000")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [e["resource"] for e in response.get_json().get("entry", []) if e["search"]["mode"] == "match"]


def entity_refs(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})}


def alerts(world: World) -> list[dict[str, Any]]:
    return [orjson.loads(message.payload) for message in world.store.pending("patient-alert")]


def representative(world: World, ins: str, rep: str, until: datetime | None = None) -> str:
    return world.seed_consent(REPRESENTATIVE, ins, (INS_SYSTEM, rep), until=until)


def legrep(world: World, ins: str, rep: str) -> As:
    return world.as_("LEGREP", patient=ins, sub=rep)


def minor_birth_date(world: World, days_to_majority: int = 10) -> str:
    """A birth date whose 18th birthday is ``days_to_majority`` days after the world's today."""
    majority = world.clock.now.date() + timedelta(days=days_to_majority)
    return date(majority.year - 18, majority.month, majority.day).isoformat()


def new_patient(ins: str, birth_date: str = "1977-01-01") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_SYSTEM, "value": ins}],
        "name": [{"family": "Nouveau", "given": ["Patient"]}],
        "birthDate": birth_date,
    }


# -- tokens (CONTRACT §2) ------------------------------------------------------------------------


def test_tokens_no_token_is_401_with_a_bare_bearer_challenge(world: World) -> None:
    pid = world.seed_patient(INS_A)
    response = world.client.get(f"/fhir/Patient/{pid}")
    assert_status(response, 401, "login")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and "error=" not in challenge
    assert audit_events(world, INS_A) == []


def test_tokens_bad_expired_or_wrong_audience_are_401_invalid_token(world: World) -> None:
    pid = world.seed_patient(INS_A)
    good = world.token("PAT", patient=INS_A)
    world.clock.now -= timedelta(hours=2)  # minted two hours ago: expired by now
    expired = world.token("PAT", patient=INS_A)
    world.clock.now += timedelta(hours=2)
    wrong_aud = make_dev_token(
        world.key,
        issuer=own_issuer(world.config.base_url),
        audience="https://elsewhere.example/fhir",
        role="PAT",
        sub=INS_A,
        person_id=INS_A,
    )
    head, payload, signature = good.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    for token in (expired, wrong_aud, tampered, "not-a-jwt", f"{head}.{payload}."):
        response = world.client.get(f"/fhir/Patient/{pid}", headers={"Authorization": f"Bearer {token}"})
        assert_status(response, 401, "login")
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert As(world.client, good).get(f"Patient/{pid}").status_code == 200


def test_tokens_unknown_role_is_403(world: World) -> None:
    """A verified token whose role the DMP does not know describes no actor: refused outright."""
    pid = world.seed_patient(INS_A)
    iua = iua_claims(role="PAT", person_id=INS_A)
    iua["subject_role"] = [{"system": ROLE_SYSTEM, "code": "SUPERUSER"}]
    now = int(world.clock.now.timestamp())
    claims = {
        "iss": own_issuer(world.config.base_url),
        "sub": INS_A,
        "aud": world.config.base_url,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "user/*.cruds",
        "extensions": {"ihe_iua": iua},
    }
    forbidden(As(world.client, world.key.sign(claims)).get(f"Patient/{pid}"))


def test_tokens_scopes_are_a_coarse_gate(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    reader = world.doctor(DR, INS_A, scope="patient/DocumentReference.rs")
    assert docs_of(reader, pid) == {doc}
    forbidden(reader.post("DocumentReference", document(pid, author=DR)))
    forbidden(reader.get(f"Consent?patient={pid}"))
    assert docs_of(world.patient(INS_A), pid) == {doc}  # nothing was created


# -- R1 binding ----------------------------------------------------------------------------------


def _two_patients(world: World) -> tuple[str, str, str, str]:
    """Patients A and B, one document each; DR is granted on both, so only R1 separates them."""
    pa, pb = world.seed_patient(INS_A), world.seed_patient(INS_B)
    da, db = world.seed_document(pa, doc_id="doc-a"), world.seed_document(pb, doc_id="doc-b", with_binary=True)
    grant(world, INS_A, DR)
    grant(world, INS_B, DR)
    return pa, pb, da, db


@pytest.mark.parametrize("who", ["PAT", "HCP"])
def test_r1_a_token_about_patient_a_never_reads_patient_b(world: World, who: str) -> None:
    pa, pb, da, db = _two_patients(world)
    client = world.patient(INS_A) if who == "PAT" else world.doctor(DR, INS_A)
    not_found(client.get(f"Patient/{pb}"))
    not_found(client.get(f"DocumentReference/{db}"))
    not_found(client.get(f"DocumentReference/{db}/_history/1"))
    not_found(client.get(f"Binary/bin-{db}"))
    assert docs_of(client, pa) == {da}
    # A search must name the patient (CONTRACT §7); naming another one than the token's is
    # refused, as CONTRACT §2 says (tests/test_binding.py has the rest).
    assert client.get("DocumentReference?_count=100").status_code == 400
    forbidden(client.get(f"Patient?identifier={INS_SYSTEM}|{INS_B}"))
    forbidden(client.get(f"DocumentReference?patient={pb}"))
    assert client.ids(f"DocumentReference?patient={pa}") == {da}
    forbidden(client.get(f"DocumentReference?patient.identifier={INS_SYSTEM}|{INS_B}"))
    forbidden(client.get(f"DocumentReference?subject:Patient.identifier={INS_SYSTEM}|{INS_B}"))
    forbidden(client.get(f"Consent?patient.identifier={INS_SYSTEM}|{INS_B}"))
    # Includes, reverse includes and _has never cross to B.
    found = entries(client.get("Patient?_revinclude=DocumentReference:subject&_count=100"), "include")
    assert found == {"DocumentReference": {da}}
    assert entries(client.get("Patient?_count=100"), "match") == {"Patient": {pa}}
    found = entries(client.get(f"DocumentReference?patient={pa}&_include=DocumentReference:subject"), "include")
    assert found == {"Patient": {pa}}
    assert client.ids(f"Patient?_has:DocumentReference:subject:_id={db}") == set()
    assert client.ids(f"Patient?_has:DocumentReference:subject:_id={da}") == {pa}
    history = client.get("_history?_count=100").get_json()
    assert not any(pb in e["fullUrl"] or db in e["fullUrl"] for e in history.get("entry", []))


@pytest.mark.parametrize("who", ["PAT", "HCP"])
def test_r1_a_token_about_patient_a_never_writes_patient_b(world: World, who: str) -> None:
    pa, pb, _, db = _two_patients(world)
    client = world.patient(INS_A) if who == "PAT" else world.doctor(DR, INS_A)
    theirs = stored(world, "DocumentReference", db)
    not_found(client.put(f"DocumentReference/{db}", {**theirs, "description": "changed"}))
    not_found(client.delete(f"DocumentReference/{db}"))
    not_found(client.request("PATCH", f"DocumentReference/{db}", [], headers=JSON_PATCH))
    patient_b = stored(world, "Patient", pb)
    not_found(client.put(f"Patient/{pb}", {**patient_b, "active": False}))
    # A body naming B under a token about A.
    kind = PATIENT_DOC if who == "PAT" else CONSULTATION
    author = {"patient_author": pb} if who == "PAT" else {"author": DR}
    forbidden(client.post("DocumentReference", document(pb, kind, **author)))
    by_ins = document(pa, kind, **author)
    by_ins["subject"] = {"identifier": {"system": INS_SYSTEM, "value": INS_B}}
    forbidden(client.post("DocumentReference", by_ins))
    forbidden(client.post("Consent", consent(ACCESS, INS_B, (IDNATPS_SYSTEM, DR_OUT))))
    assert stored(world, "DocumentReference", db)["meta"]["versionId"] == "1"
    assert stored(world, "Patient", pb).get("active") is True


def test_r1_a_new_patient_must_carry_only_the_tokens_ins(world: World) -> None:
    world.seed_patient(INS_B)
    creator = world.doctor(DR, INS_NEW)
    forbidden(creator.post("Patient", new_patient(INS_B)))  # a body about another patient
    # Claiming B's INS as a second identifier would merge B's record into the new one (R1).
    both = new_patient(INS_NEW)
    both["identifier"].append({"system": INS_SYSTEM, "value": INS_B})
    forbidden(creator.post("Patient", both))
    assert world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, INS_NEW)), OPEN_SCOPE).total == 0


def test_r1_without_person_id_record_types_are_refused(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_practitioner(DR, "10")
    anyone = world.doctor(DR, None)
    for query in (f"DocumentReference?patient={pid}", f"Patient/{pid}", "Patient", "Consent", "AuditEvent", "List"):
        forbidden(anyone.get(query))
    forbidden(anyone.post("DocumentReference", document(pid, author=DR)))
    forbidden(world.as_("PAT", sub=INS_A).get(f"Patient/{pid}"))
    assert anyone.ids(f"Practitioner?identifier={IDNATPS_SYSTEM}|{DR}") == {f"prat-{DR}"}  # the directory


def test_r1_a_patient_token_is_the_patients_own(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_patient(INS_B)
    forbidden(world.as_("PAT", patient=INS_A, sub=INS_B).get(f"Patient/{pid}"))


def test_r1_content_of_another_patient_is_not_reached_through_a_document(world: World) -> None:
    """A document of A pointing at B's Binary does not open B's content to A's readers."""
    pa, _, da, db = _two_patients(world)
    hcp = world.doctor(DR, INS_A)
    url = f"{world.config.base_url}/Binary/bin-{db}"
    pointer = document(pa, author=DR)
    pointer["content"] = [{"attachment": {"contentType": "text/plain", "url": url}}]
    forbidden(hcp.post("DocumentReference", pointer))
    mine = stored(world, "DocumentReference", da)
    forbidden(hcp.put(f"DocumentReference/{da}", {**mine, "content": pointer["content"]}))
    assert world.doctor(DR, INS_B).get(f"Binary/bin-{db}").status_code == 200
    # Even if such a document got in (a migration, say), the content stays out of A's reach; since
    # the server cannot tell whose it is any more, nobody reads it (the protective reading).
    world.store.create({**pointer, "id": "pointer"})
    not_found(hcp.get(f"Binary/bin-{db}"))
    not_found(world.patient(INS_A).get(f"Binary/bin-{db}"))
    query = f"DocumentReference?patient={pa}&_id=pointer&_include=DocumentReference:attachment"
    assert entries(hcp.get(query), "include") == {}
    not_found(world.doctor(DR, INS_B).get(f"Binary/bin-{db}"))


# -- R2 open DMP ---------------------------------------------------------------------------------


def test_r2_a_closed_dmp_gives_professionals_tcu_and_ass_nothing(world: World) -> None:
    pid = world.seed_patient(INS_A, active=False)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, DR))
    for client in (
        world.doctor(DR, INS_A),
        world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS),
        world.as_("TCU", patient=INS_A, organization=f"{FINESS}|CNAM"),
        world.as_("ASS", patient=INS_A),
    ):
        forbidden(client.get(f"Patient/{pid}"))
        forbidden(client.get(f"Patient?identifier={INS_SYSTEM}|{INS_A}"))
        forbidden(client.get(f"DocumentReference/{doc}"))
        forbidden(client.get(f"DocumentReference?patient={pid}"))
        forbidden(client.post("DocumentReference", document(pid, author=DR)))


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r2_patient_and_representative_read_only_the_patient_and_may_reopen(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A, active=False)
    doc = world.seed_document(pid, PATIENT_DOC[1], type_system=PATIENT_DOC[0], patient_author=True)
    grant(world, INS_A, DR)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    patient = client.get(f"Patient/{pid}")
    assert patient.status_code == 200 and patient.get_json()["active"] is False
    assert client.ids(f"Patient?identifier={INS_SYSTEM}|{INS_A}") == {pid}
    forbidden(client.get(f"DocumentReference?patient={pid}"))
    forbidden(client.get(f"DocumentReference/{doc}"))
    forbidden(client.get(f"Consent?patient={pid}"))
    forbidden(client.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"))
    forbidden(client.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=pid)))
    forbidden(client.post("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2))))
    not_found(client.delete(f"DocumentReference/{doc}"))  # nothing of a closed record is in reach
    reopening = client.put(f"Patient/{pid}", {**patient.get_json(), "active": True})
    assert reopening.status_code == 200, reopening.get_data(as_text=True)
    assert docs_of(client, pid) == {doc}
    assert docs_of(world.doctor(DR, INS_A), pid) == {doc}


def test_r2_a_closed_dmp_is_not_reached_sideways(world: World) -> None:
    pid = world.seed_patient(INS_A, active=False)
    world.seed_document(pid)
    for role in ("TCU", "ASS"):
        client = world.as_(role, patient=INS_A)
        history = client.get("_history?_count=100").get_json()
        assert history["total"] == 0 and "entry" not in history
        forbidden(client.get(f"Patient/{pid}/_history"))


def test_r2_administration_reads_a_closed_dmp_patient(world: World) -> None:
    pid = world.seed_patient(INS_A, active=False)
    world.seed_document(pid)
    admin = world.as_("ADM", patient=INS_A)
    assert admin.get(f"Patient/{pid}").status_code == 200
    forbidden(admin.get(f"DocumentReference?patient={pid}"))


# -- R3 professional access ----------------------------------------------------------------------


def test_r3_access_by_a_grant_naming_the_professional(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    assert docs_of(world.doctor(DR, INS_A), pid) == {doc}
    assert world.doctor(DR, INS_A).get(f"DocumentReference/{doc}").status_code == 200
    other = world.doctor(DR_OUT, INS_A)  # the grant names another professional
    forbidden(other.get(f"DocumentReference?patient={pid}"))
    forbidden(other.get(f"DocumentReference/{doc}"))
    forbidden(other.get(f"Consent?patient={pid}"))


def test_r3_access_by_a_grant_naming_the_establishment(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    world.seed_consent(ACCESS, INS_A, (FINESS, HOSPITAL))
    assert docs_of(world.doctor(DR_OUT, INS_A, organization=HOSPITAL_ORG), pid) == {doc}
    assert docs_of(world.doctor(NURSE, INS_A, profession="60", organization=HOSPITAL_ORG), pid) == {doc}
    forbidden(world.doctor(DR_OUT, INS_A, organization=f"{FINESS}|750712184").get(f"DocumentReference?patient={pid}"))
    forbidden(world.doctor(DR_OUT, INS_A).get(f"DocumentReference?patient={pid}"))
    # The care team is the establishment's professionals: its reception staff get nothing (R9).
    forbidden(world.as_("ASS", patient=INS_A, organization=HOSPITAL_ORG).get(f"DocumentReference?patient={pid}"))


def test_r3_access_as_medecin_traitant(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    assert docs_of(world.doctor(MT, INS_A), pid) == {doc}


def test_r3_an_expired_or_future_grant_gives_no_access(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    now = world.clock.now
    grant(world, INS_A, DR, start=now - timedelta(days=400), until=now - timedelta(days=35))  # ended
    grant(world, INS_A, DR_2, start=now + timedelta(days=1), until=now + timedelta(days=30))  # not yet
    grant(world, INS_A, DR_OUT, until=now + timedelta(days=1))  # ends tomorrow
    forbidden(world.doctor(DR, INS_A).get(f"DocumentReference?patient={pid}"))
    forbidden(world.doctor(DR_2, INS_A).get(f"DocumentReference/{doc}"))
    soon_expired = world.doctor(DR_OUT, INS_A)
    assert docs_of(soon_expired, pid) == {doc}
    world.clock.now = now + timedelta(days=2)  # the same token, two days later
    forbidden(soon_expired.get(f"DocumentReference?patient={pid}"))
    forbidden(soon_expired.get(f"DocumentReference/{doc}"))


def test_r3_a_revoked_or_inactive_grant_gives_no_access(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    cid = grant(world, INS_A, DR)
    doctor = world.doctor(DR, INS_A)
    assert doctor.get(f"DocumentReference?patient={pid}").status_code == 200
    world.store.update({**stored(world, "Consent", cid), "status": "inactive"})
    forbidden(doctor.get(f"DocumentReference?patient={pid}"))


# -- R4 block ------------------------------------------------------------------------------------


def test_r4_a_block_beats_a_grant_the_medecin_traitant_status_and_emergencies(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_consent(ACCESS, INS_A, (FINESS, HOSPITAL))
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, DR))
    world.seed_consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR), permit=False)
    for client in (
        world.doctor(DR, INS_A),
        world.doctor(DR, INS_A, organization=HOSPITAL_ORG),
        world.doctor(DR, INS_A, purpose=BREAK_THE_GLASS),
        world.doctor(DR, INS_A, purpose=REGULATION_CENTRE),
    ):
        forbidden(client.get(f"DocumentReference?patient={pid}"))
        forbidden(client.get(f"DocumentReference/{doc}"))
        forbidden(client.get(f"Patient/{pid}"))
        forbidden(client.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"))
        forbidden(client.post("DocumentReference", document(pid, author=DR)))  # R15: not blocked only
    assert alerts(world) == []
    # The block names DR only: a colleague of the same establishment still reads.
    assert docs_of(world.doctor(DR_OUT, INS_A, organization=HOSPITAL_ORG), pid) == {doc}


# -- R5 emergency --------------------------------------------------------------------------------


def _emergency_event(world: World) -> dict[str, Any]:
    return audit_events(world, INS_A)[-1]


def _flagged(event: dict[str, Any]) -> bool:
    return {"url": EMERGENCY_EXTENSION, "valueBoolean": True} in event.get("extension", [])


def test_r5_break_the_glass_by_any_professional_is_flagged_and_alerted(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    nurse = world.doctor(NURSE, INS_A, profession="60", purpose=BREAK_THE_GLASS)
    assert docs_of(nurse, pid) == {doc}
    event = _emergency_event(world)
    assert _flagged(event)
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == BREAK_THE_GLASS
    assert alerts(world) == [{"kind": "emergency-access", "patient": [INS_SYSTEM, INS_A], "auditEvent": event["id"]}]
    forbidden(world.doctor(NURSE, INS_A, profession="60").get(f"DocumentReference?patient={pid}"))  # normal


def test_r5_centre_15_is_for_doctors_only(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    regulator = world.doctor(DR_OUT, INS_A, purpose=REGULATION_CENTRE)
    assert regulator.get(f"DocumentReference/{doc}").status_code == 200
    assert _flagged(_emergency_event(world))
    assert len(alerts(world)) == 1
    nurse = world.doctor(NURSE, INS_A, profession="60", purpose=REGULATION_CENTRE)
    forbidden(nurse.get(f"DocumentReference/{doc}"))
    forbidden(nurse.get(f"DocumentReference?patient={pid}"))
    assert not _flagged(_emergency_event(world))
    assert len(alerts(world)) == 1


@pytest.mark.parametrize("purpose", [BREAK_THE_GLASS, REGULATION_CENTRE])
def test_r5_the_patient_may_oppose_each_emergency_access(world: World, purpose: str) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    other = REGULATION_CENTRE if purpose == BREAK_THE_GLASS else BREAK_THE_GLASS
    patient = world.patient(INS_A)
    setting = next(
        c for c in consents_in_store(world, INS_A) if c["provision"].get("purpose", [{}])[0].get("code") == purpose
    )
    setting["provision"]["type"] = "deny"
    assert patient.put(f"Consent?{by_identifier(setting)}", setting).status_code == 200
    forbidden(world.doctor(DR_OUT, INS_A, purpose=purpose).get(f"DocumentReference/{doc}"))
    assert docs_of(world.doctor(DR_OUT, INS_A, purpose=other), pid) == {doc}  # the other setting holds
    setting["provision"]["type"] = "permit"
    assert patient.put(f"Consent?{by_identifier(setting)}", setting).status_code == 200
    assert docs_of(world.doctor(DR_OUT, INS_A, purpose=purpose), pid) == {doc}


def test_r5_a_revoked_emergency_setting_no_longer_permits(world: World) -> None:
    """CONTRACT §4: a Consent is revoked by DELETE. The emergency-access Consents are the patient's
    permissions (created ``permit`` with the DMP); once the patient revokes one, nothing permits
    that emergency access any more. Reading "no setting = allowed" instead would leave emergency
    access open after the patient revoked it: the reading that protects the patient wins."""
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    setting = next(
        c
        for c in consents_in_store(world, INS_A)
        if c["provision"].get("purpose", [{}])[0].get("code") == BREAK_THE_GLASS
    )
    assert world.patient(INS_A).delete(f"Consent?{by_identifier(setting)}").status_code == 204
    forbidden(world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS).get(f"DocumentReference?patient={pid}"))
    assert alerts(world) == []


def test_r5_emergency_never_reveals_masked_documents(world: World) -> None:
    pid = world.seed_patient(INS_A)
    plain = world.seed_document(pid)
    masked = world.seed_document(pid, labels=(MASKED_FROM_PROFESSIONALS,))
    emergency = world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS)
    assert docs_of(emergency, pid) == {plain}
    not_found(emergency.get(f"DocumentReference/{masked}"))
    forbidden(emergency.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"))


def test_r5_a_professional_with_access_using_break_the_glass_is_a_normal_access(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.set_emergency(INS_A, BREAK_THE_GLASS, False)  # even when the patient opposed emergencies
    assert docs_of(world.doctor(DR, INS_A, purpose=BREAK_THE_GLASS), pid) == {doc}
    event = _emergency_event(world)
    assert not _flagged(event) and event["outcome"] == "0"
    assert alerts(world) == []


# -- R6 médecin traitant -------------------------------------------------------------------------


def _with_medecin_traitant(world: World) -> tuple[str, dict[str, str]]:
    """Patient A with DR and DR_2 granted, MT designated (not separately granted) and documents."""
    pid = world.seed_patient(INS_A)
    docs = {
        "plain": world.seed_document(pid, doc_id="plain"),
        "masked": world.seed_document(pid, labels=(MASKED_FROM_PROFESSIONALS,), doc_id="masked"),
    }
    grant(world, INS_A, DR)
    grant(world, INS_A, DR_2)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    for idnatps in (DR, DR_2, MT, DR_OUT):
        world.seed_practitioner(idnatps, "10")
    world.seed_practitioner(PHARMACIST, "21")
    return pid, docs


def test_r6_the_medecin_traitant_sees_masked_documents_and_reads_the_trail(world: World) -> None:
    pid, docs = _with_medecin_traitant(world)
    mt = world.doctor(MT, INS_A)
    assert docs_of(mt, pid) == {docs["plain"], docs["masked"]}
    assert mt.get(f"DocumentReference/{docs['masked']}").status_code == 200
    assert docs_of(world.doctor(DR, INS_A), pid) == {docs["plain"]}
    assert len(trail(mt, INS_A)) == len(audit_events(world, INS_A)) - 1  # all but this search's own
    forbidden(world.doctor(DR, INS_A).get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"))


def test_r6_the_medecin_traitant_may_block_another_professional(world: World) -> None:
    pid, docs = _with_medecin_traitant(world)
    forbidden(world.doctor(DR_2, INS_A).post("Consent", consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR), permit=False)))
    assert docs_of(world.doctor(DR, INS_A), pid) == {docs["plain"]}
    created = world.doctor(MT, INS_A).post("Consent", consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR), permit=False))
    assert created.status_code == 201, created.get_data(as_text=True)
    forbidden(world.doctor(DR, INS_A).get(f"DocumentReference?patient={pid}"))
    # The médecin traitant creates blocks; granting stays the patient's decision (R16).
    forbidden(world.doctor(MT, INS_A).post("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_OUT))))


def test_r6_the_medecin_traitant_hands_the_status_to_another_authorised_doctor(world: World) -> None:
    pid, docs = _with_medecin_traitant(world)
    before = {
        c["id"] for c in consents_in_store(world, INS_A) if c["category"][0]["coding"][0]["code"] == MEDECIN_TRAITANT
    }
    handed = world.doctor(MT, INS_A).post("Consent", consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, DR_2)))
    assert handed.status_code == 201, handed.get_data(as_text=True)
    (previous,) = before
    assert stored(world, "Consent", previous)["status"] == "inactive"
    assert docs_of(world.doctor(DR_2, INS_A), pid) == {docs["plain"], docs["masked"]}
    forbidden(world.doctor(MT, INS_A).get(f"DocumentReference?patient={pid}"))  # no grant of their own
    active = [
        c
        for c in consents_in_store(world, INS_A)
        if c["category"][0]["coding"][0]["code"] == MEDECIN_TRAITANT and c["status"] == "active"
    ]
    assert [c["id"] for c in active] == [handed.get_json()["id"]]


@pytest.mark.parametrize(
    ("designated", "why", "says"),
    [
        (DR_OUT, "no R3 access", "must first be authorised"),
        (PHARMACIST, "not a doctor", "must be a doctor (TRE_G15 10): the directory records 21"),
        ("810000000099", "not in the directory", "810000000099 is not in the server's directory of professionals"),
    ],
)
def test_r6_only_an_authorised_doctor_is_designated(world: World, designated: str, why: str, says: str) -> None:
    """R6 reads the profession in the server's directory (CONTRACT §3): the refusal tells a doctor
    the directory does not know from a professional it knows as no doctor."""
    _with_medecin_traitant(world)
    grant(world, INS_A, PHARMACIST)
    grant(world, INS_A, "810000000099")
    for client in (world.doctor(MT, INS_A), world.patient(INS_A)):
        response = client.post("Consent", consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, designated)))
        business_rule(response)
        assert says in response.get_json()["issue"][0]["diagnostics"], why
    current = [
        c["provision"]["actor"][0]["reference"]["identifier"]["value"]
        for c in consents_in_store(world, INS_A)
        if c["category"][0]["coding"][0]["code"] == MEDECIN_TRAITANT and c["status"] == "active"
    ]
    assert current == [MT], why


def test_r6_the_patient_designates_the_medecin_traitant(world: World) -> None:
    pid, docs = _with_medecin_traitant(world)
    made = world.patient(INS_A).post("Consent", consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, DR)))
    assert made.status_code == 201, made.get_data(as_text=True)
    assert docs_of(world.doctor(DR, INS_A), pid) == {docs["plain"], docs["masked"]}
    forbidden(world.doctor(MT, INS_A).get(f"DocumentReference?patient={pid}"))  # the previous one, ungranted


# -- R7 patient ----------------------------------------------------------------------------------


def test_r7_the_patient_reads_their_record_except_invisible_patient(world: World) -> None:
    pid = world.seed_patient(INS_A)
    plain = world.seed_document(pid)
    masked = world.seed_document(pid, labels=(MASKED_FROM_PROFESSIONALS,))
    for_parents = world.seed_document(pid, labels=(INVISIBLE_TO_REPRESENTATIVES,))
    hidden = world.seed_document(pid, labels=(INVISIBLE_TO_PATIENT,))
    remb = world.seed_document(pid, REIMBURSEMENT[1], type_system=REIMBURSEMENT[0], author=None)
    patient = world.patient(INS_A)
    assert docs_of(patient, pid) == {plain, masked, for_parents, remb}
    assert patient.get(f"Patient/{pid}").status_code == 200
    not_found(patient.get(f"DocumentReference/{hidden}"))


def test_r7_a_minor_with_a_legal_representative_has_no_direct_access(world: World) -> None:
    pid = world.seed_patient(INS_MINOR, birth_date=minor_birth_date(world, 10))
    doc = world.seed_document(pid)
    majority = world.clock.now + timedelta(days=10)
    representative(world, INS_MINOR, REP_1, until=majority)
    minor = world.patient(INS_MINOR)
    parent = legrep(world, INS_MINOR, REP_1)
    forbidden(minor.get(f"Patient/{pid}"))
    forbidden(minor.get(f"DocumentReference?patient={pid}"))
    forbidden(minor.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=pid)))
    assert docs_of(parent, pid) == {doc}
    world.clock.now = majority + timedelta(days=1)  # 18 years old: the patient's own, the parent's no more
    assert docs_of(minor, pid) == {doc}
    forbidden(parent.get(f"DocumentReference?patient={pid}"))
    forbidden(parent.get(f"Patient/{pid}"))


# -- R8 legal representative ---------------------------------------------------------------------


def test_r8_legal_representatives_act_for_the_patient_until_period_end(world: World) -> None:
    pid = world.seed_patient(INS_MINOR, birth_date=minor_birth_date(world, 40))
    doc = world.seed_document(pid)
    majority = world.clock.now + timedelta(days=40)
    representative(world, INS_MINOR, REP_1, until=majority)
    representative(world, INS_MINOR, REP_2, until=majority)
    first, second, stranger = (legrep(world, INS_MINOR, r) for r in (REP_1, REP_2, REP_3))
    assert docs_of(first, pid) == {doc}
    assert docs_of(second, pid) == {doc}
    forbidden(stranger.get(f"DocumentReference?patient={pid}"))
    forbidden(stranger.get(f"Patient/{pid}"))
    # Acting for the patient: a grant (R16), a document of their own (R15), the trail (R17).
    assert first.post("Consent", consent(ACCESS, INS_MINOR, (IDNATPS_SYSTEM, DR))).status_code == 201
    assert docs_of(world.doctor(DR, INS_MINOR), pid) == {doc}
    own = second.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=pid))
    assert own.status_code == 201, own.get_data(as_text=True)
    assert len(trail(first, INS_MINOR)) > 0
    world.clock.now = majority + timedelta(seconds=1)
    for parent in (first, second):
        forbidden(parent.get(f"DocumentReference?patient={pid}"))
        forbidden(parent.get(f"Consent?patient={pid}"))
        forbidden(parent.post("Consent", consent(ACCESS, INS_MINOR, (IDNATPS_SYSTEM, DR_2))))


def test_r8_the_representative_is_named_by_the_ins_in_either_form(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    representative(world, INS_A, REP_1)  # a protected adult
    assert docs_of(world.as_("LEGREP", patient=INS_A, sub=f"{INS_SYSTEM}|{REP_1}"), pid) == {doc}
    forbidden(world.as_("LEGREP", patient=INS_A, sub=f"{INS_SYSTEM}|{REP_2}").get(f"Patient/{pid}"))


# -- R9 no readers beyond these ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ASS", "TCU", "ADM"])
def test_r9_staff_systems_and_administration_never_read_the_record(world: World, role: str) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid, with_binary=True)
    grant(world, INS_A, DR)  # grants are for professionals: nothing here opens the record to them
    cid = world.seed_consent(ACCESS, INS_A, (FINESS, HOSPITAL))
    client = world.as_(role, patient=INS_A, organization=HOSPITAL_ORG)
    for query in (
        f"DocumentReference?patient={pid}",
        f"DocumentReference/{doc}",
        f"DocumentReference/{doc}/_history",
        f"Binary/bin-{doc}",
        f"Consent?patient={pid}",
        f"Consent/{cid}",
        f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}",
        f"List?patient={pid}",
    ):
        forbidden(client.get(query))
    assert entries(client.get(f"Patient?_id={pid}&_revinclude=DocumentReference:subject"), "include") == {}
    assert entries(client.get(f"Patient?_id={pid}&_revinclude=Consent:patient"), "include") == {}
    history = client.get("_history?_count=100").get_json()
    assert {e["resource"]["resourceType"] for e in history["entry"]} == {"Patient"}


def test_r9_tcu_only_creates_documents(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    feed = world.as_("TCU", patient=INS_A, organization=f"{FINESS}|CNAM")
    created = feed.post("DocumentReference", document(pid, REIMBURSEMENT))
    assert created.status_code == 201, created.get_data(as_text=True)
    forbidden(feed.get(f"DocumentReference/{created.get_json()['id']}"))  # not even what it fed
    not_found(feed.delete(f"DocumentReference/{doc}"))
    not_found(feed.put(f"DocumentReference/{doc}", {**stored(world, "DocumentReference", doc), "description": "x"}))
    forbidden(feed.post("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))))
    forbidden(world.as_("ASS", patient=INS_A).post("DocumentReference", document(pid, REIMBURSEMENT)))
    assert docs_of(world.patient(INS_A), pid) == {doc, created.get_json()["id"]}


# -- R10 matrix ----------------------------------------------------------------------------------


def _typed_documents(world: World) -> tuple[str, dict[str, str]]:
    pid = world.seed_patient(INS_A)
    docs = {
        "consultation": world.seed_document(pid, doc_id="consultation"),
        "summary": world.seed_document(pid, SUMMARY[1], doc_id="summary"),
        "remb": world.seed_document(pid, REIMBURSEMENT[1], type_system=REIMBURSEMENT[0], doc_id="remb"),
        "residence": world.seed_document(pid, RESIDENCE[1], type_system=RESIDENCE[0], doc_id="residence"),
        "by-physio": world.seed_document(pid, author=PHYSIO, doc_id="by-physio"),
        "by-pharmacist": world.seed_document(pid, author=PHARMACIST, doc_id="by-pharmacist"),
    }
    for idnatps in (DR, PHARMACIST, NURSE, PHYSIO):
        grant(world, INS_A, idnatps)
    return pid, docs


@pytest.mark.parametrize(
    ("idnatps", "profession", "visible"),
    [
        (DR, "10", {"consultation", "summary", "remb", "by-physio", "by-pharmacist"}),  # not ATTEST-RESID
        (PHARMACIST, "21", {"summary", "remb", "by-pharmacist"}),  # class 10 denied, own one seen
        (NURSE, "60", {"consultation", "summary", "by-physio", "by-pharmacist"}),  # class 60 denied
        (PHYSIO, "31", {"by-physio"}),  # unlisted profession: only what it authored
        (PHYSIO, None, {"by-physio"}),  # no profession in the token: the same
    ],
)
def test_r10_the_matrix_decides_per_profession(
    world: World, idnatps: str, profession: str | None, visible: set[str]
) -> None:
    pid, docs = _typed_documents(world)
    client = world.as_("HCP", patient=INS_A, idnatps=idnatps, profession=profession)
    assert docs_of(client, pid) == {docs[k] for k in visible}
    for key, doc in docs.items():
        response = client.get(f"DocumentReference/{doc}")
        if key in visible:
            assert response.status_code == 200, key
        else:
            not_found(response)
    assert client.total(f"DocumentReference?patient={pid}&_summary=count") == len(visible)


def test_r10_the_author_sees_their_document_whatever_the_matrix(world: World) -> None:
    pid, docs = _typed_documents(world)
    pharmacist = world.doctor(PHARMACIST, INS_A, profession="21")
    own = pharmacist.post("DocumentReference", document(pid, CONSULTATION, author=PHARMACIST))
    assert own.status_code == 201
    assert own.get_json()["id"] in docs_of(pharmacist, pid)
    assert pharmacist.get(f"DocumentReference/{own.get_json()['id']}").status_code == 200
    not_found(pharmacist.get(f"DocumentReference/{docs['consultation']}"))


# -- R11, R12, R13 visibility labels -------------------------------------------------------------


def _labelled_record(world: World) -> tuple[str, dict[str, str]]:
    """Patient A (a protected adult with a representative), one document per label, with content,
    a submission set naming them all, and a trail mentioning each of them."""
    pid = world.seed_patient(INS_A)
    docs = {
        "plain": world.seed_document(pid, doc_id="plain", with_binary=True),
        "masked": world.seed_document(pid, labels=(MASKED_FROM_PROFESSIONALS,), doc_id="masked", with_binary=True),
        "masked-own": world.seed_document(
            pid, author=DR, labels=(MASKED_FROM_PROFESSIONALS,), doc_id="masked-own", with_binary=True
        ),
        "no-patient": world.seed_document(pid, labels=(INVISIBLE_TO_PATIENT,), doc_id="no-patient", with_binary=True),
        "no-parents": world.seed_document(
            pid, labels=(INVISIBLE_TO_REPRESENTATIVES,), doc_id="no-parents", with_binary=True
        ),
    }
    grant(world, INS_A, DR)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    representative(world, INS_A, REP_1)
    world.seed_submission_set(pid, list(docs.values()))
    mt = world.doctor(MT, INS_A)
    for doc in docs.values():  # the médecin traitant reads each: the trail mentions every document
        assert mt.get(f"DocumentReference/{doc}").status_code == 200
    return pid, docs


def _readers(world: World) -> dict[str, As]:
    return {
        "author+granted": world.doctor(DR, INS_A),
        "medecin-traitant": world.doctor(MT, INS_A),
        "emergency": world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS),
        "patient": world.patient(INS_A),
        "representative": legrep(world, INS_A, REP_1),
    }


def assert_sees_exactly(client: As, pid: str, docs: dict[str, str], visible: set[str]) -> None:
    """``client`` sees exactly the ``visible`` documents, through every way of reaching one."""
    seen = {docs[k] for k in visible}
    hidden = {docs[k] for k in docs.keys() - visible}
    assert docs_of(client, pid) == seen
    assert client.total(f"DocumentReference?patient={pid}&_summary=count") == len(seen)
    assert client.total(f"DocumentReference?patient={pid}&_count=0") == len(seen)
    assert docs_of(client, pid, f"&subject:Patient.identifier={INS_SYSTEM}|{INS_A}") == seen
    revinclude = entries(client.get(f"Patient?_id={pid}&_revinclude=DocumentReference:subject"), "include")
    assert revinclude.get("DocumentReference", set()) == seen
    included = client.get(f"DocumentReference?patient={pid}&_include=DocumentReference:subject")
    assert entries(included, "include") == ({"Patient": {pid}} if seen else {})
    for doc in seen:
        assert client.ids(f"Patient?_has:DocumentReference:subject:_id={doc}") == {pid}
        assert client.get(f"DocumentReference/{doc}").status_code == 200
        assert client.get(f"Binary/bin-{doc}").status_code == 200
        assert client.ids(f"List?patient={pid}&item:DocumentReference._id={doc}") == {"submission"}
    for doc in hidden:
        assert client.ids(f"Patient?_has:DocumentReference:subject:_id={doc}") == set()
        not_found(client.get(f"DocumentReference/{doc}"))
        not_found(client.get(f"DocumentReference/{doc}/_history/1"))
        not_found(client.get(f"DocumentReference/{doc}/_history"))
        not_found(client.get(f"Binary/bin-{doc}"))
        assert client.ids(f"List?patient={pid}&item:DocumentReference._id={doc}") == set()
    history = client.get("DocumentReference/_history?_count=100").get_json()
    assert {e["resource"]["id"] for e in history.get("entry", [])} == seen
    assert history["total"] == len(seen)
    everything = client.get("_history?_count=1000").get_json()
    assert {
        e["resource"]["id"] for e in everything["entry"] if e["resource"]["resourceType"] == "DocumentReference"
    } == seen
    assert {e["resource"]["id"] for e in everything["entry"] if e["resource"]["resourceType"] == "Binary"} == {
        f"bin-{d}" for d in seen
    }
    submission = client.get("List/submission").get_json()
    named = {e["item"]["reference"].split("/")[-1] for e in submission.get("entry", [])}
    assert named == seen
    listed = entries(client.get(f"List?patient={pid}"), "match")
    assert listed == {"List": {"submission"}}
    searched = client.get(f"List?patient={pid}").get_json()["entry"][0]["resource"]
    assert {e["item"]["reference"].split("/")[-1] for e in searched.get("entry", [])} == seen


def assert_trail_hides(world: World, client: As, docs: dict[str, str], visible: set[str]) -> None:
    """The reader's trail mentions no hidden document nor its content (R12, R13 through R17),
    while the whole trail does mention them."""
    allowed = {f"DocumentReference/{docs[k]}" for k in visible} | {f"Binary/bin-{docs[k]}" for k in visible}
    recorded = set().union(*(entity_refs(e) for e in audit_events(world, INS_A)))
    about_documents = {r for r in recorded if r.startswith(("DocumentReference/", "Binary/"))}
    assert about_documents - allowed, "the trail should mention hidden documents for this test to mean anything"
    seen = set().union(*(entity_refs(e) for e in trail(client, INS_A)))
    assert seen & about_documents == about_documents & allowed


R11_PROFESSIONALS = {
    "author+granted": {"plain", "masked-own", "no-patient", "no-parents"},
    "medecin-traitant": {"plain", "masked", "masked-own", "no-patient", "no-parents"},
    "emergency": {"plain", "no-patient", "no-parents"},
}


@pytest.mark.parametrize("reader", sorted(R11_PROFESSIONALS))
def test_r11_masque_ps_hides_from_professionals_but_the_author_and_the_medecin_traitant(
    world: World, reader: str
) -> None:
    pid, docs = _labelled_record(world)
    assert_sees_exactly(_readers(world)[reader], pid, docs, R11_PROFESSIONALS[reader])


def test_r11_masque_ps_through_a_facility_grant(world: World) -> None:
    pid, docs = _labelled_record(world)
    world.seed_consent(ACCESS, INS_A, (FINESS, HOSPITAL))
    team = world.doctor(DR_2, INS_A, organization=HOSPITAL_ORG)
    assert docs_of(team, pid) == {docs["plain"], docs["no-patient"], docs["no-parents"]}


def test_r12_invisible_patient_hides_from_the_patient(world: World) -> None:
    pid, docs = _labelled_record(world)
    patient = _readers(world)["patient"]
    visible = {"plain", "masked", "masked-own", "no-parents"}
    assert_sees_exactly(patient, pid, docs, visible)
    # A professional reading the hidden document's content: not in the patient's trail either.
    assert world.doctor(MT, INS_A).get(f"Binary/bin-{docs['no-patient']}").status_code == 200
    assert_trail_hides(world, patient, docs, visible)


def test_r12_invisible_patient_hides_from_representatives_too(world: World) -> None:
    pid, docs = _labelled_record(world)
    parent = _readers(world)["representative"]
    assert_sees_exactly(parent, pid, docs, {"plain", "masked", "masked-own"})
    assert_trail_hides(world, parent, docs, {"plain", "masked", "masked-own"})


def test_r13_invisible_representants_legaux_hides_from_representatives_only(world: World) -> None:
    pid, docs = _labelled_record(world)
    readers = _readers(world)
    assert docs["no-parents"] in docs_of(readers["patient"], pid)
    assert docs["no-parents"] in docs_of(readers["author+granted"], pid)
    assert docs["no-parents"] in docs_of(readers["emergency"], pid)
    not_found(readers["representative"].get(f"DocumentReference/{docs['no-parents']}"))
    assert readers["representative"].ids(f"Patient?_has:DocumentReference:subject:_id={docs['no-parents']}") == set()
    assert readers["patient"].ids(f"Patient?_has:DocumentReference:subject:_id={docs['no-parents']}") == {pid}
    assert_trail_hides(world, readers["patient"], docs, {"plain", "masked", "masked-own", "no-parents"})


# -- R14 consents --------------------------------------------------------------------------------


def test_r14_who_sees_which_consents(world: World) -> None:
    pid = world.seed_patient(INS_A)
    emergency = {c["id"] for c in consents_in_store(world, INS_A)}
    mine = grant(world, INS_A, DR)
    theirs = grant(world, INS_A, DR_2)
    team = world.seed_consent(ACCESS, INS_A, (FINESS, HOSPITAL))
    blocked = world.seed_consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR_OUT), permit=False)
    mt = world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    rep = representative(world, INS_A, REP_1)
    literal = consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2))  # naming the Patient by reference
    world.store.create({**literal, "id": "literal", "patient": {"reference": f"Patient/{pid}"}})
    every = emergency | {mine, theirs, team, blocked, mt, rep, "literal"}
    everything = f"Consent?patient={pid}&_count=100"
    assert world.patient(INS_A).get("Consent?_count=100").status_code == 400  # name the patient (CONTRACT §7)
    assert (
        world.patient(INS_A).ids(everything)
        | world.patient(INS_A).ids(f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}&_count=100")
        == every
    )
    assert world.patient(INS_A).ids(f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}&_count=100") == every - {
        "literal"
    }
    by_identifier = f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}&_count=100"
    for reader in (legrep(world, INS_A, REP_1), world.doctor(MT, INS_A)):
        assert reader.ids(everything) | reader.ids(by_identifier) == every
    doctor = world.doctor(DR, INS_A, organization=HOSPITAL_ORG)
    assert doctor.ids(f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}&_count=100") == {mine}
    assert doctor.ids(everything) == set()  # the grant names the patient by identifier only
    assert doctor.total(f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}&_summary=count") == 1
    assert doctor.get(f"Consent/{mine}").status_code == 200
    not_found(doctor.get(f"Consent/{theirs}"))
    not_found(doctor.get(f"Consent/{team}"))
    assert doctor.ids(f"Consent?patient={pid}") == set()
    assert world.patient(INS_A).ids(f"Consent?patient={pid}") == {"literal"}
    assert entries(doctor.get(f"Patient?_id={pid}&_revinclude=Consent:patient"), "include") == {}
    revinclude = world.patient(INS_A).get(f"Patient?_id={pid}&_revinclude=Consent:patient")
    assert entries(revinclude, "include") == {"Consent": {"literal"}}
    assert doctor.ids(f"Patient?_has:Consent:patient:actor:identifier={IDNATPS_SYSTEM}|{DR_2}") == set()
    history = doctor.get("Consent/_history?_count=100").get_json()
    assert {e["resource"]["id"] for e in history.get("entry", [])} == {mine}
    not_found(doctor.get("Consent/literal/_history"))
    emergency_reader = world.doctor(DR_2, INS_A, purpose=BREAK_THE_GLASS)
    assert emergency_reader.ids(f"Consent?patient:identifier={INS_SYSTEM}|{INS_A}") == {theirs}


# -- R15 writing documents -----------------------------------------------------------------------


def test_r15_professionals_and_systems_feed_an_open_dmp_without_a_grant(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR_2), permit=False)
    fed = world.doctor(DR_OUT, INS_A).post("DocumentReference", document(pid, author=DR_OUT))
    assert fed.status_code == 201, fed.get_data(as_text=True)
    forbidden(world.doctor(DR_OUT, INS_A).get(f"DocumentReference?patient={pid}"))  # feeding ≠ reading
    forbidden(world.doctor(DR_2, INS_A).post("DocumentReference", document(pid, author=DR_2)))
    by_feed = world.as_("TCU", patient=INS_A).post("DocumentReference", document(pid, REIMBURSEMENT))
    assert by_feed.status_code == 201
    forbidden(world.as_("ASS", patient=INS_A).post("DocumentReference", document(pid, author=DR_OUT)))
    assert docs_of(world.patient(INS_A), pid) == {fed.get_json()["id"], by_feed.get_json()["id"]}


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r15_the_patient_adds_only_their_own_class_90_documents(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A)
    other = world.seed_patient(INS_B)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    own = client.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=pid))
    assert own.status_code == 201, own.get_data(as_text=True)
    forbidden(client.post("DocumentReference", document(pid, CONSULTATION, patient_author=pid)))  # class 10
    forbidden(client.post("DocumentReference", document(pid, PATIENT_DOC, author=DR)))  # not their own
    forbidden(client.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=other)))
    forbidden(client.post("DocumentReference", document(pid, PATIENT_DOC)))  # no author
    assert docs_of(world.patient(INS_A), pid) == {own.get_json()["id"]}


def _refused_for(response: TestResponse, element: str, words: str) -> None:
    """403 (R15) naming the element the refusal is about, with a message that says why."""
    forbidden(response)
    first = response.get_json()["issue"][0]
    assert first["expression"] == [element] and words in first["diagnostics"], first


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r15_why_a_patients_document_is_refused(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    before = len(docs_of(world.patient(INS_A), pid))
    # A type of class 90 with its class as category: accepted.
    with_category = document(pid, PATIENT_DOC, patient_author=pid, category=[_class("90")])
    assert client.post("DocumentReference", with_category).status_code == 201
    # Another class, by its type: 403 saying which class.
    _refused_for(
        client.post("DocumentReference", document(pid, CONSULTATION, patient_author=pid)),
        "DocumentReference.type",
        f"{who}: the patient adds documents of class 90 only (Autres documents déposés par le patient); "
        "this DocumentReference.type is of class 10",
    )
    # A category of class 90 on a type of another class: the codes disagree (422, CONTRACT §5).
    disguised = document(pid, CONSULTATION, patient_author=pid, category=[_class("90")])
    response = client.post("DocumentReference", disguised)
    assert response.status_code == 422 and response.get_json()["issue"][0]["code"] == "code-invalid"
    # A type of no DMP class at all.
    _refused_for(
        client.post("DocumentReference", document(pid, (LOINC, "28617-9"), patient_author=pid)),
        "DocumentReference.type",
        "this DocumentReference.type has no DMP class",
    )
    # Authors: the Patient and only them; not a professional beside them, not the representative,
    # not nobody.
    own = document(pid, PATIENT_DOC, patient_author=pid)
    for doc in (
        {**own, "author": [*own["author"], {"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}]},
        {**own, "author": [{"identifier": {"system": INS_SYSTEM, "value": REP_1}}]},
        document(pid, PATIENT_DOC),
    ):
        _refused_for(
            client.post("DocumentReference", doc),
            "DocumentReference.author",
            "the author of a document the patient adds is this DMP's Patient, and only they",
        )
    # A contained Patient carrying the DMP's INS is the Patient too.
    contained = {
        **document(pid, PATIENT_DOC),
        "contained": [{"resourceType": "Patient", "id": "me", "identifier": [{"system": INS_SYSTEM, "value": INS_A}]}],
        "author": [{"reference": "#me"}],
    }
    assert client.post("DocumentReference", contained).status_code == 201
    assert len(docs_of(world.patient(INS_A), pid)) == before + 2


def test_r15_the_patients_document_stays_theirs_and_of_class_90(world: World) -> None:
    """The patient changes their own document (R19), but not into what they could not have added."""
    pid = world.seed_patient(INS_A)
    patient = world.patient(INS_A)
    doc = patient.post("DocumentReference", document(pid, PATIENT_DOC, patient_author=pid)).get_json()
    retyped = {**doc, "type": document(pid, CONSULTATION)["type"]}
    _refused_for(patient.put(f"DocumentReference/{doc['id']}", retyped), "DocumentReference.type", "class 10")
    reattributed = {**doc, "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}]}
    _refused_for(patient.put(f"DocumentReference/{doc['id']}", reattributed), "DocumentReference.author", "only they")
    described = {**doc, "description": "mon ordonnance de lunettes"}
    assert patient.put(f"DocumentReference/{doc['id']}", described).status_code == 200
    assert stored(world, "DocumentReference", doc["id"])["type"] == doc["type"]


def _class(code: str) -> dict[str, Any]:
    return {"coding": [{"system": TRE_A03, "code": code}]}


# -- R16 consents --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r16_the_patient_creates_updates_and_deletes_grants_and_blocks(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    doctor = world.doctor(DR, INS_A)
    forbidden(doctor.get(f"DocumentReference?patient={pid}"))
    access = consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR), end=world.clock.now + timedelta(days=30))
    assert client.post("Consent", access).status_code == 201
    assert docs_of(doctor, pid) == {doc}
    access["provision"]["period"]["end"] = "2020-01-01T00:00:00Z"  # the patient ends it early
    assert client.put(f"Consent?{by_identifier(access)}", access).status_code == 200
    forbidden(doctor.get(f"DocumentReference?patient={pid}"))
    access["provision"]["period"]["end"] = "2999-01-01T00:00:00Z"  # and renews it
    assert client.put(f"Consent?{by_identifier(access)}", access).status_code == 200
    assert docs_of(doctor, pid) == {doc}
    block = consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR), permit=False)
    assert client.post("Consent", block).status_code == 201
    forbidden(doctor.get(f"DocumentReference?patient={pid}"))
    assert client.delete(f"Consent?{by_identifier(block)}").status_code == 204
    assert docs_of(doctor, pid) == {doc}
    assert client.delete(f"Consent?{by_identifier(access)}").status_code == 204
    forbidden(doctor.get(f"DocumentReference?patient={pid}"))
    emergency = consent(EMERGENCY_ACCESS, INS_A, permit=False, purpose=BREAK_THE_GLASS)
    assert client.post("Consent", emergency).status_code == 201
    forbidden(world.doctor(DR_2, INS_A, purpose=BREAK_THE_GLASS).get(f"DocumentReference?patient={pid}"))
    grant(world, INS_A, MT)
    world.seed_practitioner(MT, "10")
    assert client.post("Consent", consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))).status_code == 201
    # A decision keeps its category (422) and legal representatives are not the patient's to name.
    changed = {**block, "category": [{"coding": [{"system": CONSENT_TYPE_SYSTEM, "code": ACCESS}]}]}
    assert client.post("Consent", block).status_code == 201
    business_rule(client.put(f"Consent?{by_identifier(block)}", changed))
    forbidden(client.post("Consent", consent(REPRESENTATIVE, INS_A, (INS_SYSTEM, REP_2))))


def test_r16_professionals_do_not_grant_access(world: World) -> None:
    pid = world.seed_patient(INS_A)
    mine = grant(world, INS_A, DR)
    doctor = world.doctor(DR, INS_A)
    forbidden(doctor.post("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2))))
    forbidden(doctor.post("Consent", consent(REPRESENTATIVE, INS_A, (INS_SYSTEM, REP_1))))
    forbidden(doctor.post("Consent", consent(EMERGENCY_ACCESS, INS_A, permit=False, purpose=BREAK_THE_GLASS)))
    renewal = stored(world, "Consent", mine)
    renewal["provision"]["period"]["end"] = "2999-01-01T00:00:00Z"
    forbidden(doctor.put(f"Consent/{mine}", renewal))  # not even their own grant
    forbidden(doctor.delete(f"Consent/{mine}"))
    assert doctor.get(f"DocumentReference?patient={pid}").status_code == 200


def test_r16_administration_records_legal_representatives(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    admin = world.as_("ADM", patient=INS_A)
    made = admin.post("Consent", consent(REPRESENTATIVE, INS_A, (INS_SYSTEM, REP_1)))
    assert made.status_code == 201, made.get_data(as_text=True)
    forbidden(admin.post("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))))
    assert legrep(world, INS_A, REP_1).get(f"Patient/{pid}").status_code == 200


def test_r16_a_professional_creating_a_dmp_gets_access_and_emergency_settings(world: World) -> None:
    creator = world.doctor(DR, INS_NEW)
    created = creator.post("Patient", new_patient(INS_NEW))
    assert created.status_code == 201, created.get_data(as_text=True)
    pid = created.get_json()["id"]
    assert docs_of(creator, pid) == set()
    settings = {}
    grants = []
    for c in consents_in_store(world, INS_NEW):
        category = c["category"][0]["coding"][0]["code"]
        if category == EMERGENCY_ACCESS:
            settings[c["provision"]["purpose"][0]["code"]] = c["provision"]["type"]
        else:
            assert category == ACCESS
            grants.append(c)
    assert settings == {BREAK_THE_GLASS: "permit", REGULATION_CENTRE: "permit"}
    assert len(grants) == 1
    assert grants[0]["provision"]["actor"][0]["reference"]["identifier"] == {"system": IDNATPS_SYSTEM, "value": DR}
    end = datetime.fromisoformat(grants[0]["provision"]["period"]["end"].replace("Z", "+00:00"))
    assert timedelta(days=364) < end - world.clock.now <= timedelta(days=366)  # default one year
    assert creator.ids(f"Consent?patient:identifier={INS_SYSTEM}|{INS_NEW}") == {grants[0]["id"]}
    doc = creator.post("DocumentReference", document(pid, author=DR))
    assert docs_of(creator, pid) == {doc.get_json()["id"]}


def test_r16_a_professional_records_a_representative_only_when_creating_the_dmp(world: World) -> None:
    creator = world.doctor(DR, INS_MINOR)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7a1e6b7c-0000-4000-8000-000000000001",
                "resource": new_patient(INS_MINOR, minor_birth_date(world, 400)),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, REP_1)),
                "request": {"method": "POST", "url": "Consent"},
            },
        ],
    }
    response = creator.post("", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [e["response"]["status"][:3] for e in response.get_json()["entry"]] == ["201", "201"]
    pid = response.get_json()["entry"][0]["response"]["location"].split("/")[-3]
    assert legrep(world, INS_MINOR, REP_1).get(f"Patient/{pid}").status_code == 200
    forbidden(world.patient(INS_MINOR).get(f"Patient/{pid}"))  # R7
    # Later, in another request, the same professional may not add one.
    forbidden(creator.post("Consent", consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, REP_2))))
    categories = sorted(c["category"][0]["coding"][0]["code"] for c in consents_in_store(world, INS_MINOR))
    assert categories == [ACCESS, EMERGENCY_ACCESS, EMERGENCY_ACCESS, REPRESENTATIVE]


# -- R17 trail -----------------------------------------------------------------------------------


def test_r17_every_request_about_a_record_writes_exactly_one_audit_event(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_consent(BLOCK, INS_A, (IDNATPS_SYSTEM, DR_2), permit=False)
    world.seed_practitioner(DR, "10")
    patient, doctor = world.patient(INS_A), world.doctor(DR, INS_A)
    requests = [
        (world.doctor(DR_2, INS_A).get, (f"Patient/{pid}",), 403),  # refused before anything runs (R4)
        (patient.get, (f"DocumentReference/{doc}",), 200),
        (patient.get, (f"DocumentReference?patient={pid}",), 200),
        (patient.get, ("DocumentReference/unknown",), 404),
        (doctor.get, (f"DocumentReference/{doc}",), 200),
        (world.doctor(DR_OUT, INS_A).get, (f"DocumentReference/{doc}",), 403),  # refused by the rules
        (world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS).get, (f"DocumentReference/{doc}",), 200),
        (world.as_("ASS", patient=INS_A).get, (f"Consent?patient={pid}",), 403),
        (doctor.get, (f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}",), 403),
        (doctor.post, ("DocumentReference", document(pid, author=DR)), 201),
        (doctor.post, ("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2))), 403),
        (patient.post, ("Consent", consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2))), 201),
        (patient.delete, ("Patient/" + pid,), 403),
        (world.as_("HCP", patient=INS_A, idnatps=DR_OUT, profession="10").get, (f"Patient/{pid}",), 200),
    ]
    for call, args, status in requests:
        before = len(audit_events(world, INS_A))
        response = call(*args)
        assert response.status_code == status, (args, response.get_data(as_text=True))
        events = audit_events(world, INS_A)
        assert len(events) == before + 1, args
        assert events[-1]["outcome"] == ("0" if status < 400 else "4"), args
    before = len(audit_events(world, INS_A))
    assert doctor.get(f"Practitioner/prat-{DR}").status_code == 200  # the directory is no record
    assert world.client.get(f"/fhir/DocumentReference/{doc}").status_code == 401  # nobody identified
    assert len(audit_events(world, INS_A)) == before


def test_r17_the_event_describes_who_did_what(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    doctor = world.as_("HCP", patient=INS_A, idnatps=DR, profession="10", organization=HOSPITAL_ORG, name="Dr Martin")
    assert doctor.get(f"DocumentReference/{doc}").status_code == 200
    event = audit_events(world, INS_A)[-1]
    user = event["agent"][0]
    assert user["who"] == {"identifier": {"system": IDNATPS_SYSTEM, "value": DR}, "display": "Dr Martin"}
    assert {c["code"] for r in user["role"] for c in r["coding"]} == {"HCP", "10"}
    assert user["location"]["identifier"] == {"system": FINESS, "value": HOSPITAL}
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["subtype"][0]["code"] == "read"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "normal"
    assert entity_refs(event) == {f"Patient/{pid}", f"DocumentReference/{doc}"}


def test_r17_a_write_and_its_event_are_atomic(world: World) -> None:
    pid = world.seed_patient(INS_A)
    grant(world, INS_A, DR)
    doctor = world.doctor(DR, INS_A)
    before = len(audit_events(world, INS_A))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": document(pid, author=DR), "request": {"method": "POST", "url": "DocumentReference"}},
            {
                "resource": consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR_2)),  # refused (R16)
                "request": {"method": "POST", "url": "Consent"},
            },
        ],
    }
    forbidden(doctor.post("", bundle))
    assert docs_of(world.patient(INS_A), pid) == set()
    events = audit_events(world, INS_A)[before:]
    assert len(events) == 2  # the refused transaction, then the patient's search
    assert events[0]["subtype"][0]["code"] == "transaction" and events[0]["outcome"] == "4"
    bundle["entry"].pop()
    assert doctor.post("", bundle).status_code == 200
    assert len(docs_of(world.patient(INS_A), pid)) == 1
    assert len(audit_events(world, INS_A)) == before + 4


def test_r17_nobody_changes_the_trail(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    patient, mt = world.patient(INS_A), world.doctor(MT, INS_A)
    assert patient.get(f"Patient/{pid}").status_code == 200
    event = audit_events(world, INS_A)[0]
    for client in (patient, mt, world.as_("ADM", patient=INS_A)):
        forged = {k: v for k, v in event.items() if k not in ("id", "meta")}
        assert_status(client.post("AuditEvent", {**forged, "outcomeDesc": "forged"}), 405, "forbidden")
    assert_status(patient.put(f"AuditEvent/{event['id']}", {**event, "outcomeDesc": "changed"}), 405)
    assert_status(mt.delete(f"AuditEvent/{event['id']}"), 405)
    assert_status(
        patient.request(
            "PATCH",
            f"AuditEvent/{event['id']}",
            [{"op": "add", "path": "/outcomeDesc", "value": "nothing happened"}],
            headers=JSON_PATCH,
        ),
        405,
    )
    assert stored(world, "AuditEvent", event["id"]) == event
    assert not any(e.get("outcomeDesc") == "forged" for e in audit_events(world, INS_A))


def test_r17_only_the_patient_representatives_and_medecin_traitant_read_the_trail(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    representative(world, INS_A, REP_1)
    assert world.doctor(DR, INS_A).get(f"DocumentReference/{doc}").status_code == 200
    first = audit_events(world, INS_A)[0]["id"]
    for client in (world.doctor(DR, INS_A), world.doctor(DR_OUT, INS_A, purpose=BREAK_THE_GLASS)):
        forbidden(client.get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS_A}"))
        forbidden(client.get(f"AuditEvent/{first}"))
        forbidden(client.get("AuditEvent/_history"))
        # Nor sideways: includes, _has, the system history.
        for include in ("AuditEvent:patient", "AuditEvent:entity"):
            assert entries(client.get(f"Patient?_id={pid}&_revinclude={include}"), "include") == {}
        query = f"DocumentReference?patient={pid}&_id={doc}&_revinclude=AuditEvent:entity"
        assert entries(client.get(query), "include") == {}
        assert client.ids("Patient?_has:AuditEvent:entity:outcome=0") == set()
        history = client.get("_history?_count=1000").get_json()
        assert "AuditEvent" not in {e["resource"]["resourceType"] for e in history.get("entry", [])}
    for client in (world.patient(INS_A), legrep(world, INS_A, REP_1), world.doctor(MT, INS_A)):
        found = entries(client.get(f"Patient?_id={pid}&_revinclude=AuditEvent:entity"), "include")
        assert first in found["AuditEvent"]
        assert client.ids("Patient?_has:AuditEvent:entity:outcome=0") == {pid}


def test_r17_the_patient_reads_their_trail_without_the_client_system(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    assert world.doctor(DR, INS_A).get(f"DocumentReference/{doc}").status_code == 200
    patient = world.patient(INS_A)
    events = trail(patient, INS_A)
    assert len(events) == 1
    assert [a.get("name") for a in events[0]["agent"]] == [None]
    assert events[0]["agent"][0]["who"]["identifier"]["value"] == DR
    assert {e["id"] for e in trail(patient, INS_A)} == {e["id"] for e in audit_events(world, INS_A)[:2]}
    by_entity = patient.ids(f"AuditEvent?entity-identifier={INS_SYSTEM}|{INS_A}&_count=100")
    assert by_entity == {e["id"] for e in audit_events(world, INS_A)[:3]}
    mt_view = trail(world.doctor(MT, INS_A), INS_A)
    assert all(any(a.get("name") == "client" for a in e["agent"]) for e in mt_view)


def test_r17_a_search_records_its_query_not_its_results(world: World) -> None:
    pid = world.seed_patient(INS_A)
    docs = {world.seed_document(pid) for _ in range(3)}
    patient = world.patient(INS_A)
    assert docs_of(patient, pid) == docs
    event = audit_events(world, INS_A)[-1]
    assert event["subtype"][0]["code"] == "search-type" and event["action"] == "E"
    queries = [e for e in event["entity"] if "query" in e]
    assert len(queries) == 1
    assert base64.b64decode(queries[0]["query"]).decode() == f"patient={pid}&_count=100"
    assert queries[0]["description"] == "DocumentReference"
    assert entity_refs(event) == {f"Patient/{pid}"}


# -- R18 masking labels --------------------------------------------------------------------------


def _label_patch(op: str, index: int | str, code: str | None = None) -> list[dict[str, Any]]:
    if op == "add":
        return [
            {
                "op": "add",
                "path": "/securityLabel/-",
                "value": {"coding": [{"system": VISIBILITY_SYSTEM, "code": code}]},
            }
        ]
    return [{"op": "remove", "path": f"/securityLabel/{index}"}]


def _with_label(resource: dict[str, Any], code: str) -> dict[str, Any]:
    labels = [*resource.get("securityLabel", []), {"coding": [{"system": VISIBILITY_SYSTEM, "code": code}]}]
    return {**resource, "securityLabel": labels}


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r18_masque_ps_is_set_and_removed_by_the_patient(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid, author=DR_2)
    grant(world, INS_A, DR)
    grant(world, INS_A, DR_2)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    doctor, author = world.doctor(DR, INS_A), world.doctor(DR_2, INS_A)
    current = client.get(f"DocumentReference/{doc}").get_json()
    assert client.put(f"DocumentReference/{doc}", _with_label(current, MASKED_FROM_PROFESSIONALS)).status_code == 200
    assert docs_of(doctor, pid) == set()
    assert docs_of(author, pid) == {doc}
    # Removing it is the patient's too: neither the author nor another professional may.
    masked = author.get(f"DocumentReference/{doc}").get_json()
    forbidden(author.put(f"DocumentReference/{doc}", {**masked, "securityLabel": masked["securityLabel"][:1]}))
    forbidden(author.request("PATCH", f"DocumentReference/{doc}", _label_patch("remove", 1), headers=JSON_PATCH))
    unmasked = client.request("PATCH", f"DocumentReference/{doc}", _label_patch("remove", 1), headers=JSON_PATCH)
    assert unmasked.status_code == 200, unmasked.get_data(as_text=True)
    assert docs_of(doctor, pid) == {doc}
    forbidden(
        doctor.request(
            "PATCH", f"DocumentReference/{doc}", _label_patch("add", 0, MASKED_FROM_PROFESSIONALS), headers=JSON_PATCH
        )
    )
    forbidden(author.post("DocumentReference", document(pid, author=DR_2, labels=(MASKED_FROM_PROFESSIONALS,))))
    assert docs_of(doctor, pid) == {doc}


@pytest.mark.parametrize("label", [INVISIBLE_TO_PATIENT, INVISIBLE_TO_REPRESENTATIVES])
def test_r18_invisibility_is_set_by_a_professional_who_reads_the_document(world: World, label: str) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)  # authored by someone else
    grant(world, INS_A, DR)
    grant(world, INS_A, PHARMACIST)
    representative(world, INS_A, REP_1)
    doctor, patient, parent = world.doctor(DR, INS_A), world.patient(INS_A), legrep(world, INS_A, REP_1)
    current = patient.get(f"DocumentReference/{doc}").get_json()
    forbidden(patient.put(f"DocumentReference/{doc}", _with_label(current, label)))
    forbidden(parent.request("PATCH", f"DocumentReference/{doc}", _label_patch("add", 0, label), headers=JSON_PATCH))
    pharmacist = world.doctor(PHARMACIST, INS_A, profession="21")  # class 10 is not theirs to read
    not_found(
        pharmacist.request("PATCH", f"DocumentReference/{doc}", _label_patch("add", 0, label), headers=JSON_PATCH)
    )
    set_ = doctor.request("PATCH", f"DocumentReference/{doc}", _label_patch("add", 0, label), headers=JSON_PATCH)
    assert set_.status_code == 200, set_.get_data(as_text=True)
    assert docs_of(parent, pid) == set()
    assert docs_of(patient, pid) == (set() if label == INVISIBLE_TO_PATIENT else {doc})
    labelled = doctor.get(f"DocumentReference/{doc}").get_json()
    removed = doctor.put(f"DocumentReference/{doc}", {**labelled, "securityLabel": labelled["securityLabel"][:1]})
    assert removed.status_code == 200, removed.get_data(as_text=True)
    assert docs_of(parent, pid) == {doc}
    # A feed is no professional reading the document.
    forbidden(world.as_("TCU", patient=INS_A).post("DocumentReference", document(pid, REIMBURSEMENT, labels=(label,))))


def test_r18_never_both_invisible_patient_and_masque_ps(world: World) -> None:
    pid = world.seed_patient(INS_A)
    masked = world.seed_document(pid, author=DR, labels=(MASKED_FROM_PROFESSIONALS,))
    hidden = world.seed_document(pid, author=DR, labels=(INVISIBLE_TO_PATIENT,))
    grant(world, INS_A, DR)
    author = world.doctor(DR, INS_A)
    current = author.get(f"DocumentReference/{masked}").get_json()
    business_rule(author.put(f"DocumentReference/{masked}", _with_label(current, INVISIBLE_TO_PATIENT)))
    business_rule(
        author.request(
            "PATCH", f"DocumentReference/{masked}", _label_patch("add", 0, INVISIBLE_TO_PATIENT), headers=JSON_PATCH
        )
    )
    both = document(pid, author=DR, labels=(INVISIBLE_TO_PATIENT, MASKED_FROM_PROFESSIONALS))
    business_rule(author.post("DocumentReference", both))
    # The patient cannot even see the document that is invisible to them.
    not_found(
        world.patient(INS_A).request(
            "PATCH",
            f"DocumentReference/{hidden}",
            _label_patch("add", 0, MASKED_FROM_PROFESSIONALS),
            headers=JSON_PATCH,
        )
    )
    assert docs_of(author, pid) == {masked, hidden}
    assert stored(world, "DocumentReference", masked)["meta"]["versionId"] == "1"


# -- R19 rectify, delete, archive ----------------------------------------------------------------


def test_r19_only_the_author_deletes_a_document(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid, author=DR)
    other = world.seed_document(pid, author=DR_2)
    by_patient = world.seed_document(pid, PATIENT_DOC[1], type_system=PATIENT_DOC[0], patient_author=True)
    grant(world, INS_A, DR)
    world.seed_consent(MEDECIN_TRAITANT, INS_A, (IDNATPS_SYSTEM, MT))
    author, patient = world.doctor(DR, INS_A), world.patient(INS_A)
    forbidden(world.doctor(MT, INS_A).delete(f"DocumentReference/{doc}"))
    forbidden(patient.delete(f"DocumentReference/{doc}"))
    forbidden(author.delete(f"DocumentReference/{other}"))
    forbidden(author.delete(f"DocumentReference/{by_patient}"))
    assert author.delete(f"DocumentReference/{doc}").status_code == 204
    assert patient.delete(f"DocumentReference/{by_patient}").status_code == 204
    assert docs_of(patient, pid) == {other}


def test_r19_the_author_named_through_the_directory_is_the_author(world: World) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_practitioner(PHYSIO, "31")
    doc = world.seed_document(pid, author=None, doc_id="by-reference")
    document_json = stored(world, "DocumentReference", doc)
    world.store.update({**document_json, "author": [{"reference": f"Practitioner/prat-{PHYSIO}"}]})
    grant(world, INS_A, PHYSIO)
    grant(world, INS_A, DR)
    author = world.doctor(PHYSIO, INS_A, profession="31")
    assert docs_of(author, pid) == {doc}  # R10: unlisted profession, but the author
    labelled = author.request(
        "PATCH", f"DocumentReference/{doc}", _label_patch("add", 0, INVISIBLE_TO_PATIENT), headers=JSON_PATCH
    )
    assert labelled.status_code == 200, labelled.get_data(as_text=True)
    forbidden(world.doctor(DR, INS_A).delete(f"DocumentReference/{doc}"))
    assert author.delete(f"DocumentReference/{doc}").status_code == 204


#: The ways an MHD or PDSm document names its author through a PractitionerRole: the role and
#: the Practitioner carrying the idNatPs, each contained in the document or kept in the directory.
ROLE_SHAPES = {
    "contained role, contained practitioner": (
        {"reference": "#role"},
        [
            {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "#person"}},
            {
                "resourceType": "Practitioner",
                "id": "person",
                "identifier": [{"system": IDNATPS_SYSTEM, "value": PHYSIO}],
            },
        ],
    ),
    "contained role, directory practitioner": (
        {"reference": "#role"},
        [
            {
                "resourceType": "PractitionerRole",
                "id": "role",
                "practitioner": {"reference": f"Practitioner/prat-{PHYSIO}"},
            }
        ],
    ),
    "directory role, directory practitioner": ({"reference": "PractitionerRole/role-physio"}, []),
    "directory role with its practitioner contained": ({"reference": "PractitionerRole/role-contained"}, []),
}


@pytest.mark.parametrize("shape", ROLE_SHAPES)
def test_r19_the_author_named_through_a_practitioner_role_is_the_author(world: World, shape: str) -> None:
    """R10 and R19 read the author the same way whatever the shape: the professional sees the
    document their role authored and alone deletes it."""
    pid = world.seed_patient(INS_A)
    world.seed_practitioner(PHYSIO, "31")
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/prat-{PHYSIO}"}}
    world.store.create({**role, "id": "role-physio"})
    person = {"resourceType": "Practitioner", "id": "p", "identifier": [{"system": IDNATPS_SYSTEM, "value": PHYSIO}]}
    world.store.create({**role, "id": "role-contained", "contained": [person], "practitioner": {"reference": "#p"}})
    reference, contained = ROLE_SHAPES[shape]
    doc = world.seed_document(pid, author=None)
    world.store.update({**stored(world, "DocumentReference", doc), "author": [reference], "contained": contained})
    grant(world, INS_A, PHYSIO)
    grant(world, INS_A, DR)
    author = world.doctor(PHYSIO, INS_A, profession="31")
    assert docs_of(author, pid) == {doc}  # R10: unlisted profession, but the author
    forbidden(world.doctor(DR, INS_A).delete(f"DocumentReference/{doc}"))
    assert author.delete(f"DocumentReference/{doc}").status_code == 204


def test_r19_professionals_do_not_rewrite_the_directory(world: World) -> None:
    """Authorship through the directory (R10, R19) and the médecin traitant's profession (R6)
    come from the directory: a professional who could rewrite it would make themselves the
    author of others' documents, or a doctor; a feed only creates documents (R9). The
    administration keeps it."""
    pid = world.seed_patient(INS_A)
    world.seed_practitioner(DR, "10")
    world.seed_practitioner(PHARMACIST, "21")
    doc = world.seed_document(pid, author=None)
    world.store.update(
        {**stored(world, "DocumentReference", doc), "author": [{"reference": f"Practitioner/prat-{DR}"}]}
    )
    grant(world, INS_A, PHARMACIST)
    pharmacist = world.doctor(PHARMACIST, INS_A, profession="21")
    takeover = {
        **stored(world, "Practitioner", f"prat-{DR}"),
        "identifier": [{"system": IDNATPS_SYSTEM, "value": PHARMACIST}],
    }
    forbidden(pharmacist.put(f"Practitioner/prat-{DR}", takeover))
    promoted = stored(world, "Practitioner", f"prat-{PHARMACIST}")
    promoted["qualification"][0]["code"]["coding"][0]["code"] = "10"
    forbidden(pharmacist.put(f"Practitioner/prat-{PHARMACIST}", promoted))
    forbidden(pharmacist.post("Practitioner", {k: v for k, v in takeover.items() if k not in ("id", "meta")}))
    not_found(pharmacist.get(f"DocumentReference/{doc}"))  # class 10, and not theirs
    not_found(pharmacist.delete(f"DocumentReference/{doc}"))
    forbidden(world.as_("TCU", patient=None).put(f"Practitioner/prat-{DR}", takeover))  # R9: documents only
    admin = world.as_("ADM", patient=None)
    assert admin.put(f"Practitioner/prat-{PHARMACIST}", {**promoted, "name": [{"family": "Pharma"}]}).status_code == 200


def test_r19_only_the_author_replaces_a_document(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid, author=DR)
    grant(world, INS_A, DR)
    grant(world, INS_A, DR_2)

    def replacing(author: str) -> dict[str, Any]:
        return document(
            pid, author=author, relatesTo=[{"code": "replaces", "target": {"reference": f"DocumentReference/{doc}"}}]
        )

    forbidden(world.doctor(DR_2, INS_A).post("DocumentReference", replacing(DR_2)))
    forbidden(world.as_("TCU", patient=INS_A).post("DocumentReference", replacing(DR)))
    forbidden(
        world.patient(INS_A).post(
            "DocumentReference",
            {**replacing(DR), "type": document(pid, PATIENT_DOC)["type"], "author": [{"reference": f"Patient/{pid}"}]},
        )
    )
    made = world.doctor(DR, INS_A).post("DocumentReference", replacing(DR))
    assert made.status_code == 201, made.get_data(as_text=True)
    # Changing a document's content in place is the author's only as well.
    current = world.patient(INS_A).get(f"DocumentReference/{doc}").get_json()
    forbidden(world.patient(INS_A).put(f"DocumentReference/{doc}", {**current, "description": "rewritten"}))
    forbidden(world.doctor(DR_2, INS_A).put(f"DocumentReference/{doc}", {**current, "description": "rewritten"}))
    assert (
        world.doctor(DR, INS_A).put(f"DocumentReference/{doc}", {**current, "description": "typo"}).status_code == 200
    )


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r19_the_patient_archives_and_unarchives(world: World, who: str) -> None:
    pid = world.seed_patient(INS_A)
    doc, kept = world.seed_document(pid, author=DR), world.seed_document(pid)
    grant(world, INS_A, DR)
    representative(world, INS_A, REP_1)
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    author = world.doctor(DR, INS_A)
    current = client.get(f"DocumentReference/{doc}").get_json()
    archived = {**current, "extension": [{"url": ARCHIVED, "valueBoolean": True}]}
    forbidden(author.put(f"DocumentReference/{doc}", archived))  # not even the author
    assert client.put(f"DocumentReference/{doc}", archived).status_code == 200
    for reader in (client, author):
        assert docs_of(reader, pid) == {doc, kept}  # archived documents are still returned...
        assert docs_of(reader, pid, "&archived=false") == {kept}  # ...unless archived=false
        assert docs_of(reader, pid, "&archived=true") == {doc}
    unarchive = [{"op": "replace", "path": "/extension/0/valueBoolean", "value": False}]
    forbidden(author.request("PATCH", f"DocumentReference/{doc}", unarchive, headers=JSON_PATCH))
    assert client.request("PATCH", f"DocumentReference/{doc}", unarchive, headers=JSON_PATCH).status_code == 200
    assert docs_of(client, pid, "&archived=false") == {doc, kept}


def test_r19_a_representative_deletes_what_the_patient_authored_only(world: World) -> None:
    pid = world.seed_patient(INS_A)
    representative(world, INS_A, REP_1)
    theirs = world.seed_document(pid, PATIENT_DOC[1], type_system=PATIENT_DOC[0], patient_author=True)
    doctors = world.seed_document(pid, author=DR)
    rep = legrep(world, INS_A, REP_1)
    forbidden(rep.delete(f"DocumentReference/{doctors}"))
    assert rep.delete(f"DocumentReference/{theirs}").status_code == 204
    assert docs_of(world.patient(INS_A), pid) == {doctors}


@pytest.mark.parametrize("role", ["TCU", "ASS", "ADM"])
def test_r19_feeds_staff_and_administration_delete_nothing(world: World, role: str) -> None:
    """They read no document (R9): one they try to delete is not found, as one that does not exist."""
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid, author=DR)
    client = world.as_(role, patient=INS_A)
    refused = issue(client.delete(f"DocumentReference/{doc}"), doc)
    assert refused == issue(client.delete("DocumentReference/nowhere"), "nowhere")
    assert refused[:2] == (404, "not-found")
    assert stored(world, "DocumentReference", doc)["meta"]["versionId"] == "1"


def test_r19_a_deleted_document_and_its_content_are_gone_for_everyone(world: World) -> None:
    """After its author deletes it, a document is gone (410) and out of every search, and its
    content is reached by no one: a Binary is read only through a document one sees."""
    pid = world.seed_patient(INS_A)
    grant(world, INS_A, DR)
    doc = world.seed_document(pid, author=DR, with_binary=True)
    author, patient = world.doctor(DR, INS_A), world.patient(INS_A)
    assert patient.get(f"Binary/bin-{doc}").status_code == 200
    events = len(audit_events(world, INS_A))
    deleted = author.delete(f"DocumentReference/{doc}")
    assert deleted.status_code == 204 and deleted.headers["ETag"] == 'W/"2"'
    assert len(audit_events(world, INS_A)) == events + 1  # the deletion is in the trail
    for reader in (author, patient):
        assert reader.get(f"DocumentReference/{doc}").status_code == 410
        assert docs_of(reader, pid) == set()
        not_found(reader.get(f"Binary/bin-{doc}"))
    assert author.delete(f"DocumentReference/{doc}").status_code == 204  # idempotent (R4 3.1.0.7.1)


def test_r19_a_professional_who_does_not_see_a_document_cannot_tell_it_exists_by_deleting(world: World) -> None:
    pid = world.seed_patient(INS_A)
    grant(world, INS_A, DR_2)
    masked = world.seed_document(pid, author=DR, labels=(MASKED_FROM_PROFESSIONALS,))
    colleague = world.doctor(DR_2, INS_A)
    hidden = issue(colleague.delete(f"DocumentReference/{masked}"), masked)
    assert hidden == issue(colleague.delete("DocumentReference/nowhere"), "nowhere")
    assert hidden[0] == 404


@pytest.mark.parametrize("who", ["PAT", "LEGREP"])
def test_r19_archiving_is_the_archive_flag_and_nothing_else(world: World, who: str) -> None:
    """Archiving by JSON Patch (adding the extension) or by PUT; with a masking label too (both
    the patient's, R18); not with any other change (the author's only); never for a document
    hidden from the patient, nor by anyone else."""
    pid = world.seed_patient(INS_A)
    grant(world, INS_A, DR)
    representative(world, INS_A, REP_1)
    doc, other = world.seed_document(pid, author=DR), world.seed_document(pid, author=DR)
    hidden = world.seed_document(pid, author=DR, labels=(INVISIBLE_TO_PATIENT,))
    client = world.patient(INS_A) if who == "PAT" else legrep(world, INS_A, REP_1)
    archive = [{"op": "add", "path": "/extension", "value": [{"url": ARCHIVED, "valueBoolean": True}]}]
    assert client.request("PATCH", f"DocumentReference/{doc}", archive, headers=JSON_PATCH).status_code == 200
    current = client.get(f"DocumentReference/{other}").get_json()
    flagged = {**current, "extension": [{"url": ARCHIVED, "valueBoolean": True}]}
    forbidden(client.put(f"DocumentReference/{other}", {**flagged, "description": "archivé et renommé"}))
    masked = {
        **flagged,
        "securityLabel": [
            *current["securityLabel"],
            {"coding": [{"system": VISIBILITY_SYSTEM, "code": MASKED_FROM_PROFESSIONALS}]},
        ],
    }
    assert client.put(f"DocumentReference/{other}", masked).status_code == 200
    not_found(client.request("PATCH", f"DocumentReference/{hidden}", archive, headers=JSON_PATCH))
    author = world.doctor(DR, INS_A)
    forbidden(author.request("PATCH", f"DocumentReference/{hidden}", archive, headers=JSON_PATCH))  # R19
    for role in ("TCU", "ASS"):  # who read no document (R9)
        not_found(
            world.as_(role, patient=INS_A).request("PATCH", f"DocumentReference/{hidden}", archive, headers=JSON_PATCH)
        )
    assert docs_of(client, pid, "&archived=true") == {doc, other}
    assert docs_of(client, pid, "&archived=false") == set()
    assert docs_of(author, pid, "&archived=false") == {hidden}  # what they see, not archived
    assert stored(world, "DocumentReference", other).get("description") is None


def issue(response: TestResponse, rid: str) -> tuple[int, str, str]:
    """Status, code and message of a refusal about ``rid``, for comparing two of them."""
    body = response.get_json()
    return response.status_code, body["issue"][0]["code"], body["issue"][0]["diagnostics"].replace(rid, "…")


# -- R20 lifecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "status"), [("HCP", 201), ("ADM", 201), ("PAT", 403), ("ASS", 403), ("TCU", 403)])
def test_r20_who_creates_a_dmp(world: World, role: str, status: int) -> None:
    if role == "HCP":
        client = world.doctor(DR, INS_NEW)
    elif role == "PAT":
        client = world.patient(INS_NEW)
    else:
        client = world.as_(role, patient=INS_NEW)
    response = client.post("Patient", new_patient(INS_NEW))
    assert_status(response, status, None if status == 201 else "forbidden")
    found = world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, INS_NEW)), OPEN_SCOPE).total
    assert found == (1 if status == 201 else 0)
    if status == 201:
        assert_status(client.post("Patient", new_patient(INS_NEW)), 409)  # one DMP per patient


class _RolledBack(Exception):
    """Ends a test's transaction without committing it."""


@pytest.mark.parametrize(
    ("role", "sub", "person", "status"),
    [
        ("PAT", INS_NEW, INS_NEW, 201),  # the patient whose code was consumed
        ("PAT", INS_B, INS_NEW, 403),  # someone else's token about that patient
        ("LEGREP", INS_B, INS_NEW, 403),  # a representative (R20 wants them recorded by a professional)
        ("PAT", INS_B, INS_B, 403),  # another patient, whose code was not consumed
    ],
)
def test_r20_a_patient_creates_their_dmp_only_with_a_code_consumed_in_the_same_transaction(
    world: World, role: str, sub: str, person: str, status: int
) -> None:
    client = world.as_(role, patient=person, sub=sub, scope="patient/*.cruds")
    with pytest.raises(_RolledBack), world.store.transaction():  # the test client runs on this thread
        mark_consumed(world.store, (INS_SYSTEM, INS_NEW), world.clock.now.timestamp())
        assert_status(client.post("Patient", new_patient(person)), status, None if status == 201 else "forbidden")
        raise _RolledBack
    forbidden(client.post("Patient", new_patient(person)))  # without a consumed code, never
    assert world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, person)), OPEN_SCOPE).total == 0


def test_r20_a_minors_dmp_needs_a_representative_in_the_same_request(world: World) -> None:
    creator = world.doctor(DR, INS_MINOR)
    business_rule(creator.post("Patient", new_patient(INS_MINOR, minor_birth_date(world, 400))))
    assert world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, INS_MINOR)), OPEN_SCOPE).total == 0
    assert consents_in_store(world, INS_MINOR) == []
    events = audit_events(world, INS_MINOR)
    assert len(events) == 1 and events[0]["outcome"] == "4"
    admin = world.as_("ADM", patient=INS_MINOR)
    business_rule(admin.post("Patient", new_patient(INS_MINOR, minor_birth_date(world, 400))))
    assert world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, INS_MINOR)), OPEN_SCOPE).total == 0


def test_r20_a_dmp_is_closed_never_deleted(world: World) -> None:
    pid = world.seed_patient(INS_A)
    doc = world.seed_document(pid)
    grant(world, INS_A, DR)
    patient = world.patient(INS_A)
    for client in (patient, world.doctor(DR, INS_A), world.as_("ADM", patient=INS_A)):
        forbidden(client.delete(f"Patient/{pid}"))
    today = world.clock.now.date()
    forbidden(world.as_("TCU", patient=INS_A).put(f"Patient/{pid}", closed(stored(world, "Patient", pid), today)))
    current = patient.get(f"Patient/{pid}").get_json()
    closing = patient.put(f"Patient/{pid}", closed(current, today))
    assert closing.status_code == 200, closing.get_data(as_text=True)
    forbidden(world.doctor(DR, INS_A).get(f"DocumentReference/{doc}"))
    assert stored(world, "DocumentReference", doc)["id"] == doc  # kept


def test_r20_a_professional_closes_at_the_patients_request(world: World) -> None:
    pid = world.seed_patient(INS_A)
    grant(world, INS_A, DR)
    doctor = world.doctor(DR, INS_A)
    today = world.clock.now.date()
    forbidden(world.doctor(DR_OUT, INS_A).put(f"Patient/{pid}", closed(stored(world, "Patient", pid), today)))
    assert doctor.put(f"Patient/{pid}", closed(stored(world, "Patient", pid), today)).status_code == 200
    forbidden(doctor.get(f"Patient/{pid}"))
    reopening = world.patient(INS_A).put(f"Patient/{pid}", reopened(stored(world, "Patient", pid)))
    assert reopening.status_code == 200
