"""Entry point: ``python bench/run.py --help`` (also ``python -m bench.run``).

Run as a script, Python puts ``bench/`` rather than the project root on ``sys.path``; the root is
added here so that ``bench.*`` and the server packages import the same way in both forms.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.main import main  # noqa: E402  (needs the path fix above)

if __name__ == "__main__":
    sys.exit(main())
