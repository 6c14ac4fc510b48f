"""The bench's reading of a run against its ceiling (``bench/goals.py``): figures only, no timing
is measured here; these check the arithmetic and the table issue 11 asks for."""

from __future__ import annotations

from dataclasses import replace

from bench.goals import GOALS, against_ceiling
from bench.loadgen import Result
from bench.profiling import top_own_frames
from bench.report import format_vs_ceiling


def result(name: str, ok: int, documents: int = 0) -> Result:
    latencies = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}
    return Result(name, name, 10.0, ok, 0, latencies, None, documents_per_request=documents)


def test_each_scenario_is_read_as_a_share_of_the_ceiling_of_the_same_run() -> None:
    rows = against_ceiling([result("read", 4_000), result("create", 1_000), result("ceiling", 10_000)])
    assert [(r.result.name, r.share_pct, r.met) for r in rows] == [("read", 40.0, True), ("create", 10.0, False)]


def test_a_scenario_bracketed_by_the_ceiling_is_read_against_those_bursts_not_the_run_s() -> None:
    """The ceiling moves within a run: a scenario measured while the machine was busy is read
    against the ceiling measured around it, not one measured minutes later on a quieter machine."""
    busy = replace(result("read", 4_000), ceiling_rps=800.0)  # 400 req/s against 800 around it
    rows = against_ceiling([busy, result("create", 1_000), result("ceiling", 10_000)])
    assert [(r.result.name, r.ceiling_rps, r.share_pct) for r in rows] == [
        ("read", 800.0, 50.0),
        ("create", 1_000.0, 10.0),
    ]
    assert "800" in format_vs_ceiling(rows).splitlines()[2]  # the ceiling each share is read against


def test_the_iti65_goal_is_in_documents_per_second_whatever_the_ceiling() -> None:
    rows = against_ceiling([result("iti65-1doc", 1_490, documents=1), result("ceiling", 10_000)])
    assert rows[0].met is False
    rows = against_ceiling([result("iti65-1doc", 1_500, documents=1)])
    assert rows[0].share_pct is None and rows[0].met is True


def test_without_a_ceiling_a_share_goal_is_not_judged() -> None:
    (row,) = against_ceiling([result("read", 4_000)])
    assert row.share_pct is None and row.met is None
    assert "-" in format_vs_ceiling([row])


def test_the_table_names_every_goal_of_issue_11() -> None:
    names = ["read", "search-patient", "iti67-identifier", "create", "iti65-1doc", "big-read", "ceiling"]
    table = format_vs_ceiling(against_ceiling([result(n, 100, documents=int(n == "iti65-1doc")) for n in names]))
    assert ">= 40 %" in table and ">= 25 %" in table and ">= 15 %" in table and ">= 150 docs/s" in table
    assert "big-read" in table and "big-read" not in GOALS  # measured, no goal


def test_own_time_is_counted_on_the_top_frame_of_each_stack() -> None:
    collapsed = "main;read;execute 6\nmain;read 2\nmain;audit;execute 2\n"
    assert top_own_frames(collapsed) == (("execute", 80.0), ("read", 20.0))


def test_worker_cpu_per_request_counts_the_warm_up_window() -> None:
    measured = replace(result("read", 1_000), worker_cpu_s=(6.0, 6.0))  # 100 req/s over 10 s
    (row,) = against_ceiling([measured], window_s=12.0)
    assert row.cpu_ms_per_request == 10.0  # 12 s of CPU for ~1 200 requests
    assert against_ceiling([result("read", 1_000)], window_s=12.0)[0].cpu_ms_per_request is None
