"""The application factory: configuration in, a ready Flask app out.

Everything the server needs is built once here — the search-parameter registry compiled from
``ig/``, the terminology, the store — and handed to the HTTP layer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from flask import Flask

from authz.authserver.grants import build_authorization_server
from authz.gate import build_gatekeeper
from fhir_server.dmp.accounts.http import account_endpoints, register_account_routes
from fhir_server.dmp.accounts.launch_http import register_launch_routes
from fhir_server.dmp.accounts.service import build_account_service
from fhir_server.dmp.alerts.admission import SubscriptionAdmission
from fhir_server.dmp.alerts.job import alerts
from fhir_server.dmp.documents.codes import DocumentCodes
from fhir_server.dmp.documents.extension import documents_extensions
from fhir_server.dmp.export.operation import EXPORT
from fhir_server.dmp.jobs import Job, encode_access_stamps, purge_expired_records
from fhir_server.dmp.lifecycle.majority import majority_job
from fhir_server.dmp.oauth.http import register_oauth_routes
from fhir_server.dmp.oauth.token_status import register_token_status_routes
from fhir_server.dmp.portal import register_portal
from fhir_server.fhir.conformance.api_page import register_api_description_routes
from fhir_server.fhir.http import register_routes
from fhir_server.fhir.interactions.operations import CORE
from fhir_server.fhir.invariants import InvariantSet
from fhir_server.fhir.messages import Gatekeeper
from fhir_server.fhir.ops.install import install_operations
from fhir_server.fhir.routing import route
from fhir_server.fhir.search.parser import SearchParser
from fhir_server.fhir.service import SERVED_TYPES, Extensions, FhirService
from fhir_server.fhir.sessions import PagingSessions
from fhir_server.fhir.validation import ResourceValidator
from fhir_server.runtime.config import Config
from fhirmodel.indexing import extract_index
from fhirmodel.searchparams import SearchParamRegistry
from fhirmodel.terminology import Terminology
from storage import SqliteSettings, open_store
from storage.crypto import EnvelopeCipher, MasterKeys
from storage.interface import Store

#: The periodic jobs, by name, in the order they run (``fhir_server.dmp.jobs``). No purge of closed
#: DMPs here: removing them for good is an operator's decision (``dmp-server purge``).
JOBS: dict[str, Job] = {
    "majority": majority_job,
    "alerts": alerts,
    "purge-records": purge_expired_records,
    "access-stamps": encode_access_stamps,
}

#: Builds a server's access control from its configuration, store and terminology.
GatekeeperFactory = Callable[[Config, Store, Terminology], Gatekeeper]


def dmp_gatekeeper(config: Config, store: Store, terminology: Terminology) -> Gatekeeper:
    """Access control by the DMP rules (``authz``), from this configuration."""
    return build_gatekeeper(config.access, store, terminology)


def create_service(config: Config, gatekeeper: GatekeeperFactory = dmp_gatekeeper) -> FhirService:
    """The service of a configuration; access control is the DMP's unless a test says otherwise."""
    registry = SearchParamRegistry.load(config.ig_dir / "SearchParameter", SERVED_TYPES)
    terminology = Terminology.load(*(config.ig_dir / folder for folder in ("CodeSystem", "ValueSet", "ConceptMap")))

    def param_type(rtype: str, code: str) -> str | None:
        param = registry.get(rtype, code)
        return param.type if param else None

    cipher = EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file))
    store = open_store(
        config.store_url,
        default_sqlite=config.sqlite_path,
        indexer=lambda resource, only=None: extract_index(registry, resource, config.base_url, only),
        param_type=param_type,
        resource_types=SERVED_TYPES,
        cipher=cipher,
        sqlite=SqliteSettings(cache_mb=config.sqlite_cache_mb, synchronous=config.sqlite_synchronous),
    )
    parser = SearchParser(registry, terminology, config.base_url, config.max_count)
    access = gatekeeper(config, store, terminology)
    access.use_criteria(parser.criteria)
    return FhirService(
        config=config,
        store=store,
        registry=registry,
        terminology=terminology,
        parser=parser,
        validator=ResourceValidator(
            frozenset(SERVED_TYPES), InvariantSet.load(config.ig_dir / "invariants" / "r4-invariants.json")
        ),
        gatekeeper=access,
        router=route,
        sessions=PagingSessions(store, cipher, config.search_session_seconds),
        extensions=capabilities(config, terminology),
    )


def capabilities(config: Config, terminology: Terminology) -> Extensions:
    """The FHIR machinery's own operations and what each DMP capability adds to it."""
    alerts = Extensions(write_rules=(SubscriptionAdmission(config.subscription_allow_http),))
    return CORE + documents_extensions(terminology) + alerts + EXPORT


def serving(app: Flask) -> Flask:
    """``app`` about to serve requests in this process (a gunicorn worker, the development
    server): its store's upkeep started, e.g. the SQLite log checkpointed beside the writers; and
    what the process built to start (the FHIR model's tables, search parameters, terminologies:
    ~110 000 objects) frozen out of the garbage collector's reach. Why: each full collection
    walked all of them, 50-70 ms with the interpreter lock held, stalling every request thread of
    the worker; a request's own garbage is still collected (and anything frozen still freed once
    nothing refers to it)."""
    app.extensions["fhir_service"].store.start_upkeep()
    gc.collect()  # what is garbage now would stay, frozen
    gc.freeze()
    return app


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
    register_api_description_routes(app, service)
    auth = build_authorization_server(config.base_url, config.data_dir, service.store, clock=clock)
    register_oauth_routes(app, auth, config.base_path)
    register_token_status_routes(app, auth, config.base_path)
    accounts = build_account_service(config, service, clock=clock, issuer=auth.issuer)
    register_account_routes(app, accounts, config.base_path)
    register_launch_routes(app, auth, accounts, config.base_path)
    auth.publication.publish(account_endpoints(config.base_url))
    register_portal(app, service, accounts, DocumentCodes.of(service.terminology), clock)
    install_operations(app, service)
    return app
