"""The lexical rules of FHIR R4's primitive types (datatypes.html, "Primitive Types").

Why here and not left to the fhir.resources models: the validation walk checks every value
against these as it passes, so a resource need not also be rebuilt as a model object (half the
validation time of a document) to learn that its date is not a date. The regular expressions
are the specification's, anchored; a date must also exist in the calendar ("Dates SHALL be valid
dates"), and the integers keep to their ranges.
"""

from __future__ import annotations

import re
from datetime import date

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

#: The specification's regular expression of each primitive type held in a JSON string (the
#: types not named here have none beyond their JSON type, or are checked elsewhere: base64Binary
#: and xhtml by the walk).
PATTERNS: dict[str, re.Pattern[str]] = {
    "date": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?"),
    "dateTime": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?"),
    "instant": re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}"),
    "time": re.compile(_TIME),
    "code": re.compile(r"[^\s]+(\s[^\s]+)*"),
    "oid": re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"),
    "uuid": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "uri": re.compile(r"\S*"),
    "url": re.compile(r"\S*"),
    "canonical": re.compile(r"\S*"),
}
#: The types whose value names a day that must exist.
_DATED = frozenset({"date", "dateTime", "instant"})
#: The range of each integer type.
RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "integer64": (-(2**63), 2**63 - 1),
}


def string_problem(fhir_type: str, value: str) -> str | None:
    """Why ``value`` is not a ``fhir_type`` (a type held in a JSON string), or None."""
    pattern = PATTERNS.get(fhir_type)
    if pattern is None:
        return None
    if not pattern.fullmatch(value):
        return f"not a valid {fhir_type}"
    if fhir_type in _DATED and len(value) >= 10:
        try:
            date(int(value[:4]), int(value[5:7]), int(value[8:10]))
        except ValueError:
            return f"not a valid {fhir_type}: no such day"
    return None


def integer_problem(fhir_type: str, value: int) -> str | None:
    """Why ``value`` is not a ``fhir_type`` (an integer type), or None."""
    low, high = RANGES.get(fhir_type, (value, value))
    if low <= value <= high:
        return None
    return f"{value} is out of the range of {fhir_type} ({low} to {high})"
