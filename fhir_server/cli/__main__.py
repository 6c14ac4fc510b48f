"""``python -m fhir_server.cli``: the ``dmp-server`` command."""

import sys

from fhir_server.cli import main

sys.exit(main())
