"""Where a request's CPU goes: the named parts of a read, an ITI-67 search, a create, an ITI-65
Bundle or a search of the big patient's documents, timed in-process.

``python bench/request_parts.py DATA_DIR [--scenario S] [--requests N] [--in-place]`` (S: read,
iti67-identifier, create, iti65-1doc, big-search-doctor, big-search-nurse) copies a data directory
made by ``bench/run.py --keep`` to a temporary one (with ``--in-place``, serves the directory
itself: one too large to copy), serves it in this process (Flask's test client, one thread),
sends the scenario's requests (``bench/scenarios.py``, the doctor's tokens but for the nurse's
search; the read draws from the directory's ``bench-sample.json``) and prints each part's CPU per
request, timed at its outermost call (a part that calls itself is counted once), beside the whole
request's. The parts nest (a create's index rows are inside the create): the table reads as a
tree, not as a sum. Timing wraps each part in a Python function, which adds about a microsecond a
call. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.auth import DOCTOR, NURSE, Tokens  # noqa: E402  (needs the path fix above)
from bench.datagen import BigPatient, Population  # noqa: E402
from bench.loader import IdSample  # noqa: E402
from bench.main import READ_SAMPLE, read_sample  # noqa: E402
from bench.scenarios import (  # noqa: E402
    Scenario,
    Workload,
    big_search_scenario,
    create_scenario,
    iti65_scenario,
    iti67_identifier_scenario,
    read_scenario,
)
from fhir_server.fhir.ops import MULTIPROC_ENV  # noqa: E402
from fhir_server.runtime.config import Config  # noqa: E402

#: (label, where the part is: ``module:Qualified.name``), in the order printed; indentation shows nesting.
PARTS = (
    ("the request, in Flask", "flask.app:Flask.wsgi_app"),
    ("  its FHIR view", "fhir_server.fhir.http:_dispatch"),
    ("  the request's log line and metrics", "fhir_server.fhir.ops.install:finish"),
    ("the request, in the FHIR service", "fhir_server.fhir.service:FhirService.process"),
    ("  ITI-65: the checks before the transaction", "fhir_server.dmp.documents.mhd:ProvideBundle.check_resources"),
    ("    the CDA parsed, its header read", "fhir_server.dmp.documents.mhd:parse_cda"),
    ("  R4 structure and invariants", "fhir_server.fhir.validation:ResourceValidator.validate"),
    ("    the invariants", "fhir_server.fhir.invariants:InvariantSet.broken"),
    ("  the token and the access decision", "authz.gate:DmpGatekeeper.guard"),
    ("    the token verified", "authz.tokens:TokenVerifier.verify"),
    ("      its revocation looked up", "authz.authserver.revocation:DenyList.revoked"),
    ("  the guard's checks of a write", "authz.gate:DmpGuard.check_write"),
    ("  ITI-65: references rewritten", "fhir_server.fhir.interactions.bundle:_rewrite"),
    ("    conditional references resolved", "fhir_server.fhir.interactions.bundle:_resolve_reference"),
    ("  the store's creates", "storage.sqlite.store:SqliteStore.create"),
    ("    their index rows", "storage.sqlite.store:SqliteStore._index_rows"),
    ("    their sealing", "storage.sqlite.store:SqliteStore._seal"),
    ("  the store's searches", "storage.sqlite.store:SqliteStore.search"),
    ("  the store's reads", "storage.sqlite.store:SqliteStore.read"),
    ("    the policy's filter built", "authz.gate:DmpScope.filter"),
    ("    the filter's SQL found", "storage.sqlite.compiled:CompiledFragments.compile"),
    ("    content opened", "storage.sqlite.store:SqliteStore._open"),
    ("  the response's resources presented", "authz.gate:DmpGuard.present"),
    ("  the COMMIT", "storage.sqlite.group:GroupCommit._close"),
    ("  the request's AuditEvent", "authz.gate:DmpGuard.record"),
    ("    appended to the trail's journal", "storage.sqlite.journal:Journal.append"),
    ("    moved into the trail (a batch)", "storage.sqlite.store:SqliteStore._move_aside"),
)


#: The scenarios measured, by name (those of ``bench/run.py``).
SCENARIOS: dict[str, Callable[[Workload], Scenario]] = {
    "read": read_scenario,
    "iti67-identifier": iti67_identifier_scenario,
    "create": create_scenario,
    "iti65-1doc": lambda workload: iti65_scenario(workload, 1),
    # The first page of the big patient's documents (``bench/run.py --big-patient``), as each professional.
    "big-search-doctor": lambda workload: big_search_scenario(workload, _big(workload), DOCTOR, "doctor"),
    "big-search-nurse": lambda workload: big_search_scenario(workload, _big(workload), NURSE, "nurse"),
}


def _big(workload: Workload) -> BigPatient:
    if workload.big is None:
        raise SystemExit("the directory has no big patient (bench/run.py --big-patient)")
    return workload.big


def _timed(spent: defaultdict[str, float], calls: Counter[str], where: str) -> None:
    """Replace the part at ``where`` by a wrapper adding its CPU to ``spent`` at its outermost call
    in each thread. The CPU of the calling thread: the store's upkeep thread moves the trail while
    a request runs, and the process's clock counted that move in whatever part ran meanwhile."""
    module_name, _, qualified = where.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualified.split(".")
    for step in path:
        owner = getattr(owner, step)
    original: Callable[..., Any] = getattr(owner, name)
    depth = threading.local()

    def part(*args: Any, **kwargs: Any) -> Any:
        depth.n = getattr(depth, "n", 0) + 1
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            depth.n -= 1
            if depth.n == 0:
                spent[where] += time.thread_time() - started
                calls[where] += 1

    setattr(owner, name, part)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="iti65-1doc")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="serve DATA_DIR itself, not a copy (one too large to copy: its trail grows)",
    )
    args = parser.parse_args(argv)
    meta = json.loads((args.data_dir / "bench-meta.json").read_text())
    base = (args.data_dir / "server-base-url").read_text().strip()
    with tempfile.TemporaryDirectory(prefix="request-parts-") as tmp, open(Path(tmp) / "log", "w") as log:
        data = args.data_dir if args.in_place else Path(tmp) / "data"
        if not args.in_place:
            shutil.copytree(args.data_dir, data)
        # As ``dmp-server serve`` runs: metrics shared by its workers, one JSON log line a request,
        # and the app made ready as a worker makes it (``serving``: the store's upkeep thread
        # moves the trail; what the start built is frozen out of the garbage collector, whose full
        # collections of it otherwise added 0.05 ms a request and landed in whichever part ran).
        os.environ[MULTIPROC_ENV] = str(Path(tmp))  # before the app's modules import prometheus_client
        from fhir_server.app import create_app, create_service, serving
        from fhir_server.fhir.ops.access_log import log_as_json_lines

        log_as_json_lines(stream=log)
        spent, calls = defaultdict[str, float](float), Counter[str]()
        for _, where in PARTS:  # before the app is made: it keeps some of them bound (its metrics)
            _timed(spent, calls, where)
        service = create_service(Config(data_dir=data, base_url=base))
        with closing(service.store):  # its upkeep thread stopped before the directory and the log go
            client = serving(create_app(service=service)).test_client()
            pop = Population(patients=int(meta["patients"]), practitioners=int(meta["load"]["practitioners"]))
            sample = IdSample(READ_SAMPLE, random.Random(args.seed))
            if args.scenario == "read" and not read_sample(args.data_dir, sample):
                raise SystemExit(f"{args.data_dir} has no bench-sample.json to read documents from")
            path = "/" + base.split("//", 1)[1].split("/", 1)[1]
            big = BigPatient(pop.patients, int(meta["big_patient"])) if meta.get("big_patient") else None
            workload = Workload(path, pop, Tokens.for_data_dir(data, base), sample.ids, big)
            scenario = SCENARIOS[args.scenario](workload)
            rng = random.Random(args.seed)
            requests = [scenario.make(rng) for _ in range(args.warmup + args.requests)]
            started = time.process_time()
            for index, (method, path, body, headers) in enumerate(requests):
                if index == args.warmup:
                    spent.clear()
                    calls.clear()
                    started = time.process_time()
                answer = client.open(path, method=method, data=body, headers=headers)
                if answer.status_code not in (200, 201):
                    failed = answer.get_data(as_text=True)[:300]
                    raise SystemExit(f"{method} {path}: HTTP {answer.status_code} {failed}")
            whole = (time.process_time() - started) / args.requests
    print(f"{args.scenario} on {args.data_dir}: {args.requests} requests, {1e3 * whole:.2f} ms of CPU each")
    print(f"{'part':<48} {'ms/request':>10} {'calls':>6}")
    for label, where in PARTS:
        if calls[where]:
            print(f"{label:<48} {1e3 * spent[where] / args.requests:>10.3f} {calls[where] / args.requests:>6.1f}")


if __name__ == "__main__":
    main()
