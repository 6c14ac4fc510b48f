"""The code systems the DMP rules speak in (CONTRACT.md §2–§5).

Only system URLs and the codes the rules themselves name live here; which codes *exist* (every
profession, every document type) is data in ``ig/``, checked through the terminology.
"""

from __future__ import annotations

CANON = "https://dmp.example.org/fhir"
ROLE_SYSTEM = f"{CANON}/CodeSystem/dmp-user-role"
CONSENT_TYPE_SYSTEM = f"{CANON}/CodeSystem/dmp-consent-type"
PROFESSION_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
SPECIALTY_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
PURPOSE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R248-ModeAcces/FHIR/TRE-R248-ModeAcces"
#: Some ANS sources spell TRE_R248 with underscores (CONTRACT §8): accepted, never emitted.
PURPOSE_SYSTEMS = frozenset(
    {PURPOSE_SYSTEM, "https://mos.esante.gouv.fr/NOS/TRE_R248_ModeAcces/FHIR/TRE_R248_ModeAcces"}
)
VISIBILITY_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
)
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

IDNATPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
IDNATSTRUCT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
#: INS-NIR, INS-NIA, and the test and demonstration INS used by ANS examples.
INS_SYSTEMS = frozenset(
    {
        "urn:oid:1.2.250.1.213.1.4.8",
        "urn:oid:1.2.250.1.213.1.4.9",
        "urn:oid:1.2.250.1.213.1.4.10",
        "urn:oid:1.2.250.1.213.1.4.11",
    }
)

# User roles (CONTRACT §2).
PATIENT = "PAT"
LEGAL_REPRESENTATIVE = "LEGREP"
PROFESSIONAL = "HCP"
STAFF = "ASS"
SYSTEM = "TCU"
ADMINISTRATION = "ADM"

# Purposes of use (TRE_R248).
NORMAL = "normal"
BREAK_THE_GLASS = "bris_de_glace"
REGULATION_CENTRE = "centre_15"

# Consent categories (CONTRACT §4).
ACCESS = "access"
BLOCK = "block"
EMERGENCY_ACCESS = "emergency-access"
MEDECIN_TRAITANT = "medecin-traitant"
REPRESENTATIVE = "legal-representative"

# The document class (TRE_A03) of the documents the patient adds themselves (R15).
PATIENT_DOCUMENT_CLASS = "90"

# Visibility labels (TRE_A07) and the profession that R5/R6 name.
MASKED_FROM_PROFESSIONALS = "MASQUE_PS"
INVISIBLE_TO_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_TO_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
DOCTOR = "10"
