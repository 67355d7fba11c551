"""A benchmark for two commits, one after the other on this machine: did a change on its path
make it slower?

Runs ``python -m bench.<name> --json ...`` in a checkout of the old commit (a git worktree
under ``.cache/ab/``) and in this working tree, alternating which goes first each round (so a
machine that slows down over the run penalises both), and reports every consumer's medians
per commit and the ratio new / old of their medians. Each benchmark measures its baselines in
the same run, so each consumer's ratio to that baseline is reported per commit too: that one is
immune to the machine's speed drifting between runs.

    python -m bench.ab --old cf168ae --bench ingest [--rounds 2] [-- --readings 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
WORKTREES = ROOT / ".cache" / "ab"
BASELINE = {"ingest": "bare aiomqtt", "kafka": "SEMS local runtime"}
"""The consumer each benchmark measures the others against, in the same run."""


def checkout(commit: str) -> Path:
    """A worktree of ``commit`` (made once, reused)."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = WORKTREES / sha
    if not (path / ".git").exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(path), sha],
                       cwd=ROOT, check=True, capture_output=True)
    return path


def run(tree: Path, bench: str, args: Sequence[str]) -> dict[str, float]:
    """One run of the benchmark in ``tree``: every consumer's median readings/s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        # The tree's own packages first: this venv's editable install points at ROOT.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", f"bench.{bench}", "--json", str(out), *args],
                       cwd=tree, env=env, check=True)
        doc = orjson.loads(out.read_bytes())
    return {s["consumer"]: float(s["median_per_s"]) for s in doc["summary"]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("--old", required=True, help="the commit to compare with (e.g. HEAD~3)")
    p.add_argument("--bench", required=True, choices=sorted(BASELINE))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("args", nargs="*", help="passed to the benchmark (after --)")
    a = p.parse_args(argv)
    trees = {"old": checkout(a.old), "new": ROOT}
    medians: dict[str, dict[str, list[float]]] = {"old": defaultdict(list),
                                                   "new": defaultdict(list)}
    for i in range(a.rounds):
        for label in ("old", "new") if i % 2 == 0 else ("new", "old"):
            print(f"== round {i + 1}: {label} ({trees[label]})", flush=True)
            for consumer, value in run(trees[label], a.bench, a.args).items():
                medians[label][consumer].append(value)
    base = BASELINE[a.bench]
    print(f"\n| consumer | old ({a.old}) readings/s | new readings/s | new / old |")
    print("|---|---:|---:|---:|")
    for consumer in medians["new"]:
        old = statistics.median(medians["old"][consumer])
        new = statistics.median(medians["new"][consumer])
        print(f"| {consumer} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")
    for label in ("old", "new"):
        for consumer, values in medians[label].items():
            if consumer == base:
                continue
            ratios = [v / b for v, b in zip(values, medians[label][base], strict=True)]
            print(f"{label}: {consumer} / {base}, median of the rounds: "
                  f"{statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
