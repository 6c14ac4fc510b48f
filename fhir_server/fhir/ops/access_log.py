"""One JSON line per request, and the request id that ties it to the client's and proxies' logs.

The line says what kind of request it was and how it went — request id, method, FHIR
interaction, resource type, status, duration, client address — and nothing about whom it was
about: no path (it holds resource ids), no query string (it holds identifiers), no body, no token.

``X-Request-ID`` is taken from the request when it is a plain token (a proxy or client set it),
else made here, and always echoed in the answer.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Response, g, request

from fhir_server.fhir.ops.metrics import count_request

REQUEST_ID_HEADER = "X-Request-ID"
#: An incoming request id is kept only if it cannot forge log lines or carry much: a plain token.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=-]{1,128}")
log = logging.getLogger("dmp_server.access")


def request_id(incoming: str | None) -> str:
    """The id of this request: the one sent, if it is a plain token; else a new random one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return secrets.token_hex(16)


def begin() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))


def describe(served_types: tuple[str, ...]) -> tuple[str, str]:
    """(interaction, resource type) of the current request: the FHIR interaction the service
    routed it to, else the name of the endpoint that answered (``auth_token``, ``healthz``...)."""
    fhir_request = g.get("fhir_request")
    if fhir_request is None:
        return request.endpoint or "unmatched", ""
    head = fhir_request.path.split("/", 1)[0]
    return fhir_request.interaction or "unknown", head if head in served_types else ""


def finish(response: Response, served_types: tuple[str, ...], *, metrics: bool) -> Response:
    started = g.get("request_started")
    duration = time.perf_counter() - started if started is not None else 0.0
    rid = g.get("request_id") or request_id(None)
    response.headers[REQUEST_ID_HEADER] = rid
    interaction, resource_type = describe(served_types)
    if metrics:
        count_request(interaction, resource_type, response.status_code, duration)
    fields = {
        "request_id": rid,
        "method": request.method,
        "interaction": interaction,
        "type": resource_type or None,
        "status": response.status_code,
        "duration_ms": round(duration * 1000, 1),
        "client": request.remote_addr,
    }
    if log.isEnabledFor(logging.INFO):
        # ``log.info`` without its search of the stack for the caller's file and line, which no
        # line of this log prints: about 6 µs of every request.
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}))
    return response


class JsonLines(logging.Formatter):
    """Every log record as one JSON object on one line (what log collectors parse), spaced as
    ``json.dumps`` spaces it (operators' searches of the log count on it: orjson, compact, would
    save 5 of the 16 µs a line costs); a value JSON has no type for is written as its ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


#: ``json.dumps(ensure_ascii=False, default=str)``, built once: ``dumps`` builds an encoder per call
#: when given any option.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def log_as_json_lines(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send the process's log records to ``stream`` (stderr) as JSON lines (``dmp-server serve``)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
