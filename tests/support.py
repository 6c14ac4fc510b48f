"""Test support: an open gatekeeper for the FHIR core's conformance tests.

The core (search, history, transactions, formats...) is tested on its own, the way HAPI FHIR tests
its server without interceptors; the DMP rules, with real tokens, have their own tests. This
gatekeeper is not a mock of anything: it is a real access control that allows everything, and it
exists only here — the server itself always builds the DMP gatekeeper.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fhir_server.fhir.messages import FhirRequest
from fhir_server.runtime.config import Config
from fhirmodel.rawjson import RawJson
from fhirmodel.terminology import Terminology
from storage.interface import Store, Stored
from storage.query import OPEN_SCOPE, AccessScope, Expr


class OpenGuard:
    def __init__(self, principal: str = "test", scope: AccessScope = OPEN_SCOPE):
        self._principal = principal
        self._scope = scope

    @property
    def principal(self) -> str:
        return self._principal

    @property
    def scope(self) -> AccessScope:
        return self._scope

    def check_read(self, resource_type: str, interaction: str) -> None:
        return None

    def check_operation(self, resource_type: str, name: str, reads: tuple[str, ...]) -> None:
        return None

    @property
    def requester(self) -> dict[str, Any]:
        return {"role": "open", "who": {"display": self._principal}}

    def check_search(self, resource_type: str, params: list[tuple[str, str]]) -> None:
        return None

    def check_write(
        self, method: str, resource_type: str, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        return None

    def after_write(self, method: str, stored: Stored, old: dict[str, Any] | None) -> None:
        return None

    def finish(self) -> None:
        return None

    def present(self, stored: Stored) -> RawJson | dict[str, Any]:
        assert stored.content is not None
        return RawJson(stored.content)

    def record(self, req: FhirRequest, interaction: str, status: int, reason: str | None) -> None:
        return None


OPEN_GUARD = OpenGuard()


class OpenGatekeeper:
    """Every request gets an open guard, or one limited to ``scope`` (to test filters over HTTP)."""

    def __init__(self, scope: AccessScope = OPEN_SCOPE):
        self._guard = OpenGuard(scope=scope)

    def guard(self, req: FhirRequest, interaction: str) -> OpenGuard:
        return self._guard

    def subscriber_scope(self, subscription_id: str, moment: datetime) -> AccessScope | None:
        return self._guard.scope

    def use_criteria(self, criteria: Callable[[str, list[tuple[str, str]]], Expr]) -> None:
        return None


def open_gatekeeper(config: Config, store: Store, terminology: Terminology) -> OpenGatekeeper:
    return OpenGatekeeper()
