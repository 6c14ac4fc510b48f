"""Access tokens for the bench, signed with the server's own key as ``dmp-server token`` does.

Every FHIR request but ``metadata`` needs a bearer token (CONTRACT §2), and a token about a
patient reaches that patient only (R1), so the bench needs one token per patient and actor. They
are minted on first use and cached (about 0.3 ms each): a million-document data set has tens of
thousands of patients, of which a 10-second scenario touches only some.

The key is ``data_dir/keys``: the bench creates it before the server starts (or the server has
created it on a previous run), so both sign and verify with the same key. The Consents the rules
need (grants, emergency settings) are built here too, with the server's own ``new_consent``, so the
direct load seeds exactly what the server writes when a professional creates a DMP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from authz.consents import DEFAULT_GRANT, new_consent
from authz.devtoken import DEV_IDNATPS, make_dev_token
from authz.keys import ServerKey, load_or_create_server_key
from authz.terms import (
    ACCESS,
    ADMINISTRATION,
    BREAK_THE_GLASS,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    PATIENT,
    PROFESSIONAL,
    REGULATION_CENTRE,
)
from authz.tokens import own_issuer
from bench.datagen import ins

#: Long enough for the longest load and measurement; tokens are minted again at every run.
TOKEN_LIFETIME_SECONDS = 12 * 3600
PATIENT_SCOPE = "patient/*.cruds"


@dataclass(frozen=True)
class Professional:
    """A professional of the bench: who (idNatPs) and what (TRE_G15 profession, for R10)."""

    idnatps: str
    profession: str


#: The professional every scenario reads and writes as: a doctor holding an access grant (R3) on
#: every patient (as the creator of each DMP over HTTP, or by a seeded Consent when loaded directly).
DOCTOR = Professional(DEV_IDNATPS, "10")
#: A nurse the big patient authorised: same documents, minus the class the matrix denies nurses.
NURSE = Professional("810100000060", "60")


class Tokens:
    """Tokens by (actor, patient index), minted lazily and kept for the run.

    Shared by the client threads: two threads may mint the same token at once, which is harmless
    (both are valid), so there is no lock on the hot path; the lock only guards the dict's writes.
    """

    def __init__(self, key: ServerKey, base_url: str):
        self._key = key
        self._base_url = base_url
        self._issuer = own_issuer(base_url)
        self._cache: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: Path, base_url: str) -> Tokens:
        return cls(load_or_create_server_key(data_dir), base_url)

    def professional(self, who: Professional, patient: int) -> str:
        """An HCP token about one patient (``person_id``), purpose ``normal``."""
        return self._cached(f"HCP-{who.idnatps}", patient, lambda: self._professional(who, patient))

    def patient(self, patient: int) -> str:
        """The patient's own token (``sub`` = their INS), as after the server's patient login."""
        return self._cached("PAT", patient, lambda: self._patient(patient))

    def admin(self) -> str:
        """An ADM token: the only role that writes the directory of professionals."""
        return self._cached("ADM", -1, self._admin)

    def _cached(self, actor: str, patient: int, mint: Callable[[], str]) -> str:
        token = self._cache.get((actor, patient))
        if token is None:
            token = mint()
            with self._lock:
                self._cache[(actor, patient)] = token
        return token

    def _professional(self, who: Professional, patient: int) -> str:
        return make_dev_token(
            self._key,
            issuer=self._issuer,
            audience=self._base_url,
            role=PROFESSIONAL,
            sub=who.idnatps,
            idnatps=who.idnatps,
            profession=who.profession,
            person_id=ins(patient),
            lifetime_seconds=TOKEN_LIFETIME_SECONDS,
        )

    def _patient(self, patient: int) -> str:
        return make_dev_token(
            self._key,
            issuer=self._issuer,
            audience=self._base_url,
            role=PATIENT,
            sub=ins(patient),
            person_id=ins(patient),
            scope=PATIENT_SCOPE,
            lifetime_seconds=TOKEN_LIFETIME_SECONDS,
        )

    def _admin(self) -> str:
        return make_dev_token(
            self._key,
            issuer=self._issuer,
            audience=self._base_url,
            role=ADMINISTRATION,
            sub="bench-adm",
            lifetime_seconds=TOKEN_LIFETIME_SECONDS,
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def access_grant(patient: tuple[str, str], who: Professional, moment: datetime) -> dict[str, Any]:
    """The patient's authorisation of ``who`` for one year (R3, CONTRACT §4), as the server writes
    it for a DMP's creator and as a patient posts it for anyone else."""
    return new_consent(ACCESS, patient, moment, actor=(IDNATPS_SYSTEM, who.idnatps), until=moment + DEFAULT_GRANT)


def emergency_settings(patient: tuple[str, str], moment: datetime) -> list[dict[str, Any]]:
    """The two ``permit`` emergency settings every DMP starts with (R5)."""
    return [new_consent(EMERGENCY_ACCESS, patient, moment, purpose=p) for p in (BREAK_THE_GLASS, REGULATION_CENTRE)]
