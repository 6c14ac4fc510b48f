"""Where the server's own authorisation server lives, and the document that says so.

SMART App Launch 2.2 (§Conformance, "well-known") has clients read
``{base}/.well-known/smart-configuration``; IHE IUA's Get Authorization Server Metadata [ITI-103]
describes the same document in RFC 8414 terms. One document serves both: the RFC 8414 members
(``issuer``, ``jwks_uri``, ``token_endpoint``, ``grant_types_supported``...), SMART's
``capabilities``, and IUA's ``access_token_format``.

Members are published only for what is implemented: the backend-services members here; other
parts of the server (the patient login, the SMART App Launch of patient apps) announce their
endpoints, scopes, capabilities, grants and top-level members (``authorization_endpoint``,
``code_challenge_methods_supported``...) through :class:`Publication`, which the discovery
document merges in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.authserver.assertions import ASSERTION_ALGORITHMS
from authz.tokens import own_issuer

#: The RFC 8693 token type of every access token issued here (IUA ``requested_token_type``).
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: The discovery member that holds the endpoints other parts of the server publish.
EXTRA_ENDPOINTS_MEMBER = "dmp_endpoints"


def token_endpoint(base_url: str) -> str:
    """``{base}/auth/token``: under the issuer ``{base}/auth``, beside the FHIR API it serves."""
    return f"{own_issuer(base_url)}/token"


def jwks_uri(base_url: str) -> str:
    return f"{own_issuer(base_url)}/jwks"


def launch_endpoints(base_url: str) -> dict[str, str]:
    """SMART App Launch's endpoints by their ``oauth-uris`` names (the discovery document's members
    are these names followed by ``_endpoint``)."""
    auth = own_issuer(base_url)
    return {"authorize": f"{auth}/authorize", "introspect": f"{auth}/introspect", "revoke": f"{auth}/revoke"}


def smart_configuration_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/.well-known/smart-configuration"


@dataclass
class Publication:
    """What the discovery document announces beyond the backend-services token endpoint."""

    endpoints: dict[str, str] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=lambda: ["system/*.cruds", "system/*.rs"])
    #: SMART 2.2 capabilities: scopes in v1 and v2 syntax, of the three contexts (``system/`` needs
    #: no capability of its own), enforced as README "SMART scopes" tells.
    capabilities: list[str] = field(
        default_factory=lambda: [
            "client-confidential-asymmetric",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
        ]
    )

    members: dict[str, Any] = field(default_factory=dict)

    def publish(
        self,
        endpoints: Mapping[str, str] | None = None,
        *,
        scopes: Iterable[str] = (),
        capabilities: Iterable[str] = (),
        members: Mapping[str, Any] | None = None,
    ) -> None:
        """Announce more: ``endpoints`` by name (e.g. ``{"patient_login": url}``) under
        ``dmp_endpoints``, scopes clients may request, SMART capabilities, and top-level members
        (which replace the base document's). Repeats are merged."""
        self.endpoints.update(endpoints or {})
        self.members.update(members or {})
        self.scopes.extend(scope for scope in scopes if scope not in self.scopes)
        self.capabilities.extend(cap for cap in capabilities if cap not in self.capabilities)


def smart_configuration(base_url: str, grant_types: Iterable[str], publication: Publication) -> dict[str, Any]:
    """The ``.well-known/smart-configuration`` document (also the ITI-103 metadata)."""
    document: dict[str, Any] = {
        "issuer": own_issuer(base_url),
        "jwks_uri": jwks_uri(base_url),
        "token_endpoint": token_endpoint(base_url),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": sorted(grant_types),
        "scopes_supported": list(publication.scopes),
        "response_types_supported": [],
        "capabilities": list(publication.capabilities),
        "access_token_format": [JWT_TOKEN_TYPE],
    }
    document.update(publication.members)
    if publication.endpoints:
        document[EXTRA_ENDPOINTS_MEMBER] = dict(sorted(publication.endpoints.items()))
    return document
