"""The DocumentReference the French PDSm profile expects, derived from a CDA header (ITI-106, and
the minimal metadata ITI-65 leaves out). Where each header element goes follows the CI-SIS and the
ANS PDSm examples (``ans.fhir.fr.pdsm4dmp``); the type → class map is the ConceptMap in ``ig/``.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.terms import (
    INS_SYSTEMS,
)
from fhir_server.dmp.documents.cda.header import (
    CONCEPT_MAP,
    CONFIDENTIALITY_DISPLAYS,
    URI_SYSTEM,
)
from fhir_server.dmp.documents.cda.model import CdaAuthor, CdaDocument, CdaName, CdaOrganization, Code, Identifier
from fhir_server.runtime.config import PROJECT_ROOT

# -------------------------------------------------------------------------- ig/ terminology


@dataclass(frozen=True)
class _TypeClasses:
    class_system: str
    classes: dict[tuple[str, str], tuple[str, str | None]]  # (type system, type code) -> class


@functools.cache
def _type_classes(ig_dir: Path) -> _TypeClasses:
    """The DMP class (TRE_A03) of each DMP document type, from the JDV_J66 ConceptMap in ``ig/``;
    ``unmatched`` types have none."""
    concept_map = json.loads((ig_dir / CONCEPT_MAP).read_text(encoding="utf-8"))
    classes: dict[tuple[str, str], tuple[str, str | None]] = {}
    class_system = ""
    for group in concept_map.get("group") or []:
        class_system = group.get("target") or class_system
        for element in group.get("element") or []:
            target = next((t for t in element.get("target") or [] if t.get("equivalence") != "unmatched"), None)
            if target and target.get("code"):
                classes[(group["source"], element["code"])] = (target["code"], target.get("display"))
    return _TypeClasses(class_system, classes)


# -------------------------------------------------------------------------- DocumentReference


def document_reference_from_cda(
    doc: CdaDocument,
    *,
    patient_reference: dict[str, Any],
    binary_url: str,
    size: int,
    sha1_b64: str,
    content_type: str = "text/xml",
    ig_dir: Path | None = None,
) -> dict[str, Any]:
    """An R4 DocumentReference in the French PDSm shape describing ``doc``, stored at ``binary_url``.

    Authors become contained resources (a PractitionerRole carrying the idNatPs, pointing at a
    Practitioner and an Organization; a Device for software authors; a Patient for the patient), as
    the PDSm examples and the DMP's authorship rules (author-identifier) expect.
    """
    contained = _Contained()
    source_patient = contained.source_patient(doc)
    authors, roles = _authors(doc, contained)
    resource: dict[str, Any] = {"resourceType": "DocumentReference"}
    body: dict[str, Any] = {
        "masterIdentifier": {"system": URI_SYSTEM, "value": doc.document_id},
        "status": "current",
        "type": _concept(doc.type_code),
        "category": _category(doc.type_code, ig_dir or PROJECT_ROOT / "ig"),
        "subject": copy.deepcopy(patient_reference),
        "date": doc.effective_time if "T" in doc.effective_time else None,
        "author": authors or None,
        "authenticator": _authenticator(doc.legal_authenticator, roles, contained),
        "custodian": contained.organization(doc.custodian),
        "description": doc.title,
        "securityLabel": [_concept((*doc.confidentiality, CONFIDENTIALITY_DISPLAYS[doc.confidentiality[1]]))],
        "content": [_content(doc, binary_url, size, sha1_b64, content_type)],
        "context": _context(doc, source_patient),
    }
    if contained.resources:
        resource["contained"] = contained.resources
    resource.update({key: value for key, value in body.items() if value is not None})
    return resource


class _Contained:
    """The contained resources of one DocumentReference; organizations are shared, not repeated."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self._organizations: dict[tuple[Identifier | None, str | None], dict[str, str]] = {}
        self._patient: tuple[Identifier | None, dict[str, str]] | None = None

    def add(self, resource: dict[str, Any]) -> dict[str, str]:
        self.resources.append(resource)
        return {"reference": f"#{resource['id']}"}

    def organization(self, organization: CdaOrganization | None) -> dict[str, str] | None:
        if organization is None:
            return None
        key = (organization.identifier, organization.name)
        if key not in self._organizations:
            resource: dict[str, Any] = {"resourceType": "Organization", "id": f"org{len(self._organizations) + 1}"}
            if organization.identifier:
                resource["identifier"] = [_identifier(organization.identifier)]
            if organization.name:
                resource["name"] = organization.name
            self._organizations[key] = self.add(resource)
        return self._organizations[key]

    def source_patient(self, doc: CdaDocument) -> dict[str, str] | None:
        """The patient as the CDA describes them (context.sourcePatientInfo)."""
        patient = _patient(doc.patient_ins, doc.patient_name, "patient")
        if doc.gender:
            patient["gender"] = doc.gender
        if doc.birth_time:
            patient["birthDate"] = doc.birth_time
        if len(patient) == 2:
            return None
        reference = self.add(patient)
        self._patient = (doc.patient_ins, reference)
        return reference

    def patient_author(self, author: CdaAuthor, index: int) -> dict[str, str]:
        if self._patient and self._patient[0] == author.identifier:
            return self._patient[1]
        return self.add(_patient(author.identifier, author.name, f"author{index}"))


