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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.auth import Tokens
from bench.datagen import BigPatient, Population, patient_id
from bench.goals import against_ceiling
from bench.httpload import BigProbe, Target, load_http, probe_big_patient, probe_mhd, sample_ids
from bench.loader import IdSample, LoadPlan, LoadStats, load_direct
from bench.loadgen import Result, Scenario, run_scenario
from bench.mhd import cda_template
from bench.profiling import format_profile, in_process, record
from bench.report import (
    format_bursts,
    format_ingest,
    format_load,
    format_overheads,
    format_table,
    format_vs_ceiling,
    overheads,
    write_json,
)
from bench.scenarios import Workload, ceiling_scenario, read_search_scenarios, write_scenarios
from bench.servers import (
    HOST,
    ROOT,
    OtherLoad,
    Server,
    fhir_base_url,
    free_port,
    start_ceiling,
    start_fhir_server,
    start_open_app,
    stop,
    worker_cpu_seconds,
)
from bench.servers import wait_ready as wait_server
from bench.trail import TrailStats, add_trail, format_trail
from storage.sqlite.connection import SQLITE_VERSION

RESULTS_DIR = ROOT / "bench" / "results"
BASE_PATH = "/fhir"
METADATA = f"{BASE_PATH}/metadata"  # the one FHIR request that needs no token: the readiness probe
MASTER_KEYS = Path("keys") / "master-keys.json"
#: Document ids kept for the random-read scenario.
READ_SAMPLE = 20_000
DOCS_PER_PATIENT = 20
META_FILE = "bench-meta.json"
#: The read scenario's sample of a kept directory, as its load drew it (document id, patient).
SAMPLE_FILE = "bench-sample.json"
PREWARM_CHUNK = 16 * 1024 * 1024
#: Patients searched to collect document ids when a directory is reused.
ID_SAMPLING_SEARCHES = 200
#: Documents of the big patient unless told otherwise (``--big-patient 0``: none).
BIG_PATIENT_DOCS = 1000
#: Above this many documents the default load is direct: over HTTP 1 M documents take hours here.
HTTP_LOAD_MAX_DOCS = 100_000
#: The ceiling measured before and after each scenario of ours: seconds of warm-up, then measured
#: (at most; a shorter ``--warmup``/``--duration`` shortens them too).
BURST_WARMUP = 1.0
BURST_SECONDS = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    p.add_argument("--docs", type=int, default=10_000, help="DocumentReferences to load")
    p.add_argument("--patients", type=int, default=None, help=f"patients (default docs/{DOCS_PER_PATIENT})")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--concurrency", type=int, default=8, help="client threads, one keep-alive connection each")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each scenario")
    p.add_argument(
        "--load",
        choices=("http", "direct"),
        default=None,
        help=f"how to load the data (default: http up to {HTTP_LOAD_MAX_DOCS} documents, direct above)",
    )
    p.add_argument("--batch", type=int, default=250, help="most documents per transaction Bundle (http load)")
    p.add_argument("--max-load-seconds", type=float, default=None, help="stop loading documents after this")
    p.add_argument("--keep", type=Path, default=None, help="data directory to create and keep (must be empty)")
    p.add_argument("--reuse", type=Path, default=None, help="measure a directory made by --keep, without loading")
    p.add_argument("--prewarm", action="store_true", help="read the database file once before measuring")
    p.add_argument(
        "--big-patient",
        type=int,
        default=BIG_PATIENT_DOCS,
        metavar="N",
        help="one extra patient with N documents, 10%% masked, 5%% of a type nurses may not read (0: none)",
    )
    p.add_argument(
        "--compare-open",
        action="store_true",
        help="re-run the read/search scenarios on bench/open_app.py (no access control) and print the overhead",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="DMP_STORE of the server and the direct load, e.g. a MongoDB URI (default: SQLite in the data dir)",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="read",
        default=None,
        metavar="SCENARIO",
        help="sample the server's workers with py-spy during SCENARIO (default read): flame graphs and top frames",
    )
    p.add_argument(
        "--profiler",
        choices=("py-spy", "cprofile"),
        default="py-spy",
        help="py-spy on the workers (default), or cProfile in-process through the Flask test client",
    )
    p.add_argument("--profile-dir", type=Path, default=None, help="where --profile writes (default bench/results/)")
    p.add_argument(
        "--trail",
        type=int,
        default=0,
        metavar="N",
        help="AuditEvents to add to the trail, directly, before the server starts (kept with --keep/--reuse)",
    )
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.docs < 1 or args.concurrency < 1 or args.workers < 1 or args.threads < 1:
        p.error("--docs, --concurrency, --workers and --threads must be at least 1")
    if args.big_patient < 0 or args.trail < 0:
        p.error("--big-patient and --trail must be 0 or more")
    if args.compare_open and args.workers == 1 and args.threads == 1:
        p.error("--compare-open needs --workers or --threads above 1: only then does the server run under gunicorn")
    if args.reuse is not None and args.keep is not None:
        p.error("--reuse and --keep exclude each other")
    if args.store is not None:
        if not args.store.startswith(("mongodb://", "mongodb+srv://", "sqlite:///")):
            p.error("--store: a mongodb://… (or sqlite:///…) URL")
        if args.prewarm:
            p.error("--prewarm reads the SQLite file: not with --store")
        os.environ["DMP_STORE"] = args.store  # the servers started below inherit it
    if args.load is None:
        args.load = "http" if args.docs <= HTTP_LOAD_MAX_DOCS else "direct"
    if args.reuse is not None:
        apply_meta(args, read_meta(args.reuse))
    if args.patients is None:
        args.patients = max(1, args.docs // DOCS_PER_PATIENT)
    return args


def read_meta(data_dir: Path) -> dict[str, Any]:
    path = data_dir / META_FILE
    if not path.exists():
        raise SystemExit(f"--reuse {data_dir}: no {META_FILE}; only a directory made with --keep can be reused")
    if not (data_dir / MASTER_KEYS).exists():
        # Content is encrypted at rest since; the server cannot read a database written before.
        raise SystemExit(f"--reuse {data_dir}: made before encryption at rest (no {MASTER_KEYS}); load it again")
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta


def apply_meta(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """A reused directory fixes what was loaded: the command line cannot change it after the fact."""
    args.docs, args.patients, args.seed = meta["documents"], meta["patients"], meta["seed"]
    args.big_patient = meta.get("big_patient", 0)
    args.load = "reuse"


def write_meta(run: Run, sample: IdSample) -> None:
    """Written only with --keep: what a later --reuse needs to generate matching requests, and
    the documents the read scenario draws from, so that it reads among as many patients then."""
    meta = {
        "documents": run.load.documents if run.load else run.args.docs,
        "patients": run.pop.patients,
        "seed": run.args.seed,
        "big_patient": run.big.documents if run.big else 0,
        "load": run.load.as_dict() if run.load else None,
    }
    (run.data_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (run.data_dir / SAMPLE_FILE).write_text(json.dumps(sample.ids), encoding="utf-8")


def read_sample(data_dir: Path, sample: IdSample) -> bool:
    """The read sample kept with ``data_dir`` into ``sample``; False for a directory kept before
    the samples were (then it is found by searching, see :func:`prepare_workload`)."""
    path = data_dir / SAMPLE_FILE
    if not path.exists():
        return False
    for doc_id, patient in json.loads(path.read_text(encoding="utf-8")):
        sample.add((str(doc_id), int(patient)))
    return True


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
    files = {"db": "dmp.sqlite3", "wal": "dmp.sqlite3-wal", "trail": "dmp.sqlite3.trail"}
    return {k: (data_dir / f).stat().st_size if (data_dir / f).exists() else 0 for k, f in files.items()}


@dataclass
class Run:
    """Everything one invocation measured, in the order it was measured."""

    args: argparse.Namespace
    data_dir: Path
    pop: Population
    big: BigPatient | None = None
    load: LoadStats | None = None
    startup_seconds: float = 0.0
    size_after_load: dict[str, int] | None = None
    big_check: dict[str, Any] = field(default_factory=dict)
    mhd_check: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)  # with the DMP policy, the real server
    trail: TrailStats | None = None  # what --trail added
    profile: str = ""  # what --profile printed
    open_results: list[Result] = field(default_factory=list)  # same scenarios on bench/open_app.py
    ceiling: Server | None = None  # the trivial Flask app, up for the whole run
    bursts: list[float] = field(default_factory=list)  # its req/s around each of our scenarios


def direct_config(run: Run, port: int) -> Any:
    """The configuration of the server about to start, for what the bench writes before it does."""
    from fhir_server.runtime.config import Config

    return Config(data_dir=run.data_dir, base_url=fhir_base_url(port), store_url=run.args.store)


def load_data(run: Run, port: int, sample: IdSample, tokens: Tokens) -> LoadStats:
    args = run.args
    plan = LoadPlan(run.pop, args.docs, args.batch, args.seed, args.max_load_seconds, run.big)
    if args.load == "direct":
        return load_direct(direct_config(run, port), plan, sample)
    return load_http(Target(HOST, port, BASE_PATH), plan, sample, args.workers, tokens)


def measure(scenarios: list[Scenario], server: Server, run: Run, first: int = 0) -> list[Result]:
    """Run the scenarios one after the other; ``first`` offsets the seeds so that a scenario gets
    the same request sequence whichever server it runs against."""
    args = run.args
    results = []
    bracketed = run.ceiling is not None and server.name == "fhir"
    before = ceiling_burst(run) if bracketed else None
    for index, scenario in enumerate(scenarios, start=first):
        timing = f"{args.warmup:g}s warm-up + {args.duration:g}s"
        print(f"measuring {scenario.name} on {server.name} ({timing})...", flush=True)
        cpu_before = worker_cpu_seconds(server)
        other = OtherLoad(server)

        def once(scenario: Scenario = scenario, seed: int = args.seed + index) -> Result:
            return run_scenario(
                scenario,
                HOST,
                server.port,
                concurrency=args.concurrency,
                warmup=args.warmup,
                duration=args.duration,
                seed=seed,
            )

        profiled = args.profile == scenario.name and server.name == "fhir" and not run.profile
        result = profile_scenario(run, scenario, server, once, args.seed + index) if profiled else once()
        cpu = tuple(round(b - a, 1) for a, b in zip(cpu_before, worker_cpu_seconds(server), strict=False))
        result = replace(result, worker_cpu_s=cpu, other_cpu_s=other.seconds())
        if before is not None:
            after = ceiling_burst(run)
            result, before = replace(result, ceiling_rps=(before + after) / 2), after
        results.append(result)
    return results


def ceiling_burst(run: Run) -> float:
    """The ceiling's req/s now, measured briefly: a scenario of ours is read against the mean of
    the bursts before and after it, the machine as it saw it."""
    assert run.ceiling is not None
    args = run.args
    print("measuring the ceiling between scenarios...", flush=True)
    result = run_scenario(
        ceiling_scenario(),
        HOST,
        run.ceiling.port,
        concurrency=args.concurrency,
        warmup=min(args.warmup, BURST_WARMUP),
        duration=min(args.duration, BURST_SECONDS),
        seed=args.seed,
    )
    run.bursts.append(result.rps)
    return result.rps


def profile_scenario(run: Run, scenario: Scenario, server: Server, once: Callable[[], Result], seed: int) -> Result:
    """``--profile``: py-spy on the workers while the scenario is measured (its figures then
    include the sampling's cost), else cProfile in-process after it."""
    args = run.args
    out_dir = args.profile_dir or RESULTS_DIR / f"profile-{time.strftime('%Y%m%dT%H%M%S')}"
    results: list[Result] = []
    profile = None
    if args.profiler == "py-spy":
        profile = record(server, scenario.name, args.warmup + args.duration, out_dir, lambda: results.append(once()))
        if profile is None:
            print("py-spy missing or unable to attach to the workers (ptrace?): cProfile in-process", flush=True)
    if profile is None:
        profile = in_process(scenario, run.data_dir, fhir_base_url(server.port), out_dir, seed)
    result = results[0] if results else once()
    run.profile = format_profile(scenario.name, profile)
    print(run.profile, flush=True)
    return result


@contextmanager
def serving(server: Server, ready_path: str) -> Iterator[tuple[Server, float]]:
    """A started server, ready, stopped on the way out whatever happens; yields its start-up time."""
    try:
        yield server, wait_server(server, ready_path)
    finally:
        stop(server)


def run_fhir(run: Run) -> None:
    """Load (direct before start, http after), measure with the policy, then (``--compare-open``)
    the same read/search scenarios without it, and last ``create``, which grows the data set."""
    args = run.args
    port = free_port()
    tokens = Tokens.for_data_dir(run.data_dir, fhir_base_url(port))
    sample = IdSample(READ_SAMPLE, random.Random(args.seed + 1))
    print(f"load mode: {args.load} ({args.docs} documents, {run.pop.patients} patients)", flush=True)
    if args.load == "direct":
        run.load = load_data(run, port, sample, tokens)
    if args.trail:
        patients = run.pop.patients + (1 if run.big else 0)  # the big patient's index follows the others'
        run.trail = add_trail(direct_config(run, port), args.trail, patients, args.seed + 4)
        print(format_trail(run.trail), flush=True)
    with serving(_fhir_server(run, port), METADATA) as (server, startup):
        run.startup_seconds = startup
        workload = prepare_workload(run, port, sample, tokens)
        reads = read_search_scenarios(workload)
        run.results = measure(reads, server, run)
        if not args.compare_open:
            run.results += measure(write_scenarios(workload), server, run, first=len(reads))
            return
    open_app = start_open_app(run.data_dir, port, args.workers, args.threads, run.data_dir)
    with serving(open_app, METADATA) as (server, _):
        if run.big is not None:
            check_open_app(run, run.big, Target(HOST, port, BASE_PATH), tokens)
        run.open_results = measure(reads, server, run)
    with serving(_fhir_server(run, port), METADATA) as (server, _):
        run.results += measure(write_scenarios(workload), server, run, first=len(reads))


def _fhir_server(run: Run, port: int) -> Server:
    return start_fhir_server(run.data_dir, port, run.args.workers, run.args.threads, run.data_dir)


def prepare_workload(run: Run, port: int, sample: IdSample, tokens: Tokens) -> Workload:
    """Everything between the server's start and the first scenario: load over HTTP or sample a
    reused directory, record its meta data, check the big patient."""
    args = run.args
    target = Target(HOST, port, BASE_PATH)
    if args.load == "http":
        run.load = load_data(run, port, sample, tokens)
    if args.load == "reuse" and not read_sample(run.data_dir, sample):
        # A directory kept before its sample was: searching fills the caches with exactly the
        # patients the read then draws among, so that read keeps every token and state.
        print(f"no {SAMPLE_FILE}: the read draws among {ID_SAMPLING_SEARCHES} patients found by searching", flush=True)
        sample_ids(target, run.pop, ID_SAMPLING_SEARCHES, random.Random(args.seed + 2), sample, tokens)
    if args.keep is not None:
        write_meta(run, sample)
    run.size_after_load = db_size(run.data_dir)
    if run.load is not None:
        print(format_load(run.load), flush=True)
    big_ids = check_big_patient(run, target, tokens) if run.big is not None else ()
    check_mhd(run, target, tokens)
    if args.prewarm:
        prewarm(run.data_dir)
    return Workload(BASE_PATH, run.pop, tokens, sample.ids, run.big, big_ids)


def check_big_patient(run: Run, target: Target, tokens: Tokens) -> tuple[str, ...]:
    """Once, before measuring: the totals the professionals see must follow the labels and the
    matrix. A mismatch is printed, not raised: the figures are still worth having."""
    big = run.big
    if big is None:
        return ()
    probe: BigProbe = probe_big_patient(target, big, tokens)
    run.big_check.update(
        patient=patient_id(big.index),
        documents=big.documents,
        masked=big.masked,
        reimbursements=big.reimbursements,
        doctor_total=probe.doctor_total,
        doctor_expected=big.doctor_sees,
        nurse_total=probe.nurse_total,
        nurse_expected=big.nurse_sees,
    )
    print(
        f"big patient {patient_id(big.index)}: {big.documents} documents, {big.masked} MASQUE_PS, "
        f"{big.reimbursements} REMB; the doctor sees {probe.doctor_total} (expected {big.doctor_sees}), "
        f"the nurse {probe.nurse_total} (expected {big.nurse_sees})",
        flush=True,
    )
    for who, seen, expected in (
        ("doctor", probe.doctor_total, big.doctor_sees),
        ("nurse", probe.nurse_total, big.nurse_sees),
    ):
        if seen != expected:
            print(f"WARNING: the {who}'s search of the big patient has total {seen}, expected {expected}", flush=True)
    return tuple(probe.visible_ids)


def check_mhd(run: Run, target: Target, tokens: Tokens) -> None:
    """Once, before measuring: ITI-67 finds a patient's documents by INS as by reference, and an
    ITI-65 of the bench's CDA is accepted, found and read back. Printed, not raised."""
    probe = probe_mhd(target, run.pop, tokens, random.Random(run.args.seed + 3))
    template = cda_template()
    run.mhd_check.update(
        patient=patient_id(probe.patient),
        total_by_reference=probe.by_reference,
        total_by_identifier=probe.by_identifier,
        provide=probe.provided,
        total_after_provide=probe.after,
        content_read_back=probe.content_back,
        cda_example=template.source,
        cda_bytes=probe.cda_bytes,
        cda_sections=f"{template.sections_kept} of {template.sections}",
        ok=probe.ok,
    )
    print(
        f"MHD check on {patient_id(probe.patient)}: ITI-67 total by reference {probe.by_reference}, by INS "
        f"{probe.by_identifier}; ITI-65 of a {probe.cda_bytes}-byte CDA ({template.source}, "
        f"{template.sections_kept} of {template.sections} sections): {probe.provided}; then by INS {probe.after}, "
        f"content read back {'equal' if probe.content_back else 'DIFFERENT'}",
        flush=True,
    )
    if not probe.ok:
        print("WARNING: the MHD check failed; the iti67-*/iti65-* figures may measure refusals", flush=True)


def check_open_app(run: Run, big: BigPatient, target: Target, tokens: Tokens) -> None:
    """The open app filters nothing: the big patient's search must count every document."""
    total = probe_big_patient(target, big, tokens).doctor_total
    run.big_check["open_total"] = total
    print(f"big patient on the open app: total {total} (expected all {big.documents})", flush=True)
    if total != big.documents:
        print("WARNING: the open app filtered the big patient's documents; the comparison is not like for like")


def prewarm(data_dir: Path) -> None:
    """Read the database once so the OS page cache holds it: separates index work from disk reads.
    The trail's file first: at ten million events it is larger than this machine's memory, and what
    is read last stays — the documents', which every search reads (the trail's, its appends)."""
    started = time.perf_counter()
    total = 0
    for name in ("dmp.sqlite3.trail", "dmp.sqlite3.trail-wal", "dmp.sqlite3", "dmp.sqlite3-wal"):
        path = data_dir / name
        if path.exists():
            with path.open("rb") as f:
                while chunk := f.read(PREWARM_CHUNK):
                    total += len(chunk)
    elapsed = time.perf_counter() - started
    print(f"prewarm: read {total / 1e6:.0f} MB in {elapsed:.1f}s", flush=True)


def environment(run: Run) -> dict[str, Any]:
    args = run.args
    size = run.size_after_load or {}
    return {
        "documents_requested": args.docs,
        "documents_loaded": run.load.documents if run.load else args.docs,
        "patients": run.pop.patients,
        "practitioners": run.pop.practitioners,
        "big_patient_documents": run.big.documents if run.big else 0,
        "trail_added": run.trail.added if run.trail else 0,
        "trail_events": run.trail.events if run.trail else None,
        "workers": args.workers,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "load_mode": args.load,
        "prewarm": args.prewarm,
        "compare_open": args.compare_open,
        "db_bytes": size.get("db", 0),
        "wal_bytes": size.get("wal", 0),
        "trail_bytes": size.get("trail", 0),
        "server_startup_s": round(run.startup_seconds, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "store": _store_name(args.store),
        "sqlite": SQLITE_VERSION,
        "platform": platform.platform(),
        "data_dir": str(run.data_dir),
    }


def _store_name(url: str | None) -> str:
    """The store measured, without the credentials a URL may hold."""
    if url is None:
        return "sqlite (data directory)"
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def report(run: Run) -> Path:
    env = environment(run)
    print()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    main_mb, wal_mb, trail_mb = (env[f"{k}_bytes"] / 1e6 for k in ("db", "wal", "trail"))
    print(f"DB size after load: {main_mb:.1f} MB (+ WAL {wal_mb:.1f} MB, trail {trail_mb:.1f} MB)")
    if run.load is not None:
        print(format_load(run.load))
    print("\nwith the DMP policy (token verification, access decision, filter, one AuditEvent per request):")
    print(format_table(run.results))
    if any(r.documents_per_request for r in run.results):
        print("\nITI-65 ingest (latency per Bundle; each Bundle = SubmissionSet + per document a DocumentReference")
        print("and a Binary with a ~10 KB CDA; one transaction, one AuditEvent, stored encrypted):")
        print(format_ingest(run.results))
    rows = overheads(run.results, run.open_results)
    if run.open_results:
        print("\nwithout policy (bench/open_app.py: open gatekeeper, same data and gunicorn settings):")
        print(format_table(run.open_results))
        print("\noverhead of the policy (req/s cost = share of the open app's throughput lost):")
        print(format_overheads(rows))
    vs_ceiling = against_ceiling(run.results, run.args.warmup + run.args.duration)
    print("\nours vs the trivial-Flask ceiling of this run (issue 11's goals; printed, never asserted):")
    if run.bursts:
        print(format_bursts(run.bursts, min(run.args.duration, BURST_SECONDS)))
    print(format_vs_ceiling(vs_ceiling))
    if run.profile:
        print("\n" + run.profile)
    elif run.args.profile:
        print(f"\nWARNING: --profile {run.args.profile}: no scenario of that name was measured on the server")
    for label, results in (("", run.results), (" (open app)", run.open_results)):
        for r in results:
            if r.first_error:
                print(f"\nfirst error in {r.name}{label}: {r.first_error}")
    payload = {
        "environment": env,
        "load": run.load.as_dict() if run.load else None,
        "big_patient": run.big_check or None,
        "mhd_check": run.mhd_check or None,
        "scenarios": [r.as_dict() for r in run.results],
        "open_scenarios": [r.as_dict() for r in run.open_results],
        "overhead": [row.as_dict() for row in rows],
        "vs_ceiling": [row.as_dict() for row in vs_ceiling],
        "ceiling_bursts": [round(rps, 1) for rps in run.bursts],
    }
    return write_json(RESULTS_DIR, payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir, temporary = prepare_data_dir(args.keep, args.reuse)
    pop = population(args.patients)
    big = BigPatient(index=pop.patients, documents=args.big_patient) if args.big_patient else None
    run = Run(args, data_dir, pop, big)
    try:
        with serving(start_ceiling(args.workers, args.threads, data_dir), "/ping") as (ceiling, _):
            run.ceiling = ceiling
            run_fhir(run)
            run.results += measure([ceiling_scenario()], ceiling, run)
        path = report(run)
        print(f"\nresults written to {path.relative_to(ROOT)}")
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
