"""The Annuaire Santé extraction ``PS_LibreAcces_Personne_activite`` as directory entries.

The public extraction (ANS, "Annuaire Santé — extractions en libre accès") is a UTF-8 text file,
fields separated by ``|`` (each line ends with one), a header line naming them, then one line per
*activity* of a professional: a person practising in two places has two lines, one after the
other. The columns read here, by their header name (their order has changed across releases):

| column | becomes |
|---|---|
| ``Identification nationale PP`` | the idNatPs (``8`` + RPPS, ``0`` + ADELI): the Practitioner's identifier |
| ``Type d'identifiant PP``, ``Identifiant PP`` | the RPPS number when the type is ``8`` |
| ``Nom d'exercice``, ``Prénom d'exercice``, ``Code civilité d'exercice`` | the name |
| ``Code profession`` | TRE_G15: a qualification, and the role's code |
| ``Code type savoir-faire``, ``Code savoir-faire`` | TRE_R38 when the type is ``S`` (spécialité ordinale) |
| ``Identifiant technique de la structure``, ``Numéro FINESS site``, ``Raison sociale site`` | the role's organisation |

A professional's lines make one Practitioner (every profession and specialty of its activities as
qualifications) and one PractitionerRole per activity, identified by idNatPs, structure and
profession under the project's naming system :data:`ACTIVITY_SYSTEM` (the extraction gives an
activity no identifier of its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from authz.terms import IDNATPS_SYSTEM, IDNATSTRUCT_SYSTEM, PROFESSION_SYSTEM, SPECIALTY_SYSTEM

#: The RPPS number (11 digits), as the Annuaire Santé FHIR API names it.
RPPS_SYSTEM = "http://rpps.fr"
#: The project's identifier of one activity (PractitionerRole): ``{idNatPs}-{structure}-{profession}``.
ACTIVITY_SYSTEM = "https://dmp.example.org/fhir/sid/annuaire-sante-activite"
#: The columns an extraction must have; the others are optional.
REQUIRED = ("Identification nationale PP", "Code profession")
#: ``Code type savoir-faire`` of a spécialité ordinale (TRE_R38).
SPECIALTY_TYPE = "S"
RPPS_TYPE = "8"


class ExtractionError(ValueError):
    """The file is not an extraction of the expected shape; ``line`` is where (1-based)."""

    def __init__(self, message: str, line: int):
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class Entry:
    """One professional: the Practitioner and the PractitionerRoles of its activities."""

    idnatps: str
    practitioner: dict[str, Any]
    roles: list[dict[str, Any]]


def read_extraction(lines: Iterable[str]) -> Iterator[Entry]:
    """The professionals of an extraction, one :class:`Entry` per run of lines with the same idNatPs."""
    numbered = enumerate(lines, start=1)
    header = next((line for _, line in numbered), None)
    if header is None:
        return
    columns = [name.strip().lstrip("\ufeff") for name in header.rstrip("\r\n").split("|")]
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise ExtractionError(f"not a PS_LibreAcces_Personne_activite header: no column {', '.join(missing)}", 1)
    current: Entry | None = None
    for number, line in numbered:
        if not line.strip():
            continue
        values = line.rstrip("\r\n").split("|")
        row = {name: values[k].strip() if k < len(values) else "" for k, name in enumerate(columns)}
        idnatps = row["Identification nationale PP"]
        if not idnatps:
            raise ExtractionError("no 'Identification nationale PP'", number)
        if current is not None and current.idnatps != idnatps:
            yield current
            current = None
        if current is None:
            current = Entry(idnatps, _practitioner(row), [])
        _add_activity(current, row)
    if current is not None:
        yield current


def _practitioner(row: dict[str, str]) -> dict[str, Any]:
    identifiers = [{"use": "official", "system": IDNATPS_SYSTEM, "value": row["Identification nationale PP"]}]
    if row.get("Type d'identifiant PP") == RPPS_TYPE and row.get("Identifiant PP"):
        identifiers.append({"use": "official", "system": RPPS_SYSTEM, "value": row["Identifiant PP"]})
    name: dict[str, Any] = {"use": "usual"}
    if row.get("Nom d'exercice"):
        name["family"] = row["Nom d'exercice"]
    if row.get("Prénom d'exercice"):
        name["given"] = [row["Prénom d'exercice"]]
    if row.get("Code civilité d'exercice"):
        name["prefix"] = [row["Code civilité d'exercice"]]
    practitioner: dict[str, Any] = {"resourceType": "Practitioner", "identifier": identifiers, "active": True}
    if len(name) > 1:
        practitioner["name"] = [name]
    return practitioner


def _add_activity(entry: Entry, row: dict[str, str]) -> None:
    """One line: its profession and specialty among the qualifications, and its PractitionerRole."""
    codes = [(PROFESSION_SYSTEM, row["Code profession"])] if row["Code profession"] else []
    specialty = row.get("Code savoir-faire", "")
    if row.get("Code type savoir-faire") == SPECIALTY_TYPE and specialty:
        codes.append((SPECIALTY_SYSTEM, specialty))
    qualifications = entry.practitioner.setdefault("qualification", [])
    for system, code in codes:
        qualification = {"code": {"coding": [{"system": system, "code": code}]}}
        if qualification not in qualifications:
            qualifications.append(qualification)
    if not qualifications:
        del entry.practitioner["qualification"]
    structure = row.get("Identifiant technique de la structure") or row.get("Numéro FINESS site") or "sans-structure"
    key = f"{entry.idnatps}-{structure}-{row['Code profession']}"
    role = next((r for r in entry.roles if r["identifier"][0]["value"] == key), None)
    if role is None:
        role = {"resourceType": "PractitionerRole", "identifier": [{"system": ACTIVITY_SYSTEM, "value": key}]}
        role["active"] = True
        organization: dict[str, Any] = {}
        if row.get("Numéro FINESS site"):
            organization["identifier"] = {"system": IDNATSTRUCT_SYSTEM, "value": row["Numéro FINESS site"]}
        if row.get("Raison sociale site"):
            organization["display"] = row["Raison sociale site"]
        if organization:
            role["organization"] = organization
        if row["Code profession"]:
            role["code"] = [{"coding": [{"system": PROFESSION_SYSTEM, "code": row["Code profession"]}]}]
        entry.roles.append(role)
    if len(codes) > 1:  # the same activity on several lines: one per specialty
        specialties = role.setdefault("specialty", [])
        coded = {"coding": [{"system": SPECIALTY_SYSTEM, "code": specialty}]}
        if coded not in specialties:
            specialties.append(coded)
