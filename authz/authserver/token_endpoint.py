"""The token endpoint's protocol: requests and OAuth 2.0 errors.

RFC 6749 §3.2 and §5: a POST of form parameters, each at most once, answered with a JSON token
response or a JSON error ``{"error", "error_description"}``, never cached. Each ``grant_type`` is
one function registered in the server's ``GrantRegistry`` (:mod:`authz.authserver.server`), so a
new grant (the patient login's, a token exchange...) is added by registering one function, and the
discovery document lists the registered types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

# RFC 6749 §5.2 error codes, with RFC 8707's for the ``resource`` parameter.
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_SCOPE = "invalid_scope"
INVALID_TARGET = "invalid_target"

#: RFC 6749 §5.1: token responses and errors must not be stored by any cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The only characters RFC 6749 §5.2 allows in ``error_description`` (no ``"`` nor ``\\``).
_NOT_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


class OAuthError(Exception):
    """A refused token request, as RFC 6749 §5.2 reports it.

    ``invalid_client`` is answered 401 with a ``WWW-Authenticate`` challenge. Its scheme is the
    one the client tried in an ``Authorization`` header (RFC 6749 §5.2 requires the match);
    otherwise ``private_key_jwt``: the only method here travels in the body and has no registered
    HTTP scheme, so the challenge names it for the humans reading it (no client parses it).
    """

    def __init__(self, error: str, description: str, *, status: int | None = None, scheme: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = _NOT_DESCRIPTION.sub("?", description)
        self.status = status or (401 if error == INVALID_CLIENT else 400)
        self.scheme = scheme or "private_key_jwt"

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = (
                f'{self.scheme} realm="dmp", error="{self.error}", error_description="{self.description}"'
            )
        return headers


@dataclass(frozen=True)
class TokenRequest:
    """The form parameters of one token request and its ``Authorization`` header, if any."""

    params: Mapping[str, str]
    authorization: str | None = None

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], authorization: str | None = None) -> TokenRequest:
        """RFC 6749 §3.1–3.2: a parameter sent without a value is as if omitted; one sent twice is an error."""
        params: dict[str, str] = {}
        for name, value in pairs:
            if value == "":
                continue
            if name in params:
                raise OAuthError(INVALID_REQUEST, f"parameter {name} is repeated")
            params[name] = value
        return cls(params, authorization)

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def require(self, name: str) -> str:
        value = self.params.get(name)
        if value is None:
            raise OAuthError(INVALID_REQUEST, f"missing parameter: {name}")
        return value
