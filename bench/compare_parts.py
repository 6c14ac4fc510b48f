"""Two revisions' request parts side by side, each part's least CPU over alternating rounds.

``python bench/compare_parts.py DATA_DIR REV_A REV_B [--data-b DIR] [--scenario S] [--rounds N]
[--requests N]`` checks out each git revision in a temporary worktree and runs that revision's own
``bench/request_parts.py`` on DATA_DIR, A then B, then B then A, and so on; it prints, per part,
the least CPU per request each revision took over the rounds, and B's change. With ``--data-b``,
B runs on that directory instead: the same revision twice compares two directories (the same
records written two ways).

Why the least: on this shared machine the same build's CPU per request moves by a third between
runs a minute apart (other tenants, frequency), which hides any change under a tenth. Interference
only ever adds time, so the least of a few alternating runs is the steadiest estimate of what the
code itself costs. A revision older than ``bench/request_parts.py`` cannot be measured this way.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = Path("bench") / "request_parts.py"
_WHOLE = re.compile(r".* on .*: \d+ requests, (?P<ms>[\d.]+) ms of CPU each$")
_PART = re.compile(r"(?P<label>.+?)\s+(?P<ms>[\d.]+)\s+[\d.]+$")
WHOLE = "the whole request (test client included)"


def parts_of(output: str) -> dict[str, float]:
    """The CPU per request of each part ``request_parts.py`` printed, and of the whole request."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        if whole := _WHOLE.match(line):
            found[WHOLE] = float(whole["ms"])
        elif part := _PART.match(line):
            found[part["label"].rstrip()] = float(part["ms"])
    return found


def _measure(tree: Path, data_dir: Path, scenario: str, requests: int) -> dict[str, float]:
    command = [sys.executable, str(TOOL), str(data_dir), "--scenario", scenario, "--requests", str(requests)]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: request_parts.py failed:\n{done.stderr[-2000:]}")
    return parts_of(done.stdout)


@contextmanager
def worktrees(revisions: list[str]) -> Iterator[dict[str, Path]]:
    """Each revision checked out in a temporary worktree (removed after), ``../shared`` beside them."""
    with tempfile.TemporaryDirectory(prefix="compare-parts-") as tmp:
        (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        trees = {rev: Path(tmp) / f"rev{i}" for i, rev in enumerate(revisions)}
        try:
            for rev, tree in trees.items():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
                if not (tree / TOOL).exists():
                    raise SystemExit(f"{rev} has no {TOOL}: it cannot be measured this way")
            yield trees
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def least_parts(runs: list[tuple[Path, Path]], scenario: str, rounds: int, requests: int) -> list[dict[str, float]]:
    """Per run (a revision's tree, a data directory), each part's least CPU per request over
    ``rounds`` runs, alternating A B, B A..."""
    least: list[dict[str, float]] = [{} for _ in runs]
    for round_ in range(rounds):
        for which in range(len(runs)) if round_ % 2 == 0 else reversed(range(len(runs))):
            for label, ms in _measure(*runs[which], scenario, requests).items():
                least[which][label] = min(least[which].get(label, ms), ms)
        print(f"round {round_ + 1} of {rounds} done", file=sys.stderr, flush=True)
    return least


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("revisions", nargs=2, metavar="REV")
    parser.add_argument("--data-b", type=Path, help="the directory B runs on (default: DATA_DIR)")
    parser.add_argument("--scenario", default="iti65-1doc")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    dirs = (args.data_dir.resolve(), (args.data_b or args.data_dir).resolve())
    with worktrees(sorted(set(args.revisions))) as trees:
        runs = [(trees[rev], data) for rev, data in zip(args.revisions, dirs, strict=True)]
        a, b = least_parts(runs, args.scenario, args.rounds, args.requests)
    on = str(dirs[0]) if args.data_b is None else f"{dirs[0]} (A) and {dirs[1]} (B)"
    print(f"{args.scenario} on {on}: least CPU per request (ms), {args.rounds} rounds of {args.requests}")
    print(f"{'part':<48} {args.revisions[0][:12]:>12} {args.revisions[1][:12]:>12} {'change':>8}")
    for label in a:  # in the order printed, the whole request first
        if label in b:
            change = f"{100 * (b[label] - a[label]) / a[label]:+.0f} %" if a[label] else ""
            print(f"{label:<48} {a[label]:>12.3f} {b[label]:>12.3f} {change:>8}")


if __name__ == "__main__":
    main()
