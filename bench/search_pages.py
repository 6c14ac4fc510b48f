"""How many pages a search by patient reads, and its CPU, each on a connection of its own.

``python bench/search_pages.py DATA_DIR [--searches N]`` opens the store of a data directory made
by ``bench/run.py --keep`` (a copy: the store may write, as any open does) and runs, in this
process, ``N`` searches of a random patient's current documents, newest first, 20 a page — the
store's part of an ITI-67 search, without HTTP, tokens or the policy. Each runs on a thread of its
own, so on a connection whose page cache is empty: what it reads is what a serving connection
reads once the file is much larger than its cache (at 1 000 000 documents, a connection's 64 MB
hold about 1 % of the file). Printed: the read system calls of the search (``/proc/self/io``'s
``syscr``; each page SQLCipher reads is one, and is decrypted) and its thread's CPU time, median
and mean. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.datagen import patient_id  # noqa: E402  (needs the path fix above)
from fhir_server.app import create_service  # noqa: E402
from fhir_server.runtime.config import Config  # noqa: E402
from storage.interface import Store  # noqa: E402
from storage.query import ANY_SYSTEM, OPEN_SCOPE, Query, Reference, SortKey, Token, all_of  # noqa: E402


def _read_calls() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscr"))


def _search(store: Store, patient: str, out: list[tuple[int, float]]) -> None:
    where = all_of(Reference("subject", "Patient", patient), Token("status", ANY_SYSTEM, "current"))
    query = Query("DocumentReference", where, count=20, sort=(SortKey("date", descending=True),))
    calls, cpu = _read_calls(), time.thread_time()
    store.search(query, OPEN_SCOPE)
    out.append((_read_calls() - calls, time.thread_time() - cpu))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    patients = int(json.loads((args.data_dir / "bench-meta.json").read_text())["patients"])
    service = create_service(Config(data_dir=args.data_dir))
    rng, out = random.Random(args.seed), list[tuple[int, float]]()
    for _ in range(args.searches):
        worker = threading.Thread(target=_search, args=(service.store, patient_id(rng.randrange(patients)), out))
        worker.start()
        worker.join()
    service.store.close()
    reads, cpu = [r for r, _ in out], [c * 1000 for _, c in out]
    print(
        f"{args.data_dir}: {len(out)} searches by patient on fresh connections:"
        f" pages read median {statistics.median(reads):.0f}, mean {statistics.mean(reads):.1f};"
        f" CPU ms median {statistics.median(cpu):.2f}, mean {statistics.mean(cpu):.2f}"
    )


if __name__ == "__main__":
    main()
