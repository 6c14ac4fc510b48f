"""What :func:`fhir_server.app.serving` does to a process about to serve: the real app on its real
SQLite store, in this process (the gunicorn worker and the development server call the same
function; ``tests/test_serve.py`` runs them as real processes)."""

from __future__ import annotations

import gc
import threading

from flask import Flask

from fhir_server.app import serving

#: What startup builds is counted in tens of thousands of objects (the FHIR model's tables alone).
STARTUP_OBJECTS = 10_000


def test_serving_starts_the_upkeep_and_freezes_what_startup_built(app: Flask) -> None:
    frozen = gc.get_freeze_count()
    try:
        assert serving(app) is app
        assert gc.get_freeze_count() >= frozen + STARTUP_OBJECTS
        assert "dmp-sqlite-upkeep" in {thread.name for thread in threading.enumerate()}
    finally:
        gc.unfreeze()  # this process goes on running other tests
