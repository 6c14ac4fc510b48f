"""Running the server in production: health and readiness probes, Prometheus metrics, one JSON
log line per request, request ids, trusted proxies, and the gunicorn process that serves it all.

Everything here watches the FHIR server from outside: it reads what a request was (its
interaction, its status, its duration) but never what it was about (no patient, no query).
"""

#: Where prometheus_client's multiprocess mode keeps every worker's samples; ``serve`` sets it
#: before anything imports prometheus_client (which reads it once, at import).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
