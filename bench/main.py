"""``python bench/run.py``: load a fresh data set, start the real server, measure it over HTTP.

One command so that every figure in ``bench/README.md`` can be reproduced as is. Figures only:
nothing here asserts on a timing, because what is fast enough depends on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.datagen import Population
from bench.loader import IdSample, LoadPlan, LoadStats, Target, load_direct, load_http, sample_ids
from bench.loadgen import Result, Scenario, run_scenario
from bench.scenarios import ceiling_scenario, fhir_scenarios
from bench.servers import (
    HOST,
    ROOT,
    Server,
    fhir_base_url,
    free_port,
    start_ceiling,
    start_fhir_server,
    stop,
    worker_cpu_seconds,
)
from bench.servers import wait_ready as wait_server

RESULTS_DIR = ROOT / "bench" / "results"
BASE_PATH = "/fhir"
#: Document ids kept for the random-read scenario.
READ_SAMPLE = 20_000
DOCS_PER_PATIENT = 20
META_FILE = "bench-meta.json"
PREWARM_CHUNK = 16 * 1024 * 1024
#: Patients searched to collect document ids when a directory is reused.
ID_SAMPLING_SEARCHES = 200


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    p.add_argument("--docs", type=int, default=10_000, help="DocumentReferences to load")
    p.add_argument("--patients", type=int, default=None, help=f"patients (default docs/{DOCS_PER_PATIENT})")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--concurrency", type=int, default=8, help="client threads, one keep-alive connection each")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each scenario")
    p.add_argument("--load", choices=("http", "direct"), default="http", help="how to load the data")
    p.add_argument("--batch", type=int, default=250, help="entries per transaction Bundle (http load)")
    p.add_argument("--max-load-seconds", type=float, default=None, help="stop loading documents after this")
    p.add_argument("--keep", type=Path, default=None, help="data directory to create and keep (must be empty)")
    p.add_argument("--reuse", type=Path, default=None, help="measure a directory made by --keep, without loading")
    p.add_argument("--prewarm", action="store_true", help="read the database file once before measuring")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.docs < 1 or args.concurrency < 1 or args.workers < 1 or args.threads < 1:
        p.error("--docs, --concurrency, --workers and --threads must be at least 1")
    if args.reuse is not None and args.keep is not None:
        p.error("--reuse and --keep exclude each other")
    if args.reuse is not None:
        apply_meta(args, read_meta(args.reuse))
    if args.patients is None:
        args.patients = max(1, args.docs // DOCS_PER_PATIENT)
    return args


def read_meta(data_dir: Path) -> dict[str, Any]:
    path = data_dir / META_FILE
    if not path.exists():
        raise SystemExit(f"--reuse {data_dir}: no {META_FILE}; only a directory made with --keep can be reused")
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta


def apply_meta(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """A reused directory fixes what was loaded: the command line cannot change it after the fact."""
    args.docs, args.patients, args.seed = meta["documents"], meta["patients"], meta["seed"]
    args.load = "reuse"


def write_meta(run: Run) -> None:
    """Written only with --keep: what a later --reuse needs to generate matching requests."""
    meta = {
        "documents": run.load.documents if run.load else run.args.docs,
        "patients": run.pop.patients,
        "seed": run.args.seed,
        "load": run.load.as_dict() if run.load else None,
    }
    (run.data_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def population(patients: int) -> Population:
    """About one practitioner per ten patients, as in a territory's care network."""
    return Population(patients=patients, practitioners=min(5000, max(10, patients // 10)))


def prepare_data_dir(keep: Path | None, reuse: Path | None) -> tuple[Path, bool]:
    """A fresh directory (figures from a data set of unknown origin would mean nothing) or a reused one."""
    if reuse is not None:
        return reuse.resolve(), False
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="dmp-bench-")), True
    if keep.exists() and any(keep.iterdir()):
        raise SystemExit(f"--keep {keep}: the directory is not empty; give a new or empty one")
    keep.mkdir(parents=True, exist_ok=True)
    return keep.resolve(), False


def db_size(data_dir: Path) -> dict[str, int]:
    files = {"db": "dmp.sqlite3", "wal": "dmp.sqlite3-wal"}
    return {k: (data_dir / f).stat().st_size if (data_dir / f).exists() else 0 for k, f in files.items()}


@dataclass
class Run:
    """Everything one invocation measured, in the order it was measured."""

    args: argparse.Namespace
    data_dir: Path
    pop: Population
    load: LoadStats | None = None
    startup_seconds: float = 0.0
    size_after_load: dict[str, int] | None = None
    results: list[Result] | None = None


def load_data(run: Run, port: int, sample: IdSample) -> LoadStats:
    args = run.args
    plan = LoadPlan(run.pop, args.docs, args.batch, args.seed, args.max_load_seconds)
    if args.load == "direct":
        from fhir_server.config import Config

        config = Config(data_dir=run.data_dir, base_url=fhir_base_url(port))
        return load_direct(config, plan, sample)
    return load_http(Target(HOST, port, BASE_PATH), plan, sample, clients=args.workers)


def measure(scenarios: list[Scenario], server: Server, args: argparse.Namespace) -> list[Result]:
    results = []
    for index, scenario in enumerate(scenarios):
        print(f"measuring {scenario.name} ({args.warmup:g}s warm-up + {args.duration:g}s)...", flush=True)
        cpu_before = worker_cpu_seconds(server)
        result = run_scenario(
            scenario,
            HOST,
            server.port,
            concurrency=args.concurrency,
            warmup=args.warmup,
            duration=args.duration,
            seed=args.seed + index,
        )
        cpu = tuple(round(b - a, 1) for a, b in zip(cpu_before, worker_cpu_seconds(server), strict=False))
        results.append(replace(result, worker_cpu_s=cpu))
    return results


def run_fhir(run: Run) -> list[Result]:
    """Load (direct before start, http after), start the real server, run the FHIR scenarios."""
    args = run.args
    port = free_port()
    sample = IdSample(READ_SAMPLE, random.Random(args.seed + 1))
    print(f"load mode: {args.load} ({args.docs} documents, {run.pop.patients} patients)", flush=True)
    if args.load == "direct":
        run.load = load_data(run, port, sample)
    server = start_fhir_server(run.data_dir, port, args.workers, args.threads, run.data_dir)
    try:
        run.startup_seconds = wait_server(server, f"{BASE_PATH}/metadata")
        target = Target(HOST, port, BASE_PATH)
        if args.load == "http":
            run.load = load_data(run, port, sample)
        if args.load == "reuse":
            sample_ids(target, run.pop, ID_SAMPLING_SEARCHES, random.Random(args.seed + 2), sample)
        if args.keep is not None:
            write_meta(run)
        run.size_after_load = db_size(run.data_dir)
        print_load(run.load)
        if args.prewarm:
            prewarm(run.data_dir)
        return measure(fhir_scenarios(BASE_PATH, run.pop, sample.ids), server, args)
    finally:
        stop(server)


def prewarm(data_dir: Path) -> None:
    """Read the database once so the OS page cache holds it: separates index work from disk reads."""
    started = time.perf_counter()
    total = 0
    for name in ("dmp.sqlite3", "dmp.sqlite3-wal"):
        path = data_dir / name
        if path.exists():
            with path.open("rb") as f:
                while chunk := f.read(PREWARM_CHUNK):
                    total += len(chunk)
    elapsed = time.perf_counter() - started
    print(f"prewarm: read {total / 1e6:.0f} MB in {elapsed:.1f}s", flush=True)


def run_ceiling(run: Run) -> list[Result]:
    server = start_ceiling(run.args.workers, run.args.threads, run.data_dir)
    try:
        wait_server(server, "/ping")
        return measure([ceiling_scenario()], server, run.args)
    finally:
        stop(server)


def print_load(load: LoadStats | None) -> None:
    if load is None:
        return
    note = " (stopped early by --max-load-seconds)" if load.stopped_early else ""
    print(
        f"loaded ({load.mode}): {load.reference_resources} patients+practitioners in {load.reference_seconds:.1f}s, "
        f"{load.documents} documents in {load.document_seconds:.1f}s = {load.docs_per_second:.0f} docs/s{note}",
        flush=True,
    )


def environment(run: Run) -> dict[str, Any]:
    args = run.args
    size = run.size_after_load or {}
    return {
        "documents_requested": args.docs,
        "documents_loaded": run.load.documents if run.load else args.docs,
        "patients": run.pop.patients,
        "practitioners": run.pop.practitioners,
        "workers": args.workers,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "load_mode": args.load,
        "prewarm": args.prewarm,
        "db_bytes": size.get("db", 0),
        "wal_bytes": size.get("wal", 0),
        "server_startup_s": round(run.startup_seconds, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "data_dir": str(run.data_dir),
    }


def format_table(results: list[Result]) -> str:
    columns = ("req/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    head = f"{'scenario':<26}" + "".join(f"{c:>9}" for c in columns) + f"{'errors':>8}  worker cpu s"
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r.latencies_ms
        lines.append(
            f"{r.name:<26}{r.rps:>9.1f}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}{lat['max']:>9.2f}"
            f"{r.errors:>8}  {' + '.join(f'{c:g}' for c in r.worker_cpu_s)}"
        )
    return "\n".join(lines)


def report(run: Run) -> Path:
    env = environment(run)
    results = run.results or []
    print()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"DB size after load: {env['db_bytes'] / 1e6:.1f} MB (+ WAL {env['wal_bytes'] / 1e6:.1f} MB)")
    print_load(run.load)
    print()
    print(format_table(results))
    for r in results:
        if r.first_error:
            print(f"\nfirst error in {r.name}: {r.first_error}")
    return write_json(env, run, results)


def write_json(env: dict[str, Any], run: Run, results: list[Result]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    payload = {
        "environment": env,
        "load": run.load.as_dict() if run.load else None,
        "scenarios": [r.as_dict() for r in results],
    }
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir, temporary = prepare_data_dir(args.keep, args.reuse)
    run = Run(args, data_dir, population(args.patients))
    try:
        run.results = run_fhir(run) + run_ceiling(run)
        path = report(run)
        print(f"\nresults written to {path.relative_to(ROOT)}")
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
