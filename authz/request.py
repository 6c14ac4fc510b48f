"""What access control reads of a request: the path, the parameters, a header, the peer.

The request type itself belongs to the FHIR side above; access control only needs these facts of
it, so it names them here and any request that has them will do.
"""

from __future__ import annotations

from typing import Protocol


class RequestFacts(Protocol):
    @property
    def path(self) -> str:
        """Relative to the FHIR base, without a leading slash: ``Patient/1/_history/2``."""

    @property
    def params(self) -> list[tuple[str, str]]: ...

    @property
    def client_address(self) -> str | None: ...

    def header(self, name: str) -> str | None: ...
