"""What a commit by another connection costs the next request, in-process.

SQLite keeps a page cache per connection; in WAL mode a connection that finds the log changed at
the start of its next read transaction cannot tell which pages changed, so it drops its whole
cache (``pager_reset``) and reads every page it needs again — from the file, and here through
SQLCipher, which authenticates and decrypts each one. The server keeps one connection per request
thread (gunicorn: workers × threads), and every request commits its AuditEvent (R17): under load
nearly every request starts on a cold cache, which a single-threaded profile never shows.

``python bench/foreign_commit.py [--docs N] [--requests R] [--rounds K]`` loads a data set the
way ``bench/run.py --load direct`` does, then times the bench doctor's reads and searches by
patient through the Flask test client, one after the other: ``quiet``, as a single-threaded
profile sees them, and ``after a commit``, where another thread's connection of the same store
commits a one-row write before each request (the request's own AuditEvent included, as under
load). Figures: this thread's CPU per request in milliseconds (the other thread's commit is not
counted), the best of ``--rounds`` rounds. Nothing is asserted.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.auth import DOCTOR, Tokens, bearer  # noqa: E402  (needs the path fix above)
from bench.datagen import patient_id  # noqa: E402
from bench.loader import in_process_arguments, load_in_process  # noqa: E402
from fhir_server.app import create_app, create_service  # noqa: E402
from fhir_server.runtime.config import Config  # noqa: E402
from storage.interface import Store  # noqa: E402


class ForeignWriter:
    """A thread of its own (so a connection of its own) that commits one small record on demand."""

    def __init__(self, store: Store):
        self._store = store
        self._asked = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        count = 0
        while True:
            self._asked.acquire()
            if self._stop:
                return
            count += 1
            self._store.put_record("bench-foreign-commit", "last", str(count).encode())
            self._done.release()

    def commit(self) -> None:
        """Return once the other connection has committed."""
        self._asked.release()
        self._done.acquire()

    def close(self) -> None:
        self._stop = True
        self._asked.release()
        self._thread.join()


def _cpu_ms(requests: list[Callable[[], object]], before: Callable[[], None] | None) -> float:
    """This thread's CPU per request, in milliseconds; ``before`` runs ahead of each, uncounted."""
    spent = 0.0
    for request in requests:
        if before is not None:
            before()
        started = time.thread_time()
        request()
        spent += time.thread_time() - started
    return spent / len(requests) * 1e3


def main(argv: list[str] | None = None) -> int:
    args = in_process_arguments(__doc__ or "", 500, argv)

    with tempfile.TemporaryDirectory(prefix="foreign-commit-", dir=ROOT) as tmp:  # the project's disk
        config = Config(data_dir=Path(tmp) / "data")
        sample = load_in_process(config, args.docs, args.seed)
        service = create_service(config)
        client = create_app(service=service).test_client()
        tokens = Tokens.for_data_dir(config.data_dir, config.base_url)
        rng = random.Random(args.seed)
        picks = [rng.choice(sample.ids) for _ in range(args.requests)]
        headers = {patient: bearer(tokens.professional(DOCTOR, patient)) for _, patient in picks}

        def get(url: str, patient: int) -> Callable[[], object]:
            def request() -> object:
                response = client.get(url, headers=headers[patient])
                if response.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {response.status_code}")
                return response

            return request

        kinds = {
            "read": [get(f"/fhir/DocumentReference/{doc}", patient) for doc, patient in picks],
            "search-patient": [
                get(f"/fhir/DocumentReference?patient=Patient/{patient_id(patient)}&_count=10", patient)
                for _, patient in picks
            ],
        }
        writer = ForeignWriter(service.store)
        best: dict[tuple[str, str], float] = {}
        try:
            for kind in kinds.values():  # warm the cache and the caches of the server
                _cpu_ms(kind, None)
            for _round in range(args.rounds):
                for name, requests in kinds.items():
                    for mode, before in (("quiet", None), ("after a commit", writer.commit)):
                        cpu = _cpu_ms(requests, before)
                        best[name, mode] = min(best.get((name, mode), cpu), cpu)
        finally:
            writer.close()
            service.store.close()
    print(f"CPU ms per request, best of {args.rounds} rounds of {args.requests} ({args.docs} documents)")
    print("| request | quiet | after another connection's commit | added |")
    print("|---|---:|---:|---:|")
    for name in kinds:
        quiet, cold = best[name, "quiet"], best[name, "after a commit"]
        print(f"| {name} | {quiet:.2f} | {cold:.2f} | +{cold - quiet:.2f} ({cold / quiet - 1:+.0%}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
