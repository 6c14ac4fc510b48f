"""What the alerts say: French e-mails to patients and representatives, and the rest-hook body.

A notification tells *that* something happened, never what a document holds: no title, type,
author or content, not even the document's id in an e-mail, which travels and is kept outside the
server's protection (the recipient reads the document behind their login). The rest-hook body,
asked for with ``payload`` ``application/fhir+json``, is an id-only ``history`` Bundle: one entry
per document with its ``fullUrl`` and the request that made it current, no ``resource``; the
receiver reads it with its own token, under the same rules as any read.

An emergency-access e-mail (R5) says when, in which mode, and by whom as the trail records it —
the profession and the establishment; names and everything else stay in the access history.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fhir_server.runtime.mail import Mail

PARIS = ZoneInfo("Europe/Paris")
SIGNATURE = "Ce message est envoyé automatiquement par votre Dossier Médical Partagé, merci de ne pas y répondre."
#: How the two emergency purposes of use (TRE_R248) read in a sentence.
EMERGENCY_MODES = {
    "bris_de_glace": "en mode « bris de glace »",
    "centre_15": "depuis la régulation du SAMU (centre 15)",
}


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _when(moment: datetime) -> str:
    """``le 12/03/2025 à 14:05``, in Paris time."""
    local = moment.astimezone(PARIS)
    return f"le {local:%d/%m/%Y} à {local:%H:%M}"


def parse_instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_document_mail(to: str, subscription_id: str, at: datetime) -> Mail:
    body = (
        "Bonjour,\n\n"
        f"Un nouveau document a été ajouté {_when(at)} (heure de Paris) au Dossier Médical Partagé (DMP) pour lequel "
        "vous avez demandé à être prévenu(e).\n\n"
        "Pour le consulter, connectez-vous à votre espace DMP. Pour protéger votre vie privée, ce "
        "message ne dit rien du document lui-même.\n\n"
        f"Cette alerte vient de votre abonnement {subscription_id}. Pour ne plus en recevoir, "
        "supprimez-le ou suspendez-le depuis votre espace DMP.\n\n"
        f"{SIGNATURE}\n"
    )
    return Mail(to, "DMP : un nouveau document est disponible", body)


def history_notification(base_url: str, document_id: str, created: bool, now: datetime) -> dict[str, Any]:
    """The id-only ``history`` Bundle of one document (bdl-3/bdl-4: request and response)."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": instant(now),
        "entry": [
            {
                "fullUrl": f"{base_url}/DocumentReference/{document_id}",
                "request": (
                    {"method": "POST", "url": "DocumentReference"}
                    if created
                    else {"method": "PUT", "url": f"DocumentReference/{document_id}"}
                ),
                "response": {"status": "201 Created" if created else "200 OK"},
            }
        ],
    }


@dataclass(frozen=True)
class EmergencyAccess:
    """One emergency access as the trail recorded it."""

    at: datetime
    mode: str  # TRE_R248 code
    profession: str | None  # TRE_G15 code
    organization: str | None  # the establishment's identifier (FINESS)


def emergency_mail(to: str, accesses: list[EmergencyAccess], profession_name: Callable[[str], str | None]) -> Mail:
    """One e-mail for the emergency accesses of one run, grouped by who and how."""
    groups: dict[tuple[str, str | None, str | None], list[datetime]] = {}
    for access in sorted(accesses, key=lambda a: a.at):
        groups.setdefault((access.mode, access.profession, access.organization), []).append(access.at)
    lines = []
    for (mode, profession, organization), moments in groups.items():
        who = "un professionnel de santé"
        named = profession_name(profession) if profession else None
        if named:
            who += f" ({named})"
        if organization:
            who += f" de l'établissement {organization}"
        how = EMERGENCY_MODES.get(mode, "en urgence")
        count = f" ({len(moments)} accès, le dernier {_when(moments[-1])})" if len(moments) > 1 else ""
        lines.append(f"- {_when(moments[0])}, par {who}, {how}{count}")
    body = (
        "Bonjour,\n\n"
        "Votre Dossier Médical Partagé (DMP) a été consulté en urgence, sans autorisation préalable "
        "de votre part, comme la loi le permet quand votre état de santé l'exige (heures de Paris) :\n\n"
        + "\n".join(lines)
        + "\n\nLe détail de ces accès figure dans l'historique des accès de votre DMP. Depuis votre "
        "espace DMP, vous pouvez aussi vous opposer aux accès en urgence ou bloquer un professionnel.\n\n"
        f"{SIGNATURE}\n"
    )
    return Mail(to, "DMP : votre dossier a été consulté en urgence", body)
