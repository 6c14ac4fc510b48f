"""The INS (Identifiant National de Santé) as a value: its shape and its control key.

CONTRACT §3: an INS is 15 characters, the 13 of the NIR (or NIA, same layout) and a 2-digit key
``97 - (NIR mod 97)``. The department (characters 6-7) of someone born in Corsica is ``2A`` or
``2B``; for the key, INSEE's rule counts them as ``19`` and ``18``. Checking the key catches the
typing slip that would otherwise open — or feed — another person's record under a wrong number.

This module knows values only; which identifier systems carry an INS is the caller's business
(``authz.terms.INS_SYSTEMS``), so that the FHIR model layer stays free of the DMP's vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Any

#: Sex (1 or 2; 3, 4, 7, 8 for provisional and NIA numbers), year, month, department — two digits
#: or Corsica's 2A/2B — commune and order (digits), then the 2-digit key.
_SHAPE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}[0-9]{2}")
#: INSEE's stand-ins for Corsica's departments when the key is computed.
_CORSICA = {"2A": "19", "2B": "18"}
LENGTH = 15


def nir_key(nir: str) -> str:
    """The 2-digit control key of a 13-character NIR: ``97 - (NIR mod 97)``, Corsica mapped."""
    digits = nir[:5] + _CORSICA.get(nir[5:7], nir[5:7]) + nir[7:]
    return f"{97 - int(digits) % 97:02d}"


def with_key(nir: str) -> str:
    """The INS of a 13-character NIR: the NIR followed by its key."""
    return nir + nir_key(nir)


def ins_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an INS, in words; None for a well-formed INS."""
    if len(value) != LENGTH:
        return f"an INS is {LENGTH} characters (the 13 of the NIR and its 2-digit key); '{value}' has {len(value)}"
    if not _SHAPE.fullmatch(value):
        return f"'{value}' is no INS: 13 digits (2A or 2B for a department of Corsica) and a 2-digit key"
    if value[13:] != nir_key(value[:13]):
        return f"'{value}' is no INS: its key is {value[13:]}, the NIR {value[:13]} has the key {nir_key(value[:13])}"
    return None


def malformed_ins(resource: Any, systems: Collection[str], path: str = "") -> Iterator[tuple[str, str]]:
    """Every Identifier in ``resource`` (at any depth) whose ``system`` is one of ``systems`` and
    whose ``value`` is no INS, as ``(FHIRPath-like location, problem)``."""
    if isinstance(resource, list):
        for k, item in enumerate(resource):
            yield from malformed_ins(item, systems, f"{path}[{k}]")
        return
    if not isinstance(resource, dict):
        return
    path = path or str(resource.get("resourceType", ""))
    value = resource.get("value")
    if resource.get("system") in systems and isinstance(value, str):
        problem = ins_problem(value)
        if problem:
            yield f"{path}.value", problem
    for name, member in resource.items():
        if isinstance(member, dict | list):
            yield from malformed_ins(member, systems, f"{path}.{name}")
