"""A small DMP world checked exhaustively: every actor × patient × purpose, against an oracle.

The oracle restates DMP-RULES.md R2–R13 in the plainest Python, reading the authorisation matrix
CSV itself, so that it shares no code with the policy it checks. For each combination the test
asks the server for the patient's documents and compares the outcome (403, or exactly which
documents, with the right total) with the oracle's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from authz.terms import (
    ACCESS,
    BLOCK,
    BREAK_THE_GLASS,
    IDNATPS_SYSTEM,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    MASKED_FROM_PROFESSIONALS,
    MEDECIN_TRAITANT,
    NORMAL,
    REGULATION_CENTRE,
    REPRESENTATIVE,
)
from tests.dmp import CR_CONSULTATION, FINESS, INS_SYSTEM, LOINC, SYNTHESE, World
from tests.paths import ROOT, SHARED_DATA

TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
DOC_TYPES = {  # label → (system, code)
    "cr": (LOINC, CR_CONSULTATION),
    "synthese": (LOINC, SYNTHESE),
    "remb": (TRE_A05, "REMB"),
    "gestion": (TRE_A05, "ATTEST-RESID"),
    "patient": (TRE_A05, "EXPPAT_1"),
}


def _matrix() -> dict[str, dict[str, bool]]:
    """profession → {type code → may read}, straight from the CSVs (R10)."""
    classes = {}
    with (SHARED_DATA / "terminology" / "document-types-J66-with-class.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            classes[row["type_code"]] = row["class_code_TRE_A03"]
    rules: dict[str, dict[tuple[str, str], bool]] = {}
    with (ROOT / "ig" / "authorisation" / "authorisation-matrix.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rules.setdefault(row["profession_code"], {})[(row["class_code"], row["type_code"])] = (
                row["access"] == "allow"
            )
    out: dict[str, dict[str, bool]] = {}
    for profession, table in rules.items():
        out[profession] = {}
        for _system, code in DOC_TYPES.values():
            cls = classes.get(code)
            by_type = [allowed for (c, t), allowed in table.items() if t == code and c in ("*", cls)]
            out[profession][code] = by_type[0] if by_type else table.get((cls or "", "*"), False)
    return out


MATRIX = _matrix()


@dataclass(frozen=True)
class Doc:
    id: str
    kind: str
    author: str | None = None  # idNatPs
    by_patient: bool = False
    labels: tuple[str, ...] = ()


@dataclass
class Person:
    ins: str
    minor: bool = False
    closed: bool = False
    docs: list[Doc] = field(default_factory=list)


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    idnatps: str | None = None
    profession: str | None = None
    organization: str | None = None
    ins: str | None = None  # PAT and LEGREP


ESTABLISHMENT = "330780038"
ADULT, MINOR, CLOSED, OTHER = "180017500000134", "215067500000247", "170017500000337", "190017500000426"
REPRESENTATIVE_INS = "270017500000582"

ACTORS = [
    Actor("granted-doctor", "HCP", "810000000001", "10"),
    Actor("team-doctor", "HCP", "810000000002", "10", organization=f"{FINESS}|{ESTABLISHMENT}"),
    Actor("blocked-doctor", "HCP", "810000000003", "10"),
    Actor("expired-doctor", "HCP", "810000000004", "10"),
    Actor("medecin-traitant", "HCP", "810000000005", "10"),
    Actor("granted-nurse", "HCP", "810000000006", "60"),
    Actor("granted-pharmacist", "HCP", "810000000007", "21"),
    Actor("stranger-doctor", "HCP", "810000000008", "10"),
    Actor("stranger-nurse", "HCP", "810000000009", "60"),
    Actor("unlisted-profession", "HCP", "810000000010", "32"),
    Actor("author-no-grant", "HCP", "810000000011", "10"),
    Actor("receptionist", "ASS"),
    Actor("insurer-feed", "TCU"),
    Actor("support", "ADM"),
    Actor("adult-patient", "PAT", ins=ADULT),
    Actor("minor-patient", "PAT", ins=MINOR),
    Actor("closed-patient", "PAT", ins=CLOSED),
    Actor("representative", "LEGREP", ins=REPRESENTATIVE_INS),
]
PURPOSES = (NORMAL, BREAK_THE_GLASS, REGULATION_CENTRE)

GRANTED = {
    "granted-doctor",
    "granted-nurse",
    "granted-pharmacist",
    "unlisted-profession",
    "blocked-doctor",
    "medecin-traitant",
}


def _documents(prefix: str, *, minor: bool = False) -> list[Doc]:
    docs = [
        Doc(f"{prefix}-cr", "cr", author="810000000011"),
        Doc(f"{prefix}-synthese", "synthese", author="899700000001"),
        Doc(f"{prefix}-remb", "remb", author=None),
        Doc(f"{prefix}-gestion", "gestion", author="899700000001"),
        Doc(f"{prefix}-masked", "cr", author="899700000001", labels=(MASKED_FROM_PROFESSIONALS,)),
        Doc(f"{prefix}-masked-own", "cr", author="810000000006", labels=(MASKED_FROM_PROFESSIONALS,)),
        Doc(f"{prefix}-not-for-patient", "synthese", author="899700000001", labels=(INVISIBLE_TO_PATIENT,)),
        Doc(f"{prefix}-by-patient", "patient", by_patient=True),
    ]
    if minor:
        docs.append(
            Doc(f"{prefix}-not-for-parents", "cr", author="899700000001", labels=(INVISIBLE_TO_REPRESENTATIVES,))
        )
    return docs


PEOPLE = {
    ADULT: Person(ADULT, docs=_documents("a")),
    MINOR: Person(MINOR, minor=True, docs=_documents("m", minor=True)),
    CLOSED: Person(CLOSED, closed=True, docs=_documents("c")),
    OTHER: Person(OTHER, docs=_documents("o")),
}


def oracle(actor: Actor, person: Person, purpose: str) -> set[str] | None:
    """The documents ``actor`` reads in ``person``'s DMP, or None for a 403 (R2–R13)."""
    docs = person.docs
    if actor.role in ("ASS", "TCU", "ADM"):
        return None  # R9
    if person.closed:
        return None  # R2: documents are out of reach of everyone once closed
    if actor.role == "PAT":
        if actor.ins != person.ins or person.minor:
            return None  # R1, R7 (the minor has a representative)
        return {d.id for d in docs if INVISIBLE_TO_PATIENT not in d.labels}
    if actor.role == "LEGREP":
        if person.ins != MINOR:
            return None  # R8
        hidden = {INVISIBLE_TO_PATIENT, INVISIBLE_TO_REPRESENTATIVES}
        return {d.id for d in docs if not hidden & set(d.labels)}
    # HCP, only the adult and the minor have decisions about professionals
    me = actor.name
    blocked = person.ins == ADULT and me == "blocked-doctor"
    if blocked:
        return None  # R4
    granted = person.ins == ADULT and (me in GRANTED or me == "team-doctor")
    mt = person.ins == ADULT and me == "medecin-traitant"
    if not granted:
        emergency = purpose == BREAK_THE_GLASS or (purpose == REGULATION_CENTRE and actor.profession == "10")
        opposed = person.ins == ADULT and purpose == REGULATION_CENTRE  # the adult opposed centre_15
        if not emergency or opposed:
            return None
    seen = set()
    for d in docs:
        if d.author == actor.idnatps:
            seen.add(d.id)  # R10: the author always sees it
            continue
        readable = MATRIX.get(actor.profession or "", {}).get(DOC_TYPES[d.kind][1], False)
        if readable and (mt or MASKED_FROM_PROFESSIONALS not in d.labels):
            seen.add(d.id)
    return seen


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(Path(tmp_path_factory.mktemp("world")))
    for person in PEOPLE.values():
        pid = w.seed_patient(
            person.ins, birth_date="2015-06-21" if person.minor else "1980-01-17", active=not person.closed
        )
        for d in person.docs:
            system, code = DOC_TYPES[d.kind]
            w.seed_document(
                pid,
                code,
                type_system=system,
                author=d.author,
                patient_author=d.by_patient,
                labels=d.labels,
                doc_id=d.id,
            )
    for name in GRANTED:
        actor = next(a for a in ACTORS if a.name == name)
        w.seed_consent(ACCESS, ADULT, (IDNATPS_SYSTEM, actor.idnatps or ""))
    w.seed_consent(ACCESS, ADULT, (FINESS, ESTABLISHMENT))
    w.seed_consent(BLOCK, ADULT, (IDNATPS_SYSTEM, "810000000003"), permit=False)
    w.seed_consent(MEDECIN_TRAITANT, ADULT, (IDNATPS_SYSTEM, "810000000005"))
    w.seed_consent(
        ACCESS,
        ADULT,
        (IDNATPS_SYSTEM, "810000000004"),
        start=w.clock.now - timedelta(days=400),
        until=w.clock.now - timedelta(days=35),
    )
    w.set_emergency(ADULT, REGULATION_CENTRE, permit=False)
    w.seed_consent(REPRESENTATIVE, MINOR, (INS_SYSTEM, REPRESENTATIVE_INS), until=w.clock.now + timedelta(days=3000))
    yield w
    w.close()


