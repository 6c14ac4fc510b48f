"""The application factory: configuration in, a ready Flask app out.

Everything the server needs is built once here — the search-parameter registry compiled from
``ig/``, the terminology, the store — and handed to the HTTP layer.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from authz.gate import build_gatekeeper
from fhir_server.config import Config
from fhir_server.documents.codes import DocumentCodes
from fhir_server.guard import Gatekeeper
from fhir_server.http import register_routes
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


def create_app(config: Config | None = None, service: FhirService | None = None) -> Flask:
    config = config or (service.config if service else Config.from_env())
    service = service or create_service(config)
    app = Flask("dmp_server")
    app.config["MAX_CONTENT_LENGTH"] = max(config.max_body, config.max_binary_body or 0)
    app.extensions["fhir_service"] = service
    register_routes(app, service)
    return app
