"""How long the event loop stalls while a model choice runs: on a thread (as before issue 13)
or in the forecast agent's worker process (``agents/forecast_pool.py``), beside a baseline
with no choice running, in the same run.

A probe coroutine stands for the API: every ``--probe-ms`` it sleeps and records how late it
wakes up (the event-loop lag an API request would wait), and it answers a ``/current``-like
request (a small JSON body from a pydantic model) whose latency it records. Each phase runs for
one ``choose_model`` (a 60-day facility: seconds of pandas/statsmodels), or ``--baseline-s``
for the baseline. The worker process is started and warmed before its phase (its start-up runs
on the other core and does not hold this interpreter's GIL either). Reported per phase: the
median over ``--runs`` of the p50, p99 and max lag, and the ratio to the baseline.

``--cycle N`` also times the 15-minute cycle's path on N facilities (``fourier_ols`` refits):
in this process, as ``bench/forecast.py`` does, and through the worker as the agent now does
(the inputs pickled to it, the ``Forecast`` back), medians of ``--runs``.

    python -m bench.forecast_stall [--runs 3] [--probe-ms 10] [--cycle 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from agents.forecast_pool import ProcessRunner
from agents.forecasting import Choice, choose_model, forecast
from bench.forecast import NOW, Facility, fleet
from bench.report import cpu_model, sems_revision
from schemas.metadata import MeterType
from schemas.reading import SensorReading

Phase = Callable[[], Awaitable[object]]


READINGS = [SensorReading(facility_id="fac-001", meter_id=f"fac-001-m{i}",
                          meter_type=MeterType.MAIN, timestamp=NOW, active_power_kw=120.5,
                          reactive_power_kvar=10.0, voltage_v=400.0, frequency_hz=50.0)
            for i in range(3)]


def _current_body() -> bytes:
    """What ``/current`` renders from its latest readings (api/routes.py)."""
    now = datetime.now(UTC)
    return json.dumps({
        "facility_id": "fac-001", "as_of": now.isoformat(),
        "total_power_kw": sum(r.active_power_kw for r in READINGS),
        "meters": [{**r.model_dump(mode="json", exclude={"facility_id"}),
                    "age_s": (now - r.timestamp).total_seconds()} for r in READINGS],
    }).encode()


async def probe(stop: asyncio.Event, period_s: float) -> tuple[list[float], list[float]]:
    """Wake-up lags and request latencies (s) until ``stop``."""
    lags: list[float] = []
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        woke = loop.time()
        lags.append(max(0.0, woke - due))
        _current_body()
        latencies.append(loop.time() - due)  # waited for the loop, then rendered
    return lags, latencies


async def measure(work: Phase, period_s: float) -> tuple[list[float], list[float]]:
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(stop, period_s))
    await asyncio.sleep(period_s * 5)  # the probe is running before the work starts
    await work()
    stop.set()
    return await probing


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def choice_of(f: Facility) -> Callable[[], Choice]:
    return partial(choose_model, f.load_kw, temperature_c=f.temperature_c,
                   timezone=f.timezone, country=f.country, now=NOW)


async def run(runs: int, period_s: float, baseline_s: float) -> dict[str, list[tuple[float, ...]]]:
    facility = fleet(1, seed=11)[0]
    threads = ThreadPoolExecutor(1, thread_name_prefix="forecast")
    runner = ProcessRunner(timeout_s=600)
    choose = choice_of(facility)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(threads, choose)  # warm imports and caches on both sides
    await runner.run(choose)
    phases: dict[str, Phase] = {
        "baseline (no choice running)": partial(asyncio.sleep, baseline_s),
        "choice on a thread (before)": partial(loop.run_in_executor, threads, choose),
        "choice in the worker process": partial(runner.run, choose),
    }
    out: dict[str, list[tuple[float, ...]]] = {name: [] for name in phases}
    try:
        for _ in range(runs):
            for name, work in phases.items():
                lags, latencies = await measure(work, period_s)
                out[name].append((quantile(lags, 0.5), quantile(lags, 0.99), max(lags),
                                  quantile(latencies, 0.99), float(len(lags))))
    finally:
        runner.close()
        threads.shutdown(wait=True)
    return out


async def cycle_paths(size: int, runs: int) -> tuple[list[float], list[float]]:
    """Seconds per cycle over ``size`` facilities: in this process, and through the worker."""
    facilities = fleet(size)
    runner = ProcessRunner(timeout_s=600)
    calls = [partial(forecast, f.load_kw, now=NOW, timezone=f.timezone,
                     temperature_c=f.temperature_c, country=f.country, model="fourier_ols")
             for f in facilities]
    local: list[float] = []
    worker: list[float] = []
    try:
        await runner.run(calls[0])
        calls[0]()
        for _ in range(runs):
            started = time.perf_counter()
            for call in calls:
                call()
            local.append(time.perf_counter() - started)
            started = time.perf_counter()
            for call in calls:
                await runner.run(call)
            worker.append(time.perf_counter() - started)
    finally:
        runner.close()
    return local, worker


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forecast_stall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--probe-ms", type=float, default=10.0)
    p.add_argument("--baseline-s", type=float, default=3.0)
    p.add_argument("--cycle", type=int, default=0, help="facilities to time a cycle on")
    a = p.parse_args(argv)
    print(f"date {datetime.now().date()}, cpu {cpu_model()}, python {platform.python_version()}"
          f", sems {sems_revision()}; probe every {a.probe_ms:g} ms, {a.runs} runs")
    started = time.perf_counter()
    results = asyncio.run(run(a.runs, a.probe_ms / 1000, a.baseline_s))
    base_p99 = statistics.median(r[1] for r in results["baseline (no choice running)"])
    print("| phase | lag p50 ms | lag p99 ms | lag max ms (runs) | /current p99 ms "
          "| p99 / baseline |")
    print("|---|---:|---:|---|---:|---:|")
    for name, rows in results.items():
        p50, p99, worst, cur99 = (statistics.median(r[i] for r in rows) for i in range(4))
        runs = ", ".join(f"{r[2] * 1000:.0f}" for r in rows)
        print(f"| {name} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {worst * 1000:.0f} ({runs}) "
              f"| {cur99 * 1000:.1f} | {p99 / base_p99:.1f} |")
    if a.cycle > 0:
        local, worker = asyncio.run(cycle_paths(a.cycle, a.runs))
        here, there = statistics.median(local), statistics.median(worker)
        print(f"\ncycle of {a.cycle} facilities (fourier_ols): in this process "
              f"{here / a.cycle * 1000:.0f} ms per facility, through the worker "
              f"{there / a.cycle * 1000:.0f} ms per facility ({there / here:.2f}x)")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
