"""What whole-database encryption and ``synchronous=FULL`` cost the SQLite store, measured on the
store itself (no HTTP, no policy), so that only the database differs between the four set-ups.

``python bench/sqlite_cost.py [--patients N] [--rounds R]``: for each of plain/encrypted ×
NORMAL/FULL, on a fresh database in a temporary directory, it times single-resource writes (one
transaction, hence one commit, each: what a FHIR create costs), reads by id, searches by family
name, and opening a connection (which the development server does once per request-thread). The
set-ups run in turn, ``--rounds`` times, and the best round of each is kept, which damps the noise
of a shared machine. Then, per page HMAC SQLCipher may authenticate pages with
(:data:`~storage.sqlite.connection.PAGE_HMACS`), the CPU of a page read from outside SQLite's
cache (in the OS's): a table of 20 000 900-byte rows scanned by a new connection. Figures only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fhir_server.fhir.service import SERVED_TYPES  # noqa: E402  (needs the path fix above)
from fhir_server.runtime.config import PROJECT_ROOT  # noqa: E402
from fhirmodel.indexing import extract_index  # noqa: E402
from fhirmodel.searchparams import SearchParamRegistry  # noqa: E402
from storage.crypto import EnvelopeCipher, MasterKeys  # noqa: E402
from storage.query import OPEN_SCOPE, Query, String  # noqa: E402
from storage.sqlite import dbkey  # noqa: E402
from storage.sqlite.connection import PAGE_HMACS, DatabaseKey, SqliteSettings, connect  # noqa: E402
from storage.sqlite.store import SqliteStore  # noqa: E402

SETUPS = {
    "plain, NORMAL": SqliteSettings(encrypted=False, synchronous="NORMAL"),
    "plain, FULL": SqliteSettings(encrypted=False, synchronous="FULL"),
    "encrypted, NORMAL": SqliteSettings(encrypted=True, synchronous="NORMAL"),
    "encrypted, FULL (default)": SqliteSettings(encrypted=True, synchronous="FULL"),
}
REGISTRY = SearchParamRegistry.load(PROJECT_ROOT / "ig" / "SearchParameter", SERVED_TYPES)


def _param_type(rtype: str, code: str) -> str | None:
    param = REGISTRY.get(rtype, code)
    return param.type if param else None


def _patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"{1800175000000 + n}"}],
        "name": [{"family": f"Family{n % 97}", "given": [f"Given{n}"]}],
        "telecom": [{"system": "email", "value": f"patient{n}@example.org"}],
        "birthDate": "1980-01-01",
    }


def _rate(count: int, action: Callable[[int], object]) -> tuple[float, float]:
    """Operations per second of wall time, and microseconds of this process's CPU per operation:
    on a loaded machine the first mostly measures the wait for a core (and, for writes, for the
    disk); the second is what encryption costs in computation."""
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        action(n)
    return count / (time.perf_counter() - wall), 1e6 * (time.process_time() - cpu) / count


def measure(directory: Path, settings: SqliteSettings, patients: int) -> dict[str, tuple[float, float]]:
    """Operations per second of one set-up on a fresh database in ``directory``."""
    cipher = EnvelopeCipher(MasterKeys.load_or_create(directory))
    database = directory / "bench.sqlite3"
    store = SqliteStore(
        database,
        lambda resource, only=None: extract_index(REGISTRY, resource, "http://127.0.0.1:8080/fhir", only),
        _param_type,
        SERVED_TYPES,
        cipher,
        settings,
    )
    try:
        writes = _rate(patients, lambda n: store.create(_patient(n)))
        reads = _rate(patients, lambda n: store.read("Patient", f"p{n}", OPEN_SCOPE))
        searches = _rate(
            patients // 4,
            lambda n: store.search(Query("Patient", String("family", f"family{n % 97}", "exact")), OPEN_SCOPE),
        )
        key = dbkey.load(database, cipher) if settings.encrypted else None
        opens = _rate(200, lambda n: connect(str(database), key, settings).close())
    finally:
        store.close()
    return {"write": writes, "read by id": reads, "search by family": searches, "connection open": opens}


def page_cost(directory: Path, hmac: str, rows: int = 20_000) -> float:
    """µs of CPU per page of a table scanned by a new connection (its pages decrypted and their
    HMAC checked, from the OS's cache), under a page HMAC of ``hmac``; the least of five scans."""
    database = str(directory / f"pages-{hmac}.sqlite3")
    key, settings = DatabaseKey(secrets.token_bytes(32), hmac), SqliteSettings()
    conn = connect(database, key, settings)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (b) VALUES (?)", ((os.urandom(900),) for _ in range(rows)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.close()
    least = float("inf")
    for _ in range(5):
        conn = connect(database, key, settings)
        started = time.process_time()
        conn.execute("SELECT sum(length(b)) FROM t").fetchone()
        least = min(least, time.process_time() - started)
        conn.close()
    return 1e6 * least / pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=1000, help="Patients written then read (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each set-up; the best is kept (default 3)")
    args = parser.parse_args(argv)
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for _round in range(args.rounds):
        for name, settings in SETUPS.items():
            with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the project's disk, not a RAM /tmp
                figures = measure(Path(tmp), settings, args.patients)
            kept = best.setdefault(name, figures)
            for metric, (rate, cpu) in figures.items():
                kept[metric] = (max(kept[metric][0], rate), min(kept[metric][1], cpu))
    metrics = list(next(iter(best.values())))
    print("ops/s of wall time (µs of CPU per op), best of each set-up's rounds")
    print(f"| set-up | {' | '.join(metrics)} |")
    print(f"|---|{'---:|' * len(metrics)}")
    for name, figures in best.items():
        cells = [f"{figures[m][0]:,.0f} ({figures[m][1]:,.0f})" for m in metrics]
        print(f"| {name} | {' | '.join(cells)} |")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        costs = {hmac: page_cost(Path(tmp), hmac) for hmac in PAGE_HMACS}
    print("\nµs of CPU per page read from outside SQLite's cache, by page HMAC (least of five scans)")
    for hmac, cost in costs.items():
        print(f"| {hmac} | {cost:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
