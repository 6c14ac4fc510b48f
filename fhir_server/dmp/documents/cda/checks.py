"""Metadata that contradicts its document is refused: the DMP decides who reads a document from
its DocumentReference (patient, type, author), so a mismatch would show it to the wrong people or
hide it from the right ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from authz.terms import (
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
)
from fhir_server.dmp.documents.cda.model import CdaDocument, Identifier
from fhir_server.dmp.documents.cda.safe_xml import shorten

# -------------------------------------------------------------------------- consistency


def check_against(doc: CdaDocument, reference: dict[str, Any], patient_ins: Identifier | None = None) -> list[str]:
    """What a submitted DocumentReference says that its CDA contradicts, one message per element.

    ``patient_ins`` is the INS of the stored Patient the DocumentReference's subject refers to;
    without it the INS is read from the subject itself (identifier, ``Patient?identifier=``
    conditional reference, contained Patient). An element the DocumentReference leaves out is not
    a disagreement: the CDA can fill it in. Malformed elements are skipped (validation reports
    them).
    """
    contained = {
        f"#{item['id']}": item
        for item in map(_dict, _list(reference.get("contained")))
        if isinstance(item.get("id"), str)
    }
    return [
        *_master_identifier_problems(doc, reference),
        *_patient_problems(doc, reference, contained, patient_ins),
        *_type_problems(doc, reference),
        *_author_problems(doc, reference, contained),
    ]


def _master_identifier_problems(doc: CdaDocument, reference: dict[str, Any]) -> list[str]:
    """IHE: masterIdentifier is the document's uniqueId, which for a CDA is ClinicalDocument/id."""
    value = _dict(reference.get("masterIdentifier")).get("value")
    if not isinstance(value, str) or _bare_uid(value) == _bare_uid(doc.document_id):
        return []
    return [f"DocumentReference.masterIdentifier: {shorten(value, 80)} but the CDA's id is {doc.document_id}"]


def _bare_uid(value: str) -> str:
    return value.strip().removeprefix("urn:oid:").removeprefix("urn:uuid:").lower()


def _patient_problems(
    doc: CdaDocument, reference: dict[str, Any], contained: dict[str, dict[str, Any]], patient_ins: Identifier | None
) -> list[str]:
    source = _dict(_dict(reference.get("context")).get("sourcePatientInfo"))
    subject = [patient_ins] if patient_ins else _subject_ins(reference.get("subject"), contained)
    claims = {
        "DocumentReference.subject": subject,
        "DocumentReference.context.sourcePatientInfo": _contained_ins(source.get("reference"), contained),
    }
    if doc.patient_ins:
        cda = f"{doc.patient_ins[0]}|{doc.patient_ins[1]}"
    else:
        cda = "nothing (no INS in recordTarget/patientRole/id)"
    return [
        f"{element}: INS {ins[0][0]}|{ins[0][1]} but the CDA says {cda}"
        for element, ins in claims.items()
        if ins and doc.patient_ins not in ins
    ]


def _subject_ins(subject: Any, contained: dict[str, dict[str, Any]]) -> list[Identifier]:
    """The INS a subject names: as an identifier, in a conditional reference, or contained."""
    subject = _dict(subject)
    found = _ins_of([subject.get("identifier")])
    reference = subject.get("reference")
    if isinstance(reference, str) and reference.startswith("Patient?"):
        queried = [value for key, value in parse_qsl(reference.partition("?")[2]) if key == "identifier"]
        found += _ins_of({"system": system, "value": value} for system, _, value in (q.partition("|") for q in queried))
    return found + _contained_ins(reference, contained)


def _contained_ins(reference: Any, contained: dict[str, dict[str, Any]]) -> list[Identifier]:
    target = _target(reference, contained)
    if target.get("resourceType") != "Patient":
        return []
    return _ins_of(_list(target.get("identifier")))


def _ins_of(identifiers: Iterable[Any]) -> list[Identifier]:
    return [
        (i["system"], i["value"])
        for i in map(_dict, identifiers)
        if i.get("system") in INS_SYSTEMS and isinstance(i.get("value"), str)
    ]


def _type_problems(doc: CdaDocument, reference: dict[str, Any]) -> list[str]:
    codings = [c for c in map(_dict, _list(_dict(reference.get("type")).get("coding"))) if c]
    system, code, _ = doc.type_code
    if not codings or any((c.get("system"), c.get("code")) == (system, code) for c in codings):
        return []
    same_system = [c for c in codings if c.get("system") == system]
    if same_system:
        return [f"DocumentReference.type: {same_system[0].get('code')} but the CDA says {code}"]
    first = codings[0]
    return [f"DocumentReference.type: {first.get('system')}|{first.get('code')} but the CDA says {system}|{code}"]


def _author_problems(doc: CdaDocument, reference: dict[str, Any], contained: dict[str, dict[str, Any]]) -> list[str]:
    claimed = _author_idnatps(reference, contained)
    ours = {author.idnatps for author in doc.authors if author.idnatps}
    if not claimed or claimed & ours:
        return []
    theirs = f"are {', '.join(sorted(ours))}" if ours else "have no idNatPs (author/assignedAuthor/id)"
    return [f"DocumentReference.author: idNatPs {', '.join(sorted(claimed))} but the CDA's authors {theirs}"]


def _author_idnatps(reference: dict[str, Any], contained: dict[str, dict[str, Any]]) -> set[str]:
    """The idNatPs a DocumentReference names as author: inline, on a contained Practitioner or
    PractitionerRole, or on the Practitioner a contained PractitionerRole points at."""
    found: set[str] = set()
    for author in map(_dict, _list(reference.get("author"))):
        targets = [author, _target(author.get("reference"), contained)]
        if targets[1].get("resourceType") == "PractitionerRole":
            practitioner = _dict(targets[1].get("practitioner"))
            targets += [practitioner, _target(practitioner.get("reference"), contained)]
        for target in targets:
            identifiers = target.get("identifier")
            for identifier in map(_dict, identifiers if isinstance(identifiers, list) else [identifiers]):
                if identifier.get("system") == IDNATPS_SYSTEM and isinstance(identifier.get("value"), str):
                    found.add(identifier["value"])
    return found


def _target(reference: Any, contained: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return contained.get(reference, {}) if isinstance(reference, str) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
