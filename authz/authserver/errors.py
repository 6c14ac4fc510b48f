"""Errors of the account endpoints, in the OAuth 2.0 convention (RFC 6749 §5.2, RFC 6750 §3.1).

Every ``{base}/auth/…`` endpoint answers an error as ``{"error": code, "error_description":
text}``, like the token endpoint next to them, so that one client library reads them all. Login
refusals of every kind — unknown identifier, wrong password, wrong, expired or reused code,
locked account — are one and the same :data:`LOGIN_REFUSED`, so that nobody learns from the
answer whether an account exists or is locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class AuthError(Exception):
    status: int
    error: str  # OAuth error code (invalid_request, invalid_grant, invalid_token, access_denied...)
    description: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the OperationOutcome of a FHIR refusal

    def __post_init__(self) -> None:
        super().__init__(self.description)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description, **self.extra}


def invalid_request(description: str) -> AuthError:
    return AuthError(400, "invalid_request", description)


def login_refused() -> AuthError:
    """The one answer to every failed login step (R21: no account enumeration)."""
    return AuthError(401, "invalid_grant", "the identifier, password or code was not accepted")


def code_refused() -> AuthError:
    """The one answer to a DMP creation code that is unknown, wrong, used, expired or for another INS."""
    return AuthError(401, "invalid_grant", "the INS and creation code were not accepted")


def unavailable(description: str) -> AuthError:
    return AuthError(503, "temporarily_unavailable", description)
