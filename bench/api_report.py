"""What ``bench/api.py`` prints: each run's figures side by side, the medians, and each
target met or not."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bench.api import Options, Results, Run
    from bench.api_load import OpenLoop, Wrk

T = TypeVar("T")
SCALING_CORES = 4
"""Below this many cores the processes target is reported, not judged: wrk needs a core, and
two API processes need one each."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float
    met: bool
    judged: bool
    note: str = ""


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def targets(results: Results, opts: Options) -> list[Target]:
    runs = results.runs

    def ratio(name: str) -> float:
        return _median([r.ratios()[name] for r in runs])

    cached_p95 = _median([r.cached.p95_ms for r in runs])
    cached_errors = sum(r.cached.errors for r in runs)
    startup_p99 = _median([r.startup.p99_ms for r in runs])
    startup_errors = sum(r.startup.errors for r in runs)
    cores = os.cpu_count() or 1
    scaling = ratio("2 / 1 processes")
    return [
        Target("cached /current >= 0.6 x /healthz (same process, production)",
               ratio("current / healthz"), ratio("current / healthz") >= 0.6, True),
        Target("/api/facilities >= 0.5 x /healthz (same process, production)",
               ratio("facilities / healthz"), ratio("facilities / healthz") >= 0.5, True),
        Target("cached /current >= 0.6 x /healthz (same process, embedded)",
               ratio("embedded current / healthz"),
               ratio("embedded current / healthz") >= 0.6, True),
        Target("/api/facilities >= 0.5 x /healthz (same process, embedded)",
               ratio("embedded facilities / healthz"),
               ratio("embedded facilities / healthz") >= 0.5, True),
        Target(f"open loop {opts.rate:g}/s with Redis: p95 < 50 ms", cached_p95,
               cached_p95 < 50.0, True),
        Target("open loop with Redis: no errors", cached_errors, cached_errors == 0, True),
        Target("cached ceiling >= 4 x uncached", ratio("cached / uncached ceiling"),
               ratio("cached / uncached ceiling") >= 4.0, True),
        Target("2 API processes >= 1.7 x 1", scaling, scaling >= 1.7, cores >= SCALING_CORES,
               "" if cores >= SCALING_CORES else
               f"reported, not judged: {cores} cores, wrk takes one"),
        Target("start-up: /current p99 < 250 ms", startup_p99, startup_p99 < 250.0, True),
        Target("start-up: no errors", startup_errors, startup_errors == 0, True),
    ]


def _over(items: Sequence[T], get: Callable[[T], float]) -> float:
    """The median of one figure over the runs."""
    return _median([get(x) for x in items])


def _loop_row(name: str, loops: list[OpenLoop]) -> str:
    def m(get: Callable[[OpenLoop], float]) -> float:
        return _over(loops, get)

    runs = ", ".join(f"{x.p95_ms:.1f}" for x in loops)
    return (f"| {name} | {m(lambda x: x.achieved_per_s):.0f}/s | {m(lambda x: x.p50_ms):.1f} | "
            f"{m(lambda x: x.p95_ms):.1f} ({runs}) | {m(lambda x: x.p99_ms):.1f} | "
            f"{m(lambda x: x.max_ms):.0f} | {sum(x.errors for x in loops)} |")


def _wrk_row(name: str, runs: list[Wrk]) -> str:
    each = ", ".join(f"{x.requests_per_s:,.0f}" for x in runs)
    return (f"| {name} | {_over(runs, lambda x: x.requests_per_s):,.0f} ({each}) | "
            f"{_over(runs, lambda x: x.p50_ms):.1f} | {_over(runs, lambda x: x.p99_ms):.1f} | "
            f"{_over(runs, lambda x: x.api_cpu_s / x.duration_s):.2f} | "
            f"{_over(runs, lambda x: x.wrk_cpu_s / x.duration_s):.2f} |")


def report(results: Results, opts: Options) -> list[Target]:
    runs: list[Run] = results.runs
    for key, value in results.machine.items():
        print(f"{key:>10}: {value}")
    print(f"{'fleet':>10}: {results.facilities} facilities x 5 meters, last hour stored; "
          f"open loop {opts.rate:g}/s for {opts.duration_s:g} s; wrk -t1 "
          f"-c{opts.connections} {opts.wrk_s:g} s; start-up {opts.startup_rate:g}/s for "
          f"{opts.startup_s:g} s; {len(runs)} runs")
    print("\n| wrk | req/s median (runs) | p50 ms | p99 ms | API cores | wrk cores |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, attr in (("/healthz, sems run", "healthz"),
                       ("/current cached, sems run", "current"),
                       ("/api/facilities, sems run", "facilities"),
                       ("/current uncached, sems run", "uncached_current"),
                       ("/current cached, sems api --workers 1", "one_process"),
                       ("/current cached, sems api --workers 2", "two_processes"),
                       ("/healthz, embedded sems run", "embedded_healthz"),
                       ("/current fac-001, embedded sems run", "embedded_current"),
                       ("/api/facilities, embedded sems run", "embedded_facilities")):
        print(_wrk_row(name, [getattr(r, attr) for r in runs]))
    print("\n| open loop | achieved | p50 ms | p95 ms (runs) | p99 ms | max ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(_loop_row(f"/current with Redis, {opts.rate:g}/s", [r.cached for r in runs]))
    print(_loop_row(f"/current no cache, {opts.rate:g}/s", [r.uncached for r in runs]))
    print(_loop_row(f"start-up, first {opts.startup_s:g} s, {opts.startup_rate:g}/s",
                    [r.startup for r in runs]))
    print("\n| ratio (each run's own) | runs | median |")
    print("|---|---|---:|")
    for name in runs[0].ratios():
        values = [r.ratios()[name] for r in runs]
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {_median(values):.2f} |")
    found = targets(results, opts)
    print()
    for t in found:
        verdict = "met" if t.met else "NOT met"
        print(f"{verdict:>8}: {t.name}: {t.value:,.2f}{' (' + t.note + ')' if t.note else ''}")
    return found
