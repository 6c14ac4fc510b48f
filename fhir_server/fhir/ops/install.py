"""Hooks the operations endpoints and instruments into an app built by ``create_app``."""

from __future__ import annotations

from flask import Flask, Response

from fhir_server.fhir.ops.access_log import begin, finish
from fhir_server.fhir.ops.health import liveness, readiness
from fhir_server.fhir.ops.metrics import exposition, instrument_audit, instrument_store
from fhir_server.fhir.ops.proxies import TrustedProxies
from fhir_server.fhir.service import FhirService


def install_operations(app: Flask, service: FhirService) -> None:
    """``/healthz``, ``/readyz``, ``/metrics`` (unless ``DMP_METRICS`` is off), the request log and
    id, the store and trail timings, and the client address behind trusted proxies. These paths
    sit beside the FHIR base, not under it, and need no token."""
    config = service.config
    if config.trusted_proxies:
        app.wsgi_app = TrustedProxies(app.wsgi_app, config.trusted_proxies)  # type: ignore[method-assign]
    if config.metrics:
        instrument_store(service.store)
        instrument_audit(service.gatekeeper)
        app.add_url_rule("/metrics", "metrics", exposition, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", liveness, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", lambda: readiness(service), methods=["GET"])
    app.before_request(begin)

    @app.after_request
    def log_request(response: Response) -> Response:
        return finish(response, service.served_types, metrics=config.metrics)
