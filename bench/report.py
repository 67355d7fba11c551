"""Medians, ratios, the printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import orjson

from bench.consumers import BROKER_INFLIGHT, Drain
from tests.servers import mosquitto_binary

TARGET_PER_S = 10_000
STRETCH_PER_S = 20_000


def mosquitto_version() -> str:
    out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True,
                         check=False, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sems_revision() -> str:
    """The commit measured; ``-dirty`` when the working tree had uncommitted changes."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def run_facts() -> dict[str, str]:
    """The date, CPU, Python and commit: what the benchmarks without servers print first."""
    return {"date": datetime.now(UTC).date().isoformat(), "cpu": cpu_model(),
            "python": platform.python_version(), "sems": sems_revision()}


def machine_facts() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model(),
        "os": platform.platform(),
        "sems": sems_revision(),
        "python": sys.version.split()[0],
        "mosquitto": f"{mosquitto_version()}, max_inflight_messages {BROKER_INFLIGHT:,}",
        "aiomqtt": version("aiomqtt"),
        "paho-mqtt": version("paho-mqtt"),
        "pydantic": version("pydantic"),
        "orjson": version("orjson"),
    }


@dataclass(frozen=True, slots=True)
class ConsumerSummary:
    consumer: str
    readings_per_s: list[float]
    median_per_s: float
    lost: int
    duplicated: int | None


@dataclass
class Results:
    readings: int
    repeat: int
    fleet: str
    machine: dict[str, str]
    publish_per_s: list[float] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)

    def consumers(self) -> list[str]:
        return list(dict.fromkeys(d.consumer for d in self.drains))

    def summary(self, consumer: str) -> ConsumerSummary:
        runs = [d for d in self.drains if d.consumer == consumer]
        dups = [d.duplicated for d in runs]
        return ConsumerSummary(
            consumer=consumer,
            readings_per_s=[d.readings_per_s for d in runs],
            median_per_s=statistics.median(d.readings_per_s for d in runs),
            lost=sum(d.lost for d in runs),
            duplicated=None if None in dups else sum(d or 0 for d in dups),
        )

    def ratio(self, consumer: str, baseline: str) -> float:
        return self.summary(consumer).median_per_s / self.summary(baseline).median_per_s

    def clean(self) -> bool:
        """No reading lost or duplicated in any run."""
        return all(d.lost == 0 and not d.duplicated for d in self.drains)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "readings": self.readings,
            "repeat": self.repeat,
            "fleet": self.fleet,
            "machine": self.machine,
            "publish_per_s": self.publish_per_s,
            "drains": [{**asdict(d), "readings_per_s": d.readings_per_s} for d in self.drains],
            "summary": [asdict(self.summary(c)) for c in self.consumers()],
        }, option=orjson.OPT_INDENT_2)


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def table(results: Results) -> list[str]:
    consumers = results.consumers()
    reps = " | ".join(f"run {i + 1}" for i in range(results.repeat))
    lines = [f"| consumer | {reps} | median readings/s | lost | duplicated |",
             "|---|" + "---:|" * results.repeat + "---:|---:|---:|"]
    for c in consumers:
        s = results.summary(c)
        runs = " | ".join(_rate(r) for r in s.readings_per_s)
        dup = "not checked" if s.duplicated is None else str(s.duplicated)
        lines.append(f"| {c} | {runs} | {_rate(s.median_per_s)} | {s.lost} | {dup} |")
    return lines


def verdict(results: Results, *, sems: str, baselines: Sequence[str]) -> list[str]:
    median = results.summary(sems).median_per_s
    lines = [f"{sems} / {b} (medians): {results.ratio(sems, b):.2f}" for b in baselines]
    lines.append(f"target {TARGET_PER_S:,}/s: {'met' if median >= TARGET_PER_S else 'NOT met'}"
                 f"; aim {STRETCH_PER_S:,}/s: "
                 f"{'met' if median >= STRETCH_PER_S else 'not met'}")
    lines.append("lost/duplicated: "
                 + ("0 in every run" if results.clean() else "NONZERO, see the table"))
    return lines


def print_report(results: Results, *, sems: str, baselines: Sequence[str]) -> None:
    for key, value in results.machine.items():
        print(f"{key:>10}: {value}")
    print(f"{'backlog':>10}: {results.readings:,} readings, fleet {results.fleet}, "
          f"{results.repeat} runs per consumer, interleaved")
    if results.publish_per_s:
        print(f"{'publisher':>10}: median {_rate(statistics.median(results.publish_per_s))}"
              " msgs/s at QoS 1 (loading the broker, not measured against)")
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(verdict(results, sems=sems, baselines=baselines)))
    for c in results.consumers():
        runs = [d for d in results.drains if d.consumer == c]
        for i, d in enumerate(runs, start=1):
            for note in d.notes:
                print(f"  {c}, run {i}: {note}")


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(results.to_json())
