"""The FHIR server with access control switched off, to measure what the DMP policy costs.

This exists only so that ``bench/run.py --compare-open`` can measure the same build, data and
gunicorn settings with and without the DMP rules. It is never how the server runs: ``dmp-server
serve`` always builds the DMP gatekeeper (``authz.gate.build_gatekeeper``), and the open
gatekeeper used here is the one the FHIR core's own tests use (``tests.support``), which lets
every request through, records nothing and ignores the tokens the bench still sends.

    DMP_DATA_DIR=... DMP_BASE_URL=... gunicorn -w 2 --threads 4 -k gthread bench.open_app:app
"""

from __future__ import annotations

from fhir_server.app import create_app, create_service
from fhir_server.runtime.config import Config
from tests.support import open_gatekeeper

app = create_app(service=create_service(Config.from_env(), gatekeeper=open_gatekeeper))
