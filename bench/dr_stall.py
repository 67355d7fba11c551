"""How long the event loop stalls while the DR agent plans and reports: inline on the loop
(as before issue 13), on a thread (``agents.offload.off_loop``: the agent's CPU thread, what
it does now) and in a worker process (``agents/forecast_pool.ProcessRunner``), beside a
baseline with nothing running, in the same run.

The probe is ``bench/forecast_stall.py``'s: a coroutine that sleeps ``--probe-ms`` and records
how late it wakes up (the lag an API request would wait). A planning phase plans a batch of
events, one ``plan_reduction`` after another as a DR pass does (inline, the loop gets a turn
between two calls, as the agent's store reads give it); two inventories:

* ``demo``: the simulated fleet ``sems run`` commands (``SimulatorInventory`` over
  ``simulators.fleet``: 4 zones and 4 lighting floors a building), 3 buildings;
* ``campus``: a synthetic large campus, 200 HVAC zones, 100 lighting groups (stepped and
  continuous dimming) and 40 deferrable loads over 3 priority tiers (so 3 solves a plan:
  two tiers capped in turn, then the comfort cost), 4 seeded variants.

Each inventory is planned at 20, 45, 70 and 90 % of the most it can shed. The report phases
run ``achieved_reduction`` for ``--reports`` events of 2 hours metered by the minute, and the
settlement baseline (``compute_baseline``, CAISO 10-in-10 over 46 days of 1-minute rollups),
which ``agents/dr_baseline_source.py`` computes on a thread too. Reported per phase: the median over
``--runs`` of the p50, p99 and max lag, the ratio of p99 to the baseline's, and the wall time
per call.

    python -m bench.dr_stall [--runs 3] [--probe-ms 10] [--reports 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import orjson

from agents.dr.baseline_result import BaselineConfig, BaselineResult
from agents.dr.baselines import compute_baseline
from agents.dr.inventory import (
    ComfortLimits,
    DeferrableLoad,
    HvacZoneResource,
    Inventory,
    LightingGroupResource,
)
from agents.dr.performance import achieved_reduction
from agents.dr.plan import Plan
from agents.dr.planner import plan_reduction
from agents.forecast_pool import ProcessRunner
from agents.offload import off_loop
from bench.forecast_stall import measure, quantile
from bench.report import run_facts
from simulators.fleet import build_fleet
from simulators.inventory import SimulatorInventory

START = datetime(2026, 7, 15, 18, tzinfo=UTC)  # 14:00 in New York, a July Wednesday
END = START + timedelta(hours=2)
TARGET_SHARES = (0.2, 0.45, 0.7, 0.9)
UPPER_KW = [5_000.0] * 8  # no forecast band above the baseline: the target alone
TZ = "America/New_York"

Call = Callable[[], object]
Phase = Callable[[], Awaitable[object]]


def campus(seed: int, *, zones: int = 200, groups: int = 100, loads: int = 40) -> Inventory:
    """A large campus: zones of 5-25 kW shed, 5-30 kW lighting groups, 10-80 kW deferrable
    loads (chillers' pre-cooling, pumps, EV chargers), priorities 1-3."""
    r = random.Random(seed)
    return Inventory(
        facility_id=f"campus-{seed}",
        zones=tuple(HvacZoneResource(
            zone_id=f"zone-{i}", max_setpoint_offset_c=r.choice([2.0, 3.0, 4.0]),
            kw_per_degc=r.uniform(1.5, 8.0), comfort_cost_per_degc=r.uniform(5, 20),
            priority=r.choice([1, 1, 2, 3]), max_reduction_kw=r.uniform(5, 25))
            for i in range(zones)),
        lighting_groups=tuple(LightingGroupResource(
            group_id=f"lights-{i}", kw_at_full=r.uniform(5, 30),
            min_level_pct=r.choice([30.0, 50.0, 60.0]), comfort_cost_per_pct=r.uniform(0.5, 2),
            priority=r.choice([1, 2, 2, 3]), dim_step_pct=r.choice([None, 5.0, 10.0]))
            for i in range(groups)),
        deferrable_loads=tuple(DeferrableLoad(
            load_id=f"load-{i}", kw=r.uniform(10, 80),
            max_deferral_s=r.choice([3600.0, 7200.0, 14400.0]),
            deferral_cost=r.uniform(20, 100), priority=r.choice([1, 2, 3]))
            for i in range(loads)))


async def demo() -> list[Inventory]:
    fleet = build_fleet(facilities=3, meters_per_facility=6, seed=42)
    source = SimulatorInventory(fleet.models, ComfortLimits())
    return [await source.inventory(f.facility_id, at=START) for f in fleet.facilities]


def most_kw(inv: Inventory) -> float:
    return (sum(z.reduction_kw(z.max_steps) for z in inv.zones)
            + sum(g.kw_at_full * g.max_dim_pct / 100 for g in inv.lighting_groups)
            + sum(d.kw for d in inv.deferrable_loads if d.max_deferral_s >= 7200))


def plans_of(inventories: Sequence[Inventory]) -> list[Callable[[], Plan]]:
    return [partial(plan_reduction, inv, target_reduction_kw=share * most_kw(inv),
                    forecast_upper_kw=UPPER_KW, event_start=START, event_end=END)
            for inv in inventories for share in TARGET_SHARES]


def history(step_s: int = 60, days: int = 46) -> list[tuple[datetime, float]]:
    """1-minute facility kW: an office day shape, weekday and weekend alike (the baseline
    picks its days by the calendar)."""
    first = START - timedelta(days=days)
    n = days * 86400 // step_s
    return [(first + timedelta(seconds=i * step_s),
             400 + 250 * max(0.0, math.sin((i * step_s % 86400) / 86400 * 2 * math.pi - 1.3)))
            for i in range(n)]


def settlement(load: list[tuple[datetime, float]]) -> BaselineResult:
    return compute_baseline(BaselineConfig(method="caiso_10_in_10", holiday_country="US"),
                            event_start=START, event_end=END, timezone=TZ, load=load,
                            interval_s=60)


def reports_of(baseline: BaselineResult, count: int) -> list[Call]:
    metered = [(START + timedelta(minutes=i), 330.0 + i % 7) for i in range(120)]
    return [partial(achieved_reduction, baseline, metered, target_reduction_kw=50.0,
                    event_id=f"E-{i}") for i in range(count)]


async def inline(calls: Sequence[Call]) -> None:
    """One call after another, giving the loop a turn between them as the agent's store reads
    between events do: a lag is one call's, not the batch's."""
    for call in calls:
        call()
        await asyncio.sleep(0)


async def threaded(calls: Sequence[Call]) -> None:
    for call in calls:
        await off_loop(call)


async def in_worker(runner: ProcessRunner, calls: Sequence[Call]) -> None:
    for call in calls:
        await runner.run(call)


async def timed(work: Phase, counter: list[float], count: int) -> None:
    started = time.perf_counter()
    await work()
    counter.append((time.perf_counter() - started) / count)


async def run(runs: int, period_s: float, baseline_s: float, reports: int,
              ) -> dict[str, list[tuple[float, ...]]]:
    demo_plans = plans_of(await demo())
    campus_plans = plans_of([campus(seed) for seed in range(4)])
    load = history()
    baselines: list[Call] = [partial(settlement, load) for _ in range(3)]
    report_calls = reports_of(settlement(load), reports)
    runner = ProcessRunner(timeout_s=600)
    await in_worker(runner, campus_plans[:1])  # warm the worker's imports
    await threaded(campus_plans[:1])
    batches: dict[str, tuple[Callable[[Sequence[Call]], Awaitable[None]], Sequence[Call]]] = {
        "demo plans inline (before)": (inline, demo_plans),
        "demo plans on a thread (now)": (threaded, demo_plans),
        "demo plans in a worker process": (partial(in_worker, runner), demo_plans),
        "campus plans inline (before)": (inline, campus_plans),
        "campus plans on a thread (now)": (threaded, campus_plans),
        "campus plans in a worker process": (partial(in_worker, runner), campus_plans),
        "reports inline (before)": (inline, report_calls),
        "reports on a thread (now)": (threaded, report_calls),
        "settlement baselines inline (before)": (inline, baselines),
        "settlement baselines on a thread (now)": (threaded, baselines),
    }
    out: dict[str, list[tuple[float, ...]]] = {"baseline (nothing running)": []}
    out.update({name: [] for name in batches})
    try:
        for _ in range(runs):
            lags, _lat = await measure(partial(asyncio.sleep, baseline_s), period_s)
            out["baseline (nothing running)"].append(
                (quantile(lags, 0.5), quantile(lags, 0.99), max(lags), 0.0, len(lags)))
            for name, (way, calls) in batches.items():
                per_call: list[float] = []
                lags, _lat = await measure(partial(timed, partial(way, calls), per_call,
                                                   len(calls)), period_s)
                out[name].append((quantile(lags, 0.5), quantile(lags, 0.99), max(lags),
                                  per_call[0], len(lags)))
    finally:
        runner.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dr_stall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--probe-ms", type=float, default=10.0)
    p.add_argument("--baseline-s", type=float, default=3.0)
    p.add_argument("--reports", type=int, default=20, help="events reported per phase")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    facts = run_facts()
    print(", ".join(f"{k} {v}" for k, v in facts.items())
          + f"; probe every {a.probe_ms:g} ms, {a.runs} runs")
    started = time.perf_counter()
    results = asyncio.run(run(a.runs, a.probe_ms / 1000, a.baseline_s, a.reports))
    base_p99 = statistics.median(r[1] for r in results["baseline (nothing running)"])
    print("| phase | lag p50 ms | lag p99 ms | lag max ms (runs) | p99 / baseline "
          "| ms per call |")
    print("|---|---:|---:|---|---:|---:|")
    for name, rows in results.items():
        p50, p99, worst, per_call = (statistics.median(r[i] for r in rows) for i in range(4))
        worsts = ", ".join(f"{r[2] * 1000:.0f}" for r in rows)
        call = "" if per_call == 0 else f"{per_call * 1000:.1f}"
        print(f"| {name} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {worst * 1000:.0f} ({worsts}) "
              f"| {p99 / base_p99:.1f} | {call} |")
    print(f"({time.perf_counter() - started:.0f} s)")
    if a.json is not None:
        fields = ("lag_p50_ms", "lag_p99_ms", "lag_max_ms", "ms_per_call")
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_bytes(orjson.dumps(
            {"machine": facts, "runs": a.runs, "probe_ms": a.probe_ms, "phases": {
                name: [{**{f: r[i] * 1000 for i, f in enumerate(fields)}, "probes": r[4]}
                       for r in rows] for name, rows in results.items()}},
            option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