CASES = [
    (a, p, purpose) for a in ACTORS for p in PEOPLE for purpose in PURPOSES if a.role == "HCP" or purpose == NORMAL
]


@pytest.mark.parametrize(("actor", "ins", "purpose"), CASES, ids=lambda v: getattr(v, "name", v))
def test_every_actor_patient_purpose(world: World, actor: Actor, ins: str, purpose: str) -> None:
    person = PEOPLE[ins]
    claims: dict[str, str] = {"purpose": purpose}
    if actor.idnatps:
        claims["idnatps"] = actor.idnatps
    if actor.profession:
        claims["profession"] = actor.profession
    if actor.organization:
        claims["organization"] = actor.organization
    client = world.as_(actor.role, patient=ins, sub=actor.ins or actor.idnatps or actor.name, **claims)
    expected = oracle(actor, person, purpose)
    response = client.get(f"DocumentReference?patient=pat-{ins}&_count=100")
    if expected is None:
        assert response.status_code == 403, response.get_data(as_text=True)
        assert response.get_json()["issue"][0]["code"] == "forbidden"
        return
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    got = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert got == expected
    assert bundle["total"] == len(expected)
    hidden = {d.id for d in person.docs} - expected
    for doc_id in sorted(hidden)[:2]:  # a direct read of a hidden document is "not found"
        assert client.get(f"DocumentReference/{doc_id}").status_code == 404


def test_the_world_exercises_every_outcome() -> None:
    """The oracle's answers are not trivial: refusals, full views and partial views all occur."""
    outcomes = [oracle(a, PEOPLE[p], purpose) for a, p, purpose in CASES]
    refused = sum(o is None for o in outcomes)
    partial = sum(
        o is not None and 0 < len(o) < len(PEOPLE[p].docs) for o, (_, p, _) in zip(outcomes, CASES, strict=True)
    )
    assert refused > 20 and partial > 10
    assert len(CASES) > 100
