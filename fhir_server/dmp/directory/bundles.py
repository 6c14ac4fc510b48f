"""FHIR Bundles of the national directory (ANS "Annuaire Santé" IG) as directory entries.

The Annuaire Santé FHIR API answers searches with Bundles (``searchset``; a download may be a
``collection``) of ``Practitioner`` — identifiers idNatPs (``urn:oid:1.2.250.1.71.4.2.1``) and
RPPS (``http://rpps.fr``), ``name``, ``qualification`` (TRE_G15 profession, TRE_R38 specialty...) —
and ``PractitionerRole`` — ``practitioner``, ``organization``, ``code``, ``specialty`` — pointing at
each other by the API's own ids. Both are read here, in JSON or XML, into the :class:`Entry` the
extraction gives (:mod:`.rpps`):

- a Practitioner is known by its idNatPs; one given only its RPPS number gets the idNatPs
  ``8`` + RPPS (the rule of the national identifier);
- a PractitionerRole goes with the Practitioner its ``practitioner`` names in the Bundle; it keeps
  its identifiers, and one without gets the activity identifier of :mod:`.rpps` (idNatPs,
  organisation, profession), so that a second import finds it again;
- references to the API's other resources (Organization, Location, HealthcareService, Endpoint)
  cannot be resolved here: an ``organization`` keeps its identifier and name, the others are left
  out. ``id`` and ``meta`` are the API's and are dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from authz.terms import IDNATPS_SYSTEM
from fhir_server.dmp.directory.rpps import ACTIVITY_SYSTEM, RPPS_SYSTEM, Entry

#: PractitionerRole elements that reference the API's resources this server does not hold.
_UNRESOLVED = ("location", "healthcareService", "endpoint")


class BundleError(ValueError):
    """The file is not a Bundle of the directory."""


def read_bundle(bundle: Any) -> list[Entry]:
    """The professionals of one Bundle (Practitioners without a known idNatPs are an error)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("a FHIR Bundle of Practitioner and PractitionerRole is expected")
    entries: dict[str, Entry] = {}
    keys: dict[str, str] = {}  # fullUrl and Practitioner/id → idNatPs
    roles: list[tuple[int, dict[str, Any]]] = []
    for k, item in enumerate(bundle.get("entry") or []):
        resource = item.get("resource") if isinstance(item, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "Practitioner":
            idnatps = _idnatps(resource, k)
            practitioner = _cleaned(resource)
            if not any(i.get("system") == IDNATPS_SYSTEM for i in practitioner.get("identifier") or []):
                practitioner.setdefault("identifier", []).append(
                    {"use": "official", "system": IDNATPS_SYSTEM, "value": idnatps}
                )
            entries.setdefault(idnatps, Entry(idnatps, practitioner, []))
            for key in (item.get("fullUrl"), f"Practitioner/{resource.get('id')}"):
                if isinstance(key, str):
                    keys[key] = idnatps
        elif resource.get("resourceType") == "PractitionerRole":
            roles.append((k, resource))
    for k, resource in roles:
        reference = str((resource.get("practitioner") or {}).get("reference", ""))
        owner = keys.get(reference) or keys.get("/".join(reference.split("/")[-2:]))
        if owner is None:
            raise BundleError(f"Bundle.entry[{k}]: its practitioner {reference!r} is no Practitioner of the Bundle")
        entries[owner].roles.append(_role(resource, owner))
    return list(entries.values())


def _idnatps(practitioner: dict[str, Any], k: int) -> str:
    """The idNatPs of a Practitioner: given, or ``8`` + its RPPS number."""
    identifiers = [i for i in practitioner.get("identifier") or [] if isinstance(i, dict)]
    for system, prefix in ((IDNATPS_SYSTEM, ""), (RPPS_SYSTEM, "8")):
        found = next((str(i["value"]) for i in identifiers if i.get("system") == system and i.get("value")), None)
        if found:
            return prefix + found
    raise BundleError(f"Bundle.entry[{k}]: a Practitioner without idNatPs ({IDNATPS_SYSTEM}) or RPPS ({RPPS_SYSTEM})")


def _cleaned(resource: dict[str, Any]) -> dict[str, Any]:
    out = {key: copy.deepcopy(value) for key, value in resource.items() if key not in ("id", "meta")}
    out.pop("text", None)  # the API's narrative describes its own ids
    return out


def _role(resource: dict[str, Any], idnatps: str) -> dict[str, Any]:
    role = _cleaned(resource)
    for name in _UNRESOLVED:
        role.pop(name, None)
    organization = role.get("organization")
    if isinstance(organization, dict):
        kept = {k: v for k, v in organization.items() if k in ("identifier", "display")}
        if kept:
            role["organization"] = kept
        else:
            del role["organization"]
    role.pop("practitioner", None)  # the importer names the Practitioner stored here
    if not role.get("identifier"):
        organization_key = (role.get("organization") or {}).get("identifier", {}).get("value") or (
            role.get("organization") or {}
        ).get("display", "sans-structure")
        codes = [c.get("code") for cc in role.get("code") or [] for c in cc.get("coding") or []]
        value = f"{idnatps}-{organization_key}-{codes[0] if codes else ''}"
        role["identifier"] = [{"system": ACTIVITY_SYSTEM, "value": value}]
    return role