def _authors(doc: CdaDocument, contained: _Contained) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    """DocumentReference.author, and the PractitionerRole reference of each idNatPs."""
    references: list[dict[str, str]] = []
    roles: dict[str, dict[str, str]] = {}
    for index, author in enumerate(doc.authors, start=1):
        reference = _author_reference(author, f"author{index}", index, contained)
        if reference is None:
            continue
        references.append(reference)
        if author.idnatps and not author.device:
            roles.setdefault(author.idnatps, reference)
    return references, roles


def _author_reference(author: CdaAuthor, name: str, index: int, contained: _Contained) -> dict[str, str] | None:
    """The contained resource an author becomes; None for an author the CDA says nothing about.
    (Every contained resource must be referenced (dom-3): none is added for nothing.)"""
    if author.identifier and author.identifier[0] in INS_SYSTEMS:
        return contained.patient_author(author, index)
    if author.identifier is None and author.name is None and author.device is None:
        return None
    organization = contained.organization(author.organization)
    if author.device:
        return contained.add(_device(author, name, organization))
    practitioner = contained.add(_practitioner(author, name))
    return contained.add(_practitioner_role(author, f"{name}-role", practitioner, organization))


def _authenticator(
    legal: CdaAuthor | None, roles: dict[str, dict[str, str]], contained: _Contained
) -> dict[str, str] | None:
    """The legal authenticator, when a professional (DocumentReference.authenticator cannot be a
    patient or a device)."""
    if legal is None or legal.idnatps is None or legal.device:
        return None
    if legal.idnatps in roles:
        return roles[legal.idnatps]
    practitioner = contained.add(_practitioner(legal, "authenticator"))
    organization = contained.organization(legal.organization)
    return contained.add(_practitioner_role(legal, "authenticator-role", practitioner, organization))


def _patient(identifier: Identifier | None, name: CdaName | None, resource_id: str) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": resource_id}
    if identifier:
        patient["identifier"] = [_identifier(identifier)]
    if name and _human_name(name):
        patient["name"] = [_human_name(name)]
    return patient


def _practitioner(author: CdaAuthor, resource_id: str) -> dict[str, Any]:
    practitioner: dict[str, Any] = {"resourceType": "Practitioner", "id": resource_id}
    if author.identifier:
        practitioner["identifier"] = [_identifier(author.identifier)]
    if author.name and _human_name(author.name):
        practitioner["name"] = [_human_name(author.name)]
    return practitioner


def _practitioner_role(
    author: CdaAuthor, resource_id: str, practitioner: dict[str, str], organization: dict[str, str] | None
) -> dict[str, Any]:
    """The role carries the idNatPs too: the PDSm examples do, and the DMP finds a document's
    author through the resource DocumentReference.author points at."""
    role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": resource_id}
    if author.identifier:
        role["identifier"] = [_identifier(author.identifier)]
    role["practitioner"] = practitioner
    if organization:
        role["organization"] = organization
    if author.profession:
        role["code"] = [_concept(author.profession)]
    specialties = [_concept(code) for code in (author.specialty, author.role) if code and code != author.profession]
    if specialties:
        role["specialty"] = specialties
    return role


def _device(author: CdaAuthor, resource_id: str, organization: dict[str, str] | None) -> dict[str, Any]:
    device: dict[str, Any] = {"resourceType": "Device", "id": resource_id}
    if author.identifier:
        device["identifier"] = [_identifier(author.identifier)]
    if author.device:
        device["deviceName"] = [{"name": author.device, "type": "user-friendly-name"}]
    if author.role:
        device["type"] = _concept(author.role)
    if organization:
        device["owner"] = organization
    return device


def _category(type_code: Code, ig_dir: Path) -> list[dict[str, Any]] | None:
    table = _type_classes(ig_dir)
    found = table.classes.get((type_code[0], type_code[1]))
    return [_concept((table.class_system, *found))] if found else None


def _content(doc: CdaDocument, url: str, size: int, sha1_b64: str, content_type: str) -> dict[str, Any]:
    attachment: dict[str, Any] = {"contentType": content_type}
    if doc.language:
        attachment["language"] = doc.language
    attachment.update({"url": url, "size": size, "hash": sha1_b64})
    if doc.title:
        attachment["title"] = doc.title
    attachment["creation"] = doc.effective_time
    content: dict[str, Any] = {"attachment": attachment}
    if doc.format_code:
        content["format"] = _coding(doc.format_code)
    return content


def _context(doc: CdaDocument, source_patient: dict[str, str] | None) -> dict[str, Any] | None:
    context: dict[str, Any] = {}
    if doc.service_period:
        start, end = doc.service_period
        context["period"] = {key: value for key, value in (("start", start), ("end", end)) if value}
    if doc.facility_type:
        context["facilityType"] = _concept(doc.facility_type)
    if doc.practice_setting:
        context["practiceSetting"] = _concept(doc.practice_setting)
    if source_patient:
        context["sourcePatientInfo"] = source_patient
    return context or None


def _coding(code: Code) -> dict[str, str]:
    system, value, display = code
    return {"system": system, "code": value, **({"display": display} if display else {})}


def _concept(code: Code) -> dict[str, Any]:
    return {"coding": [_coding(code)]}


def _identifier(identifier: Identifier) -> dict[str, str]:
    return {"system": identifier[0], "value": identifier[1]}


def _human_name(name: CdaName) -> dict[str, Any]:
    human: dict[str, Any] = {}
    if name.family:
        human["family"] = name.family
    if name.given:
        human["given"] = list(name.given)
    return human
