"""Liveness and readiness, for an orchestrator or a load balancer.

``GET /healthz`` says the process answers (restart it if not). ``GET /readyz`` says it can serve:
the store answers a query, and the keys it cannot work without are still in the data directory
and usable — the token-signing key and the master keys of encryption at rest. A key file gone
(a bad restore, a wrong volume) makes the server unready (503) rather than have it fail every
write or, worse, start sealing with a key that only lives in memory.
Neither needs a token nor says anything about the records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, jsonify

from authz.keys import ServerKey, server_key_path
from fhir_server.fhir.service import FhirService
from storage.crypto import KEY_DIR_NAME, MASTER_KEYS_FILE, EnvelopeCipher, MasterKeys

_PROBE = b"readyz"


def _store(service: FhirService) -> None:
    service.store.exists("Patient", "readyz-probe")


def _signing_key(service: FhirService) -> None:
    ServerKey.from_pem(server_key_path(service.config.data_dir).read_bytes())


def _master_keys(service: FhirService) -> None:
    config = service.config
    path = config.master_key_file or config.data_dir / KEY_DIR_NAME / MASTER_KEYS_FILE
    if not path.is_file():  # checked first: loading a missing file would create a new key
        raise FileNotFoundError(f"{path} is missing")
    cipher = EnvelopeCipher(MasterKeys.load_or_create(config.data_dir, config.master_key_file))
    if cipher.open(cipher.seal(_PROBE, _PROBE), _PROBE) != _PROBE:
        raise ValueError("the master key does not open what it sealed")


#: What readiness checks, by name (the name is what a failing check reports).
CHECKS: dict[str, Callable[[FhirService], None]] = {
    "store": _store,
    "signing-key": _signing_key,
    "master-keys": _master_keys,
}


def failing(service: FhirService) -> dict[str, str]:
    """The checks that fail now, each with the kind of error (no message: it may name paths)."""
    failed: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(service)
        except Exception as exc:  # any failure means "not ready", whatever it is
            failed[name] = type(exc).__name__
    return failed


def liveness() -> Response:
    return _answer(200, {"status": "ok"})


def readiness(service: FhirService) -> Response:
    failed = failing(service)
    if failed:
        return _answer(503, {"status": "unavailable", "failing": failed})
    return _answer(200, {"status": "ready", "checks": list(CHECKS)})


def _answer(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response
