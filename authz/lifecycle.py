"""The life of a DMP (R2, R20): open, closed, reopened within the retention period, purged after it.

A DMP is closed by setting ``Patient.active`` to false *and* adding the closure extension
``dmp-fermeture`` (``date`` and ``reason`` — or ``motif``, its former name, still accepted —;
``profiles/StructureDefinition-dmp-fermeture.json``): the flag
alone would be indistinguishable from a typing slip, and the retention period needs a date. It is
reopened by setting ``active`` back to true and removing the extension: the closure is not lost,
it stays in the Patient's version history and in the trail (the AuditEvents of the closure and the
reopening carry the ISO 21089 lifecycle events ``deprecate`` and ``reactivate``), so the current
Patient only ever describes the current state.

The closure date is the client's but cannot be backdated: it must be the day of the request
(give or take a day for time zones), since the retention period — and so the purge — runs from it.
Who may close or reopen is the policy's business (:mod:`authz.policy`); this module says what a
closure is, whether a change is consistent, and when the retention period ends.
"""

from __future__ import annotations

from datetime import date
from enum import Enum
from typing import Any

from fhirmodel.dates import DateFormatError, add_years, date_range, us_to_date

CLOSURE_URL = "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-fermeture"
#: How long a closed DMP is kept, and may be reopened, unless configured (CONTRACT §3).
DEFAULT_RETENTION_YEARS = 10
#: Room left around "today" for the closure date, for clients in other time zones.
_DAY_US = 86_400 * 1_000_000
#: The ISO 21089 record lifecycle events the trail records (AuditEvent.subtype).
LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
CLOSED_EVENT = "deprecate"
REOPENED_EVENT = "reactivate"
PURGED_EVENT = "destroy"


class Change(Enum):
    """What a write does to the DMP's life."""

    STAYS_OPEN = "stays open"
    CLOSE = "close"
    REOPEN = "reopen"
    STAYS_CLOSED = "stays closed"


class LifecycleError(ValueError):
    """A change that is not a consistent closure or reopening; ``element`` names what is wrong."""

    def __init__(self, message: str, element: str):
        super().__init__(message)
        self.element = element


def is_open(patient: dict[str, Any]) -> bool:
    """R2: a DMP is open unless its Patient says ``active: false``."""
    return patient.get("active", True) is not False


def change_of(old: dict[str, Any], new: dict[str, Any]) -> Change:
    was, now = is_open(old), is_open(new)
    if was and now:
        return Change.STAYS_OPEN
    if was:
        return Change.CLOSE
    return Change.REOPEN if now else Change.STAYS_CLOSED


def closures(patient: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in patient.get("extension") or [] if isinstance(e, dict) and e.get("url") == CLOSURE_URL]


def _part(closure: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in closure.get("extension") or [] if isinstance(e, dict) and e.get("url") == name), None)


def _closure_date(part: dict[str, Any] | None) -> str:
    """The ``date`` sub-extension's value: ``valueDate`` or ``valueDateTime`` (CONTRACT §3)."""
    part = part or {}
    return str(part.get("valueDate", part.get("valueDateTime", "")))


def closure_day(patient: dict[str, Any]) -> date | None:
    """The day a closed DMP was closed: its closure extension's date, or — for a DMP closed before
    the extension was required — the day its Patient was last written (nothing but a reopening
    writes a closed DMP's Patient, so that is the closure). None for an open DMP."""
    if is_open(patient):
        return None
    for closure in closures(patient):
        try:
            return us_to_date(date_range(_closure_date(_part(closure, "date")))[0])
        except DateFormatError:
            continue
    written = str((patient.get("meta") or {}).get("lastUpdated", ""))
    try:
        return us_to_date(date_range(written)[0])
    except DateFormatError:
        return None


def retention_end(patient: dict[str, Any], years: int) -> date | None:
    """The first day a closed DMP may no longer be reopened and may be purged; None when open."""
    closed = closure_day(patient)
    return add_years(closed, years) if closed else None


def check_closure(new: dict[str, Any], now_us: int) -> None:
    """A closing write carries exactly one closure extension, dated the day of the request."""
    found = closures(new)
    if len(found) != 1:
        problem = "needs" if not found else f"carries {len(found)} closure extensions; it needs exactly one:"
        raise LifecycleError(
            f"Patient.active = false closes the DMP and {problem} the extension {CLOSURE_URL} (date, reason) (R20)",
            "Patient.extension",
        )
    reasons = [name for name in ("reason", "motif") if _part(found[0], name)]
    if len(reasons) != 1:
        problem = "needs a reason" if not reasons else "gives its reason twice (reason and motif, its former name)"
        element = "Patient.extension:dmp-fermeture.extension:reason"
        raise LifecycleError(f"the closure extension {problem} (R20)", element)
    day = _closure_date(_part(found[0], "date"))
    element = "Patient.extension:dmp-fermeture.extension:date"
    try:
        low, high = date_range(day)
    except DateFormatError:
        raise LifecycleError("the closure extension needs a date (valueDate or valueDateTime) (R20)", element) from None
    if low > now_us + _DAY_US or high < now_us - _DAY_US:
        raise LifecycleError(
            f"the closure date {day} must be the day of the closure, today: the retention period runs from it (R20)",
            element,
        )


def check_no_closure(new: dict[str, Any]) -> None:
    """An open DMP carries no closure extension: reopening removes it (its history keeps it)."""
    if closures(new):
        raise LifecycleError(
            f"an open DMP (Patient.active = true) carries no {CLOSURE_URL} extension: remove it to reopen the"
            " DMP (the closure stays in the Patient's history) (R20)",
            "Patient.extension",
        )


def check_reopening(old: dict[str, Any], today: date, years: int) -> str | None:
    """Why the closed DMP ``old`` may no longer be reopened ``today``, or None while it may."""
    end = retention_end(old, years)
    if end is not None and today >= end:
        return (
            f"this DMP was closed on {closure_day(old)}: its {years}-year retention period ended on {end}, it can"
            " no longer be reopened (R20)"
        )
    return None
