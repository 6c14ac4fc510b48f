"""The ceiling: a Flask app that does nothing, served by the same gunicorn settings.

Its throughput is the most the Python/gunicorn/client stack can give on this machine, so the
FHIR figures can be read as a fraction of it rather than in the abstract.

    gunicorn -w 2 --threads 4 -k gthread bench.ceiling_app:app
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask("ceiling")


@app.get("/ping")
def ping() -> Response:
    return jsonify(status="ok")
