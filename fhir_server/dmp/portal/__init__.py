"""« Mon DMP »: the patient's web space, server-rendered French pages under ``{base}/mon-dmp/``.

Sign-in with the server's own patient login (R21), then the person's documents, who may see the
record, the access history, alerts, download and closure — each page and action a FHIR request
made with the person's own token through :meth:`FhirService.process`, so the DMP policy judges
it and the trail records it exactly as for any client. Templates and static files live in this
package (shipped with it as package data).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask

from fhir_server.dmp.portal import documents, history, settings, sharing, signin
from fhir_server.dmp.portal.ports import Accounts, DocumentKinds
from fhir_server.dmp.portal.sessions import SessionBook
from fhir_server.dmp.portal.web import Portal, register_blueprint
from fhir_server.fhir.service import FhirService

PREFIX = "/mon-dmp"


def register_portal(
    app: Flask, service: FhirService, accounts: Accounts, kinds: DocumentKinds, clock: Callable[[], float]
) -> None:
    """Serve the portal on ``app`` at ``{base}/mon-dmp/``: ``accounts`` signs people in, ``kinds``
    names the documents they may add; ``clock`` (epoch seconds) is the session idle timeout's,
    which tests move."""
    config = service.config
    prefix = f"{config.base_path}{PREFIX}"
    blueprint = Blueprint(
        "portal",
        __name__,
        url_prefix=prefix,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    for module in (signin, documents, sharing, history, settings):
        module.add_routes(blueprint)
    sessions = SessionBook(service.store, config.portal_idle_seconds, clock)
    secure = config.base_url.startswith("https://")
    register_blueprint(app, blueprint, Portal(service, accounts, kinds, sessions, secure, prefix))
