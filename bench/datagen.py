"""Synthetic, DMP-like data: Patients with an INS, Practitioners with an RPPS, DocumentReferences.

Everything is generated lazily from a seeded :class:`random.Random`, one resource at a time, so a
million documents never sit in memory together and two runs with the same seed load the same
data. Values follow what the DMP actually stores (LOINC document types, the ASIP class codes,
confidentiality labels, PDF attachments), so that the index tables get realistic cardinalities.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.dmp.documents.codes import TYPE_TO_CLASS
from fhir_server.runtime.config import PROJECT_ROOT
from fhirmodel.ins import with_key
from fhirmodel.terminology import Terminology

LOINC = "http://loinc.org"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FACILITY_TYPE = "urn:oid:1.2.250.1.213.1.1.4.9"
PRACTICE_SETTING = "urn:oid:1.2.250.1.213.1.1.4.2.239"
IHE_FORMAT = "urn:oid:1.3.6.1.4.1.19376.1.2.3"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
MASQUE_PS = "MASQUE_PS"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
#: A type of class 60 (remboursement): a doctor reads it, a nurse does not (authorisation matrix, R10).
REIMBURSEMENT = ("REMB", "Données de remboursement")

#: LOINC document types seen in the DMP (code, display). All are in JDV_J07 and in the type → class
#: map of ``ig/`` (JDV_J66): a type the map does not know is readable by no profession (R10), so a
#: doctor's search would silently miss those documents (18842-5, 34117-2 and the misspelt 34874-1 did).
DOC_TYPES: tuple[tuple[str, str], ...] = (
    ("11488-4", "Compte rendu de consultation"),
    ("34133-9", "Synthèse d'épisode de soins"),
    ("11490-0", "Lettre de liaison à la sortie d'un établissement de soins"),
    ("60591-5", "Synthèse médicale"),
    ("11506-3", "Compte rendu d'évolution"),
    ("57833-6", "Prescription de produits de santé"),
    ("11502-2", "Compte rendu d'examens biologiques"),
    ("34112-3", "Compte rendu hospitalier (séjour)"),
    ("18748-4", "Compte rendu d'imagerie médicale"),
    ("52040-3", "Compte rendu de traitement"),
    ("75492-9", "Compte rendu de réunion de concertation pluridisciplinaire"),
    ("57828-6", "Prescription"),
    ("56445-0", "Bilan médicamenteux"),
    ("87273-9", "Note de vaccination"),
    ("34874-8", "Compte rendu opératoire"),
)
#: The type → class map of ``ig/``: a document's category is its type's class, or the server refuses
#: it (CONTRACT §5).
_TERMINOLOGY = Terminology.load(PROJECT_ROOT / "ig" / "ConceptMap")


def classes_of(system: str, code: str) -> list[tuple[str, str]]:
    """The DMP class(es) of a document type, as (system, code)."""
    return sorted(_TERMINOLOGY.translate(TYPE_TO_CLASS, system, code))


#: Confidentiality label and its weight: most documents are Normal, a few Restricted / Very restricted.
CONFIDENTIALITY_WEIGHTS: tuple[tuple[str, int], ...] = (("N", 90), ("R", 8), ("V", 2))
FACILITIES: tuple[tuple[str, str], ...] = (
    ("SA01", "Etablissement public de santé"),
    ("SA07", "Cabinet individuel"),
    ("SA05", "Centre de santé"),
)
SETTINGS: tuple[tuple[str, str], ...] = (("ETABLISSEMENT", "Etablissement de santé"), ("CABINET", "Cabinet libéral"))

#: Documents are dated over the ten years before this instant (fixed, so runs are reproducible).
END = datetime(2025, 6, 30, tzinfo=UTC)
SPAN_SECONDS = 10 * 365 * 24 * 3600
FAMILIES = ("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY", "MOREAU")
GIVEN = ("Jean", "Marie", "Pierre", "Nathalie", "Michel", "Isabelle", "Philippe", "Sylvie", "Alain", "Catherine")


def patient_id(index: int) -> str:
    """Patients get predictable ids so documents can reference them without a lookup table."""
    return f"pat-{index:07d}"


def patient_ins(index: int) -> tuple[str, str]:
    """The (system, value) pair tokens and Consents name the patient by."""
    return INS_NIR, ins(index)


def patient_index_of(doc: dict[str, Any]) -> int:
    """The index of the patient a generated document is about (its ``subject``)."""
    return int(doc["subject"]["reference"].rsplit("-", 1)[1])


def practitioner_id(index: int) -> str:
    return f"prat-{index:05d}"


def ins(index: int) -> str:
    """A valid INS (CONTRACT §3): sex, birth year and month, department (Corsica's 2A/2B in place of
    20), the index (unique below a million), and the NIR's key."""
    sex = 1 + index % 2
    year = 40 + index % 60
    month = 1 + index % 12
    department = f"{1 + index % 95:02d}".replace("20", "2A" if index % 2 else "2B")
    return with_key(f"{sex}{year:02d}{month:02d}{department}{index % 1_000_000:06d}")


