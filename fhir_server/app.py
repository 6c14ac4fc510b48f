"""The application factory: configuration in, a ready Flask app out.

Everything the server needs is built once here — the search-parameter registry compiled from
``ig/``, the terminology, the store — and handed to the HTTP layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask

from authz.authserver.server import build_authorization_server
from authz.authserver.service import build_account_service
from authz.gate import build_gatekeeper
from fhir_server.account_http import account_endpoints, register_account_routes
from fhir_server.config import Config
from fhir_server.documents.codes import DocumentCodes
from fhir_server.guard import Gatekeeper
from fhir_server.http import register_routes
from fhir_server.launch_http import register_launch_routes
from fhir_server.oauth_http import register_oauth_routes
from fhir_server.search.parser import SearchParser
from fhir_server.service import SERVED_TYPES, FhirService
from fhir_server.validation import ResourceValidator
from fhirmodel.indexing import extract_index
from fhirmodel.searchparams import SearchParamRegistry
from fhirmodel.terminology import Terminology
from storage import open_store
from storage.crypto import EnvelopeCipher, MasterKeys
from storage.interface import Store

#: Builds a server's access control from its configuration, store and terminology.
GatekeeperFactory = Callable[[Config, Store, Terminology], Gatekeeper]


def create_service(config: Config, gatekeeper: GatekeeperFactory = build_gatekeeper) -> FhirService:
    """The service of a configuration; access control is the DMP's unless a test says otherwise."""
    registry = SearchParamRegistry.load(config.ig_dir / "SearchParameter", SERVED_TYPES)
    terminology = Terminology.load(*(config.ig_dir / folder for folder in ("CodeSystem", "ValueSet", "ConceptMap")))

    def param_type(rtype: str, code: str) -> str | None:
        param = registry.get(rtype, code)
        return param.type if param else None

    store = open_store(
        config.store_url,
        default_sqlite=config.sqlite_path,
        indexer=lambda resource: extract_index(registry, resource, config.base_url),
        param_type=param_type,
        resource_types=SERVED_TYPES,
        cipher=EnvelopeCipher(MasterKeys.load_or_create(config.data_dir)),
    )
    return FhirService(
        config=config,
        store=store,
        registry=registry,
        terminology=terminology,
        parser=SearchParser(registry, terminology, config.base_url, config.max_count),
        validator=ResourceValidator(frozenset(SERVED_TYPES)),
        gatekeeper=gatekeeper(config, store, terminology),
        document_codes=DocumentCodes.of(terminology),
    )


def create_app(
    config: Config | None = None, service: FhirService | None = None, *, clock: Callable[[], float] = time.time
) -> Flask:
    """The server; ``clock`` (epoch seconds) is the authorisation server's, which tests move."""
    config = config or (service.config if service else Config.from_env())
    service = service or create_service(config)
    app = Flask("dmp_server")
    app.config["MAX_CONTENT_LENGTH"] = max(config.max_body, config.max_binary_body or 0)
    app.extensions["fhir_service"] = service
    register_routes(app, service)
    auth = build_authorization_server(config, service.store, clock=clock)
    register_oauth_routes(app, auth, config.base_path)
    accounts = build_account_service(config, service, clock=clock, issuer=auth.issuer)
    register_account_routes(app, accounts, config.base_path)
    register_launch_routes(app, auth, accounts, config.base_path)
    auth.publication.publish(account_endpoints(config.base_url))
    return app
