"""The DMP access rules (DMP-RULES.md R1–R20) as decisions and query filters.

For one request the policy builds an :class:`~authz.policy.access.Access`: who the actor is, the
state of the DMP the token is about, and what the actor may do there (:mod:`authz.policy.reach`).
Reads get a per-type **filter** that the store adds inside every query
(:mod:`authz.policy.filters`). Writes are checked one resource at a time against the same facts
(:mod:`authz.policy.writes`). Every method either returns or raises
:class:`~authz.policy.access.Denied`; nothing is allowed by falling through.
"""

from __future__ import annotations

from authz.lifecycle import DEFAULT_RETENTION_YEARS
from authz.matrix import AuthorisationMatrix
from authz.policy.filters import ReadFilters
from authz.policy.reach import Reach
from authz.policy.writes import WriteRules


class DmpPolicy(Reach, ReadFilters, WriteRules):
    def __init__(self, matrix: AuthorisationMatrix, retention_years: int = DEFAULT_RETENTION_YEARS):
        self.matrix = matrix
        self.retention_years = retention_years  # how long a closed DMP may be reopened (R20)
