"""Writing directory entries as ``ADM``, idempotently, through the FHIR service.

Each resource goes through :meth:`FhirService.process` as a conditional update
(``PUT Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|<idNatPs>``, ``PUT
PractitionerRole?identifier=<system>|<value>``) under an ``ADM`` token: the same validation, DMP
rules (CONTRACT §3: the directory is written by ``ADM``) and store code as a client's ``PUT``.
A conditional update creates what is not there and updates what is, so a second import of the
same file changes nothing — and a resource whose content is already what the file says is not
written at all (no new version for an unchanged professional).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from authz.terms import IDNATPS_SYSTEM
from fhir_server.dmp.directory.rpps import Entry
from fhir_server.fhir.messages import FhirRequest
from fhir_server.fhir.service import FhirService
from fhirmodel.errors import FhirError
from storage.query import OPEN_SCOPE, Query, Token

FHIR_JSON = "application/fhir+json"
#: Refusals kept to show; the count goes on.
MAX_REPORTED = 20


@dataclass
class Outcome:
    """What an import did, per kind of write."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, {self.refused} refused"


class DirectoryImport:
    """Writes entries with the token ``token()`` gives (called for each write, so that a long
    import may renew it)."""

    def __init__(self, service: FhirService, token: Callable[[], str]):
        self.service = service
        self.token = token
        self.outcome = Outcome()

    def run(self, entries: Iterable[Entry]) -> Outcome:
        for entry in entries:
            self.write(entry)
        return self.outcome

    def write(self, entry: Entry) -> None:
        """A professional and their activities; a refused Practitioner takes its roles with it."""
        pid = self._put(entry.practitioner, (IDNATPS_SYSTEM, entry.idnatps))
        if pid is None:
            return
        for role in entry.roles:
            role = {**role, "practitioner": {"reference": f"Practitioner/{pid}"}}
            first = role["identifier"][0]
            self._put(role, (str(first.get("system", "")), str(first.get("value", ""))))

    def _put(self, resource: dict[str, Any], key: tuple[str, str]) -> str | None:
        """Write ``resource`` unless the resource ``key`` finds already says the same; its id."""
        rtype = resource["resourceType"]
        found = self.service.store.search(Query(rtype, Token("identifier", key[0], key[1]), count=2), OPEN_SCOPE)
        if len(found.matches) == 1 and _content(found.matches[0].json()) == _content(resource):
            self.outcome.unchanged += 1
            return found.matches[0].id
        request = FhirRequest(
            "PUT",
            rtype,
            params=[("identifier", f"{key[0]}|{key[1]}")],
            body=resource,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": FHIR_JSON},
            content_type=FHIR_JSON,
        )
        try:
            response = self.service.process(request)
        except FhirError as exc:
            self.outcome.refused += 1
            if len(self.outcome.problems) < MAX_REPORTED:
                self.outcome.problems.append(f"{rtype} {key[1]}: {exc.message}")
            return None
        if response.status == 201:
            self.outcome.created += 1
        else:
            self.outcome.updated += 1
        location = response.headers.get("Location", "")
        parts = location.split("/")
        return parts[parts.index(rtype) + 1] if rtype in parts else None


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """What a directory resource says, without what the server adds (id, meta)."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}
