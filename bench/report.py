"""Tables and JSON of a run: the figures with the policy, without it, and what the policy costs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.goals import VsCeiling
from bench.loader import LoadStats
from bench.loadgen import Result

#: Width of the scenario column: the longest name (``iti67-identifier-category-sorted``) and a space.
NAME = 34


def format_table(results: list[Result]) -> str:
    columns = ("req/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    head = f"{'scenario':<{NAME}}" + "".join(f"{c:>9}" for c in columns)
    head += f"{'errors':>8}{'other cpu s':>12}  worker cpu s"
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r.latencies_ms
        lines.append(
            f"{r.name:<{NAME}}{r.rps:>9.1f}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}{lat['max']:>9.2f}"
            f"{r.errors:>8}{_other(r.other_cpu_s):>12}  {' + '.join(f'{c:g}' for c in r.worker_cpu_s)}"
        )
    return "\n".join(lines)


def format_ingest(results: list[Result]) -> str:
    """The ingest scenarios (``documents_per_request``), per document: the figure an ITI-65 feed
    cares about, next to the latency of one whole Bundle."""
    head = (
        f"{'scenario':<{NAME}}{'docs/Bundle':>12}{'Bundles/s':>10}{'docs/s':>9}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if not r.documents_per_request:
            continue
        lat = r.latencies_ms
        lines.append(
            f"{r.name:<{NAME}}{r.documents_per_request:>12}{r.rps:>10.1f}{r.docs_per_second:>9.1f}"
            f"{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}{lat['max']:>9.2f}{r.errors:>8}"
        )
    return "\n".join(lines)


def format_vs_ceiling(rows: list[VsCeiling]) -> str:
    """Issue 11's "Done means": per scenario our req/s, p50/p99, the ceiling it is read against
    (measured around it in the same run) and its share of it, next to the goal (ITI-65: documents/s)."""
    head = (
        f"{'scenario':<{NAME}}{'req/s':>9}{'docs/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'ceiling':>9}{'% of ceiling':>14}{'goal':>17}  met{'cpu ms/req':>12}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        r, share, goal = row.result, row.share_pct, row.goal
        docs = f"{r.docs_per_second:.1f}" if r.documents_per_request else ""
        pct = "-" if share is None else f"{share:.1f} %"
        met = "" if row.met is None else ("yes" if row.met else "no")
        cpu = "-" if row.cpu_ms_per_request is None else f"{row.cpu_ms_per_request:.1f}"
        ceiling = "-" if row.ceiling_rps is None else f"{row.ceiling_rps:.0f}"
        lines.append(
            f"{r.name:<{NAME}}{r.rps:>9.1f}{docs:>9}{r.latencies_ms['p50']:>9.2f}{r.latencies_ms['p99']:>9.2f}"
            f"{ceiling:>9}{pct:>14}{goal.label() if goal else '':>17}  {met:<3}{cpu:>12}"
        )
    return "\n".join(lines)


def format_bursts(bursts: list[float], seconds: float) -> str:
    """How much the ceiling moved during the run: each scenario's share is read against the
    bursts just before and after it (the "ceiling" column)."""
    ordered = sorted(bursts)
    return (
        f"(the ceiling around each scenario, {len(bursts)} bursts of {seconds:g} s: "
        f"{ordered[0]:.0f} to {ordered[-1]:.0f} req/s, median {ordered[len(ordered) // 2]:.0f})"
    )


def _other(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:g}"


@dataclass(frozen=True)
class Overhead:
    """One scenario with the policy against the same scenario on the open app.

    ``throughput_cost_pct``: the share of the open app's throughput the policy takes away
    (0 % = free, 50 % = half the requests per second). ``p50_ms``: what it adds to the median.
    """

    name: str
    auth_rps: float
    open_rps: float
    auth_p50: float
    open_p50: float

    @property
    def throughput_cost_pct(self) -> float:
        return (1 - self.auth_rps / self.open_rps) * 100 if self.open_rps else 0.0

    @property
    def p50_ms(self) -> float:
        return self.auth_p50 - self.open_p50

    @property
    def p50_pct(self) -> float:
        return (self.auth_p50 / self.open_p50 - 1) * 100 if self.open_p50 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auth_rps": round(self.auth_rps, 1),
            "open_rps": round(self.open_rps, 1),
            "throughput_cost_pct": round(self.throughput_cost_pct, 1),
            "auth_p50_ms": self.auth_p50,
            "open_p50_ms": self.open_p50,
            "p50_added_ms": round(self.p50_ms, 2),
            "p50_added_pct": round(self.p50_pct, 1),
        }


def overheads(auth: list[Result], opened: list[Result]) -> list[Overhead]:
    """Pairs the scenarios by name; a scenario measured on one side only is left out."""
    by_name = {r.name: r for r in opened}
    return [
        Overhead(a.name, a.rps, o.rps, a.latencies_ms["p50"], o.latencies_ms["p50"])
        for a in auth
        if (o := by_name.get(a.name)) is not None
    ]


def format_overheads(rows: list[Overhead]) -> str:
    head = (
        f"{'scenario':<{NAME}}{'auth req/s':>11}{'open req/s':>11}{'req/s cost':>11}"
        f"{'auth p50':>10}{'open p50':>10}{'p50 +ms':>9}{'p50 +%':>8}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.name:<{NAME}}{row.auth_rps:>11.1f}{row.open_rps:>11.1f}{row.throughput_cost_pct:>10.0f}%"
            f"{row.auth_p50:>10.2f}{row.open_p50:>10.2f}{row.p50_ms:>+9.2f}{row.p50_pct:>+7.0f}%"
        )
    return "\n".join(lines)


def format_load(load: LoadStats) -> str:
    """The load phases, each with its own rate: the document rate is the ingest figure."""
    note = " (stopped early by --max-load-seconds)" if load.stopped_early else ""
    lines = [
        f"loaded ({load.mode}): {load.practitioners} practitioners in {load.practitioner_seconds:.1f}s, "
        f"{load.patients} DMPs in {load.patient_seconds:.1f}s ({load.patients_per_second:.0f}/s), "
        f"{load.documents} documents in {load.document_seconds:.1f}s = {load.docs_per_second:.0f} docs/s{note}"
    ]
    if load.big_documents:
        lines.append(f"big patient: {load.big_documents} documents loaded in {load.big_seconds:.1f}s")
    return "\n".join(lines)


def write_json(results_dir: Path, payload: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path
