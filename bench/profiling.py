"""``--profile``: where the server's time goes during one scenario, as flame graphs.

py-spy samples the running gunicorn workers from outside (``--subprocesses`` on the master
follows every worker), so the profile is of the real server under the real load, not of a test
client. Two samplers run side by side without pausing the workers (``--nonblocking``): one
writes the SVG flame graph, the other the collapsed stacks (``--format raw``, which speedscope
and ``flamegraph.pl`` open), from which the top own-time frames are printed.

py-spy needs ptrace rights over the workers. Where it has none (a container without
``CAP_SYS_PTRACE``, Yama's ``ptrace_scope``), the same scenario's requests are replayed
in-process through the Flask test client under ``cProfile`` on the same data directory: no
gunicorn and no concurrency, but the same request path. What was used is printed.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import Scenario
from bench.servers import Server

#: Frames printed: the issue asks for the flame graphs' top costs in bench/README.md.
TOP = 10
#: Samples per second of each sampler: py-spy's default, cheap enough for a 2-core machine.
RATE = 100
#: Requests replayed under cProfile when py-spy cannot attach.
CPROFILE_REQUESTS = 300
#: Seconds to wait for a sampler to write its file once the scenario is over.
WRITE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Profile:
    """What one ``--profile`` run wrote and found."""

    tool: str  # "py-spy" or "cProfile (in-process)"
    files: tuple[Path, ...]
    top: tuple[tuple[str, float], ...]  # (frame, share of samples or of own time, in %)
    note: str = ""


def py_spy() -> str | None:
    """The py-spy next to this Python (the ``bench`` extra installs it), else one on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(server: Server, name: str, seconds: float, out_dir: Path, run: Callable[[], object]) -> Profile | None:
    """Sample ``server`` for ``seconds`` while ``run()`` drives the scenario ``name``; None when
    py-spy is missing or could not attach (the caller then falls back to cProfile)."""
    exe = py_spy()
    if exe is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    svg, raw = out_dir / f"{name}.svg", out_dir / f"{name}.raw.txt"
    common = [exe, "record", "--pid", str(server.proc.pid), "--subprocesses", "--nonblocking", "--function"]
    common += ["--rate", str(RATE), "--duration", str(max(1, round(seconds)))]
    log = (out_dir / f"{name}.py-spy.log").open("wb")
    samplers = [
        subprocess.Popen([*common, "--format", "flamegraph", "--output", str(svg)], stdout=log, stderr=log),
        subprocess.Popen([*common, "--format", "raw", "--output", str(raw)], stdout=log, stderr=log),
    ]
    try:
        run()
    finally:
        for sampler in samplers:
            try:
                sampler.wait(timeout=WRITE_TIMEOUT)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
        log.close()
    if not raw.exists() or raw.stat().st_size == 0:
        return None
    return Profile("py-spy", (svg, raw), top_own_frames(raw.read_text(encoding="utf-8")))


def top_own_frames(collapsed: str, top: int = TOP) -> tuple[tuple[str, float], ...]:
    """The frames most often on top of the stack (own time), as a share of all samples, from
    collapsed stacks (``frame;frame;...;leaf count`` per line)."""
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            own[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(own.values())
    return tuple((frame, n / total * 100) for frame, n in own.most_common(top)) if total else ()


def in_process(scenario: Scenario, data_dir: Path, base_url: str, out_dir: Path, seed: int) -> Profile:
    """The fallback: the scenario's requests through the Flask test client under cProfile."""
    from fhir_server.app import create_app
    from fhir_server.runtime.config import Config

    # The server's own environment (bench.servers), so the same keys and store are used.
    app = create_app(config=Config.from_env(dict(os.environ, DMP_DATA_DIR=str(data_dir), DMP_BASE_URL=base_url)))
    client = app.test_client()
    rng = random.Random(seed)
    requests = [scenario.make(rng) for _ in range(CPROFILE_REQUESTS)]
    for method, path, body, headers in requests[:10]:  # warm the caches and connections first
        client.open(path, method=method, data=body, headers=headers)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for method, path, body, headers in requests:
        client.open(path, method=method, data=body, headers=headers)
    profiler.disable()
    elapsed = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    prof = out_dir / f"{scenario.name}.prof"
    profiler.dump_stats(prof)
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(entry[2] for entry in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:TOP]
    top = tuple((f"{name} ({Path(file).name}:{line})", entry[2] / total * 100) for (file, line, name), entry in ranked)
    note = f"{CPROFILE_REQUESTS} requests in {elapsed * 1000 / CPROFILE_REQUESTS:.2f} ms each under cProfile"
    return Profile("cProfile (in-process)", (prof,), top, note)


def format_profile(name: str, profile: Profile) -> str:
    lines = [f"profile of {name} ({profile.tool}): " + ", ".join(str(f) for f in profile.files)]
    if profile.note:
        lines.append(profile.note)
    lines.append(f"top {TOP} frames by own time:")
    lines += [f"  {share:5.1f} %  {frame}" for frame, share in profile.top]
    return "\n".join(lines)
