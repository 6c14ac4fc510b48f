"""The account service: patient login, account administration, DMP creation codes, built once.

Everything shares the FHIR service's store (accounts, codes and challenges are sealed private
records beside the resources), the server's signing key (tokens verify like any other issuer's),
one mailer and SMS gateway, and one epoch-seconds clock, which tests move to expire codes and
lockouts without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.actor import Actor, Known
from authz.authserver.accounts import AccountBook, Ident
from authz.authserver.creation_codes import CreationCodes
from authz.authserver.errors import AuthError
from authz.authserver.issuer import TokenIssuer
from authz.authserver.passwords import PasswordHasher, valid_cost
from authz.authserver.sms import OUTBOX_FILE_NAME, OutboxSmsGateway, SmsGateway
from authz.gate import caller, server_verifier
from authz.keys import load_or_create_server_key
from authz.terms import ADMINISTRATION
from authz.tokens import TokenVerifier, own_issuer
from fhir_server.dmp.accounts.admin import AccountAdmin
from fhir_server.dmp.accounts.delivery import CodeSender
from fhir_server.dmp.accounts.dmp_creation import DmpCreation
from fhir_server.dmp.accounts.login import Login
from fhir_server.dmp.accounts.trail import AccountTrail
from fhir_server.runtime.config import Config
from fhir_server.runtime.mail import Mailer, mailer_from
from fhirmodel.errors import FhirError
from storage.interface import Store
from storage.query import OPEN_SCOPE, Query, Token

if TYPE_CHECKING:
    from fhir_server.fhir.service import FhirService


@dataclass
class AccountService:
    store: Store
    issuer: TokenIssuer
    book: AccountBook
    login: Login
    admin: AccountAdmin
    creation: DmpCreation
    verifier: TokenVerifier
    known: Known
    clock: Callable[[], float]

    def caller(self, authorization: str | None, roles: tuple[str, ...]) -> Actor:
        """The bearer of a valid token with one of ``roles``, identified exactly as the FHIR API
        identifies its callers; 401 or 403 otherwise."""
        try:
            actor = caller(self.verifier, self.known, authorization)
        except FhirError as exc:
            if exc.status == 401:
                raise AuthError(401, "invalid_token", exc.message, headers=exc.headers) from None
            raise AuthError(exc.status, "access_denied", exc.message) from None
        if actor.role not in roles:
            raise AuthError(403, "access_denied", f"this needs the role {' or '.join(roles)}")
        return actor

    def administrator(self, authorization: str | None) -> Actor:
        return self.caller(authorization, (ADMINISTRATION,))


def build_account_service(
    config: Config,
    fhir: FhirService,
    *,
    clock: Callable[[], float] = time.time,
    mailer: Mailer | None = None,
    sms: SmsGateway | None = None,
    issuer: TokenIssuer | None = None,
) -> AccountService:
    """The account service of a server (``create_app`` and the CLI build it the same way);
    ``issuer``: the authorisation server's, so that its token endpoint refreshes what login issues."""
    if not valid_cost(config.password_kdf_cost):
        raise ValueError(f"DMP_PASSWORD_KDF_COST must be a power of two above 1, not {config.password_kdf_cost}")
    store = fhir.store
    issuer = issuer or TokenIssuer(
        load_or_create_server_key(config.data_dir), own_issuer(config.base_url), config.base_url, store, clock=clock
    )
    book = AccountBook(store)
    trail = AccountTrail(store, config.base_url)
    hasher = PasswordHasher(config.password_kdf_cost)
    sender = CodeSender(
        mailer or mailer_from(config), sms or OutboxSmsGateway(config.data_dir / OUTBOX_FILE_NAME, clock)
    )

    def dmp_exists(ins: Ident) -> bool:
        query = Query("Patient", Token("identifier", ins[0], ins[1]), count=1, total=False)
        return bool(store.search(query, OPEN_SCOPE).matches)

    return AccountService(
        store=store,
        issuer=issuer,
        book=book,
        login=Login(book, hasher, issuer, sender, clock, trail),
        admin=AccountAdmin(book, hasher, issuer, clock, dmp_exists, trail),
        creation=DmpCreation(CreationCodes(store, clock), book, hasher, issuer, fhir, clock, dmp_exists, trail),
        verifier=server_verifier(config.access, store),
        known=fhir.terminology.has_code,
        clock=clock,
    )