def make_patient(index: int) -> dict[str, Any]:
    nir = ins(index)
    return {
        "resourceType": "Patient",
        "id": patient_id(index),
        "identifier": [
            {
                "use": "official",
                "type": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.4.6", "code": "INS-NIR"}]},
                "system": INS_NIR,
                "value": nir,
            }
        ],
        "name": [{"use": "official", "family": FAMILIES[index % 10], "given": [GIVEN[(index // 10) % 10]]}],
        "gender": "male" if nir[0] == "1" else "female",
        "birthDate": f"19{nir[1:3]}-{nir[3:5]}-{1 + index % 28:02d}",
    }


def make_practitioner(index: int) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": practitioner_id(index),
        "identifier": [{"system": RPPS, "value": f"8{10_000_000_000 + index:010d}"[-11:]}],
        "name": [{"family": FAMILIES[(index * 7) % 10], "given": [GIVEN[index % 10]], "prefix": ["Dr"]}],
    }


def fhir_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def random_date(rng: random.Random) -> datetime:
    return END - timedelta(seconds=rng.randrange(SPAN_SECONDS))


def _coding(system: str, pair: tuple[str, str]) -> dict[str, str]:
    return {"system": system, "code": pair[0], "display": pair[1]}


def _confidentiality(rng: random.Random) -> str:
    codes = [c for c, _ in CONFIDENTIALITY_WEIGHTS]
    weights = [w for _, w in CONFIDENTIALITY_WEIGHTS]
    return rng.choices(codes, weights)[0]


def _attachment(rng: random.Random, doc_type: tuple[str, str], created: datetime) -> dict[str, Any]:
    """A PDF held elsewhere: most by ``urn:uuid`` (IHE MHD style), some as a Binary reference."""
    content_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    url = f"urn:uuid:{content_id}" if rng.random() < 0.8 else f"Binary/{content_id}"
    return {
        "contentType": "application/pdf",
        "language": "fr-FR",
        "url": url,
        "size": rng.randrange(20_000, 2_000_000),
        "hash": base64.b64encode(rng.randbytes(20)).decode("ascii"),
        "title": doc_type[1],
        "creation": fhir_instant(created),
    }


@dataclass(frozen=True)
class Population:
    """How many patients and practitioners the documents are spread over."""

    patients: int
    practitioners: int


def make_document(
    rng: random.Random,
    pop: Population,
    doc_id: str | None = None,
    *,
    patient: int | None = None,
    doc_type: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """One DMP-like DocumentReference for ``patient`` (default: a random one); ``id`` only when the
    caller chose it; ``doc_type`` (system, code, display) overrides the random LOINC type."""
    system, code, display = doc_type or (LOINC, *rng.choice(DOC_TYPES))
    created = random_date(rng)
    subject = rng.randrange(pop.patients) if patient is None else patient
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.{rng.getrandbits(48)}"},
        "status": "current",
        "type": {"coding": [_coding(system, (code, display))]},
        "category": [{"coding": [{"system": s, "code": c} for s, c in classes_of(system, code)]}],
        "subject": {"reference": f"Patient/{patient_id(subject)}"},
        "date": fhir_instant(created),
        "author": [{"reference": f"Practitioner/{practitioner_id(rng.randrange(pop.practitioners))}"}],
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": _confidentiality(rng)}]}],
        "content": [
            {
                "attachment": _attachment(rng, (code, display), created),
                "format": {"system": IHE_FORMAT, "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"},
            }
        ],
        "context": {
            "period": {"start": fhir_instant(created - timedelta(days=rng.randrange(0, 5)))},
            "facilityType": {"coding": [_coding(FACILITY_TYPE, rng.choice(FACILITIES))]},
            "practiceSetting": {"coding": [_coding(PRACTICE_SETTING, rng.choice(SETTINGS))]},
        },
    }
    if doc_id is not None:
        doc["id"] = doc_id
    return doc


def random_uuid(rng: random.Random) -> str:
    """A uuid4 from the seeded generator: reproducible ids for the in-process loader."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def documents(rng: random.Random, pop: Population, count: int, *, with_ids: bool) -> Iterator[dict[str, Any]]:
    """Stream ``count`` documents; never materialises the whole set."""
    for _ in range(count):
        yield make_document(rng, pop, random_uuid(rng) if with_ids else None)


def practitioners(pop: Population) -> Iterator[dict[str, Any]]:
    """The directory the documents' authors point at."""
    for i in range(pop.practitioners):
        yield make_practitioner(i)


def patients(pop: Population) -> Iterator[dict[str, Any]]:
    for i in range(pop.patients):
        yield make_patient(i)


def reference_resources(pop: Population) -> Iterator[dict[str, Any]]:
    """Practitioners then Patients, the resources documents point at."""
    yield from practitioners(pop)
    yield from patients(pop)


@dataclass(frozen=True)
class BigPatient:
    """One extra patient with many documents, some hidden from professionals.

    Which documents are masked or of a type the nurse may not read follows from their position, so
    the expected totals are exact: every 10th is ``MASQUE_PS`` (hidden from every professional but
    its author and the médecin traitant, R11) and every 20th, shifted so the two never overlap, is
    of type ``REMB`` (class 60, denied to nurses by the matrix, R10).
    """

    index: int
    documents: int

    @staticmethod
    def masked_at(position: int) -> bool:
        return position % 10 == 0

    @staticmethod
    def reimbursement_at(position: int) -> bool:
        return position % 20 == 5

    @property
    def masked(self) -> int:
        return sum(1 for j in range(self.documents) if self.masked_at(j))

    @property
    def reimbursements(self) -> int:
        return sum(1 for j in range(self.documents) if self.reimbursement_at(j))

    @property
    def doctor_sees(self) -> int:
        """A doctor reads every type here (REMB included) but no masked document."""
        return self.documents - self.masked

    @property
    def nurse_sees(self) -> int:
        return self.documents - self.masked - self.reimbursements

    def documents_of(self, rng: random.Random, pop: Population, *, with_ids: bool) -> Iterator[dict[str, Any]]:
        """The big patient's documents, labels included (the HTTP loader has the patient set them)."""
        for position in range(self.documents):
            doc_type = (TRE_A05, *REIMBURSEMENT) if self.reimbursement_at(position) else None
            doc_id = random_uuid(rng) if with_ids else None
            doc = make_document(rng, pop, doc_id, patient=self.index, doc_type=doc_type)
            if self.masked_at(position):
                doc["securityLabel"].append(masque_ps_label())
            yield doc


def masque_ps_label() -> dict[str, Any]:
    return {"coding": [{"system": VISIBILITY, "code": MASQUE_PS}]}


def is_masked(doc: dict[str, Any]) -> bool:
    return masque_ps_label() in doc.get("securityLabel", [])


def unmasked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as a professional submits it: only the patient sets ``MASQUE_PS`` (R18)."""
    return {**doc, "securityLabel": [label for label in doc["securityLabel"] if label != masque_ps_label()]}
