"""R1 for searches: a search that names another patient than the token's is refused (403).

The read filters already keep every other patient's data out of a search's results; CONTRACT §2
says more: "a request about another patient is refused (403)", as a read is. This module finds the
patients a search names — by INS (``identifier``, ``patient.identifier``, ``patient:identifier``,
``entity-identifier``) or by reference (``patient=Patient/x``, ``subject=x``) — and tells whether
one is not the token's.

It answers from the token and the token's own DMP only, never from another patient's data: an
INS is compared with the token's INS, a Patient id with the ids of the token's DMP. So the 403
says "not your patient", which the caller knows already, and never whether that other patient
exists (a read of another patient's resource answers 404 for the same reason).
"""

from __future__ import annotations

from authz.state import Ident, PatientState
from authz.terms import INS_SYSTEMS
from fhirmodel.indexing import patient_id_in

#: Per type, the parameters whose value is the patient (a reference), and those whose value is the
#: patient's identifier (token ``system|value``). ``identifier`` of a Patient is the patient itself.
REFERENCE_PARAMETERS = {
    "DocumentReference": frozenset({"patient", "subject"}),
    "List": frozenset({"patient", "subject"}),
    "Consent": frozenset({"patient"}),
    "AuditEvent": frozenset({"patient"}),
    "RelatedPerson": frozenset({"patient"}),
}
IDENTIFIER_PARAMETERS = {"Patient": frozenset({"identifier"}), "AuditEvent": frozenset({"entity-identifier"})}


def foreign_patient(
    resource_type: str, params: list[tuple[str, str]], ins: Ident | None, state: PatientState | None
) -> str | None:
    """The first value of ``params`` that names a patient other than the token's (``ins``, whose
    DMP is ``state``), or None when every patient the search names is the token's."""
    references = REFERENCE_PARAMETERS.get(resource_type, frozenset())
    identifiers = IDENTIFIER_PARAMETERS.get(resource_type, frozenset())
    own_ids = set(state.patient_ids) if state else set()
    for name, value in params:
        head, _, chained = name.partition(".")
        base, _, modifier = head.partition(":")
        by_identifier = (base in references and (chained == "identifier" or modifier == "identifier")) or (
            base in identifiers and not chained and modifier in ("", "exact")
        )
        by_reference = base in references and not chained and modifier in ("", "Patient")
        for item in value.split(","):
            if by_identifier and _other_ins(item, ins):
                return f"{name}={item}"
            if by_reference and _other_patient(item, own_ids):
                return f"{name}={item}"
    return None


def _other_ins(token: str, ins: Ident | None) -> bool:
    """An INS (``system|value`` of an INS system) that is not the token's."""
    system, sep, value = token.partition("|")
    return bool(sep) and system in INS_SYSTEMS and (system, value) != ins


def _other_patient(reference: str, own_ids: set[str]) -> bool:
    """A Patient reference (``Patient/x``, absolute, or a bare id) to another Patient than the
    token's DMP."""
    pid = patient_id_in(reference) if "/" in reference else reference
    return pid is not None and pid != "" and pid not in own_ids
