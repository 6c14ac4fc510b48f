"""What the server reads of a CDA R2 header, and how it says a CDA cannot be used."""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.terms import (
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
)

Code = tuple[str, str, str | None]  # (system URL, code, display)
Identifier = tuple[str, str]  # (system, value)


class CdaError(ValueError):
    """A CDA the server cannot accept; the message says what is wrong and where, in words safe to
    send back to the client (nothing from outside the document, no library internals)."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.location = location


class NotClinicalDocument(CdaError):
    """Well-formed XML whose root is not a CDA ``ClinicalDocument``: some other XML document,
    which a caller storing any content may accept as it is, while a caller expecting a CDA refuses it."""


# -------------------------------------------------------------------------- the header


@dataclass(frozen=True)
class CdaName:
    """A person's name as the CI-SIS writes it: birth family name and first names."""

    family: str | None
    given: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join([*self.given, *([self.family] if self.family else [])])


@dataclass(frozen=True)
class CdaOrganization:
    identifier: Identifier | None
    name: str | None


@dataclass(frozen=True)
class CdaAuthor:
    """An author (or the legal authenticator): a professional, a device or the patient."""

    identifier: Identifier | None
    name: CdaName | None
    profession: Code | None  # TRE_G15
    specialty: Code | None  # TRE_R38
    #: assignedAuthor/code as written: the XDS authorSpecialty (TRE_A02 "G15_10/SM26", TRE_A00 "DISPOSITIF").
    role: Code | None
    organization: CdaOrganization | None
    device: str | None  # assignedAuthoringDevice/softwareName
    time: str | None  # FHIR dateTime

    @property
    def idnatps(self) -> str | None:
        """The idNatPs (1.2.250.1.71.4.2.1) the DMP knows professionals and devices by."""
        if self.identifier and self.identifier[0] == IDNATPS_SYSTEM:
            return self.identifier[1]
        return None


@dataclass(frozen=True)
class CdaDocument:
    """What the DMP needs from a CDA header, already in FHIR terms (URLs, FHIR dates)."""

    patient_ins: Identifier | None
    patient_name: CdaName | None
    birth_time: str | None  # FHIR date
    gender: str | None  # FHIR AdministrativeGender
    type_code: Code
    title: str | None
    effective_time: str  # FHIR dateTime
    confidentiality: tuple[str, str]
    language: str | None
    authors: list[CdaAuthor]
    custodian: CdaOrganization | None
    document_id: str  # XDS uniqueId as a URI: urn:oid:root or urn:oid:root^extension
    set_id: str | None
    version_number: int | None
    facility_type: Code | None
    practice_setting: Code | None
    format_code: Code | None
    service_period: tuple[str | None, str | None] | None
    legal_authenticator: CdaAuthor | None = None
    template_ids: tuple[str, ...] = field(default=())

    def require_ins(self) -> Identifier:
        """The patient's INS; a DMP document without one belongs to no DMP."""
        if self.patient_ins is None:
            systems = ", ".join(sorted(INS_SYSTEMS))
            raise CdaError(f"recordTarget/patientRole/id: no INS ({systems})", "recordTarget/patientRole/id")
        return self.patient_ins
