"""What access control needs of the server's configuration, handed to it by the app factory.

Access control sits below the HTTP side and never reads its configuration: the composition root
builds these settings from it, so the policy layer can be built and tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authz.state_cache import STATES
from authz.tokens import VERIFIED_TOKENS


@dataclass(frozen=True)
class AccessSettings:
    base_url: str  # the FHIR base: the audience of tokens, the issuer's prefix, the trail's server name
    data_dir: Path  # where the server's signing key lives (created on first start)
    ig_dir: Path  # the conformance data; the authorisation matrix is read from it
    trusted_issuers: Path | None = None  # JSON file of trusted token issuers (CONTRACT §1)
    retention_years: int = 10  # how long a closed DMP may be reopened (R20)
    token_cache: int = VERIFIED_TOKENS  # verified tokens (and their actors) each worker keeps
    state_cache: int = STATES  # patients' access states each worker keeps
