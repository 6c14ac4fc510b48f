"""Errors as FHIR sees them: an HTTP status and an OperationOutcome.

Interactions raise :class:`FhirError`; the HTTP layer turns it into the response. The message is
written for the client: it names the problem, never internal details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FhirError(Exception):
    """A request that cannot be carried out, with the status and issue code to report."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "processing",
        *,
        expression: list[str] | None = None,
        headers: dict[str, str] | None = None,
        issues: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.expression = expression or []
        self.headers = headers or {}
        # Validation reports every problem at once; `message` then only summarises them.
        self.issues = issues or []

    def outcome(self) -> dict[str, Any]:
        if self.issues:
            return {"resourceType": "OperationOutcome", "issue": list(self.issues)}
        return operation_outcome("error", self.code, self.message, self.expression)


def outcome_issue(severity: str, code: str, message: str, expression: list[str] | None = None) -> dict[str, Any]:
    """One OperationOutcome.issue entry."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = expression
    return issue


def operation_outcome(severity: str, code: str, message: str, expression: list[str] | None = None) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [outcome_issue(severity, code, message, expression)]}


def listing(status: int, code: str, problems: Sequence[tuple[str, str]]) -> FhirError:
    """One error reporting every ``(element, message)`` problem (at least one), each issue naming
    its element; the message names the first and counts the others."""
    issues = [outcome_issue("error", code, f"{where}: {message}", [where]) for where, message in problems]
    where, message = problems[0]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return FhirError(status, f"{where}: {message}{more}", code, expression=[where], issues=issues)


def bad_request(message: str, *, code: str = "invalid", expression: list[str] | None = None) -> FhirError:
    return FhirError(400, message, code, expression=expression)


def not_found(message: str) -> FhirError:
    return FhirError(404, message, "not-found")


def unprocessable(message: str, *, expression: list[str] | None = None) -> FhirError:
    return FhirError(422, message, "invalid", expression=expression)
