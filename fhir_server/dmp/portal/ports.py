"""What the portal needs of the other capabilities, as the app factory hands it over.

The DMP capabilities are independent of each other (the ``capabilities`` import contract): the
portal signs people in with the patient login of ``fhir_server.dmp.accounts`` and offers the
document types of ``fhir_server.dmp.documents``, but never imports them. These protocols say what
it uses; ``fhir_server.app`` passes the real objects, which match them structurally.
"""

from __future__ import annotations

from typing import Any, Protocol

from authz.authserver.accounts import AccountBook
from authz.authserver.issuer import TokenIssuer

Code = tuple[str, str]


class LoginSteps(Protocol):
    """The patient login (R21), step by step, as ``{base}/auth/login…`` runs it."""

    def start(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def verify(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def change_password(self, body: dict[str, Any]) -> dict[str, Any]: ...


class Accounts(Protocol):
    """The account service: its login, the issuer of the tokens it gives, the accounts."""

    @property
    def login(self) -> LoginSteps: ...

    @property
    def issuer(self) -> TokenIssuer: ...

    @property
    def book(self) -> AccountBook: ...


class DocumentKinds(Protocol):
    """The document types (JDV_J07) and DMP classes (JDV_J57), and the type → class map."""

    @property
    def types(self) -> frozenset[Code]: ...

    @property
    def classes(self) -> frozenset[Code]: ...

    def class_of(self, system: str, code: str) -> frozenset[Code]: ...
