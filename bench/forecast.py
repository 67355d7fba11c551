"""Forecast cycle time: every facility's next 24 h at 15-min resolution with the model already
chosen, beside the seasonal-naive baseline, in the same run.

Each facility has 60 days of 15-min history (5,760 points, a few gaps) and hourly temperature
covering the history and the next day; loads are synthetic office-like profiles (occupied
hours on workdays, weekends and public holidays off, heating with temperature, noise), in one
of four time zones. For each fleet size the bench times, one after another and
``--repeat`` times each:

* **fourier_ols**: ``forecast(..., model="fourier_ols")`` per facility (the 15-minute cycle);
* **mstl_ets**: the same with the MSTL model;
* **seasonal naive**: the baseline through the same entry point (grid, calendar, bands).

and once, on a few facilities, ``choose_model`` (the daily re-choice). In this process, or
split over ``--processes`` worker processes (each builds the fleet before the clock starts);
medians and ratios are reported. Method and results: docs/performance.md.

    python -m bench.forecast [--facilities 100 1000] [--repeat 3] [--choose 3] [--processes 2]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import holidays
import numpy as np
import orjson
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting import choose_model, forecast
from bench.report import run_facts

ZONES = (("Europe/Berlin", "DE"), ("America/Chicago", "US"), ("Europe/London", "GB"),
         ("Asia/Tokyo", "JP"))
MODELS = ("fourier_ols", "mstl_ets", "seasonal_naive")
BASELINE = "seasonal_naive"
NOW = datetime.fromisoformat("2026-11-27T12:00:00+00:00")
HISTORY = timedelta(days=60)


@dataclass(frozen=True, slots=True)
class Facility:
    load_kw: pd.Series
    temperature_c: pd.Series
    timezone: str
    country: str


def fleet(count: int, *, seed: int = 7) -> list[Facility]:
    rng = np.random.default_rng(seed)
    index = pd.date_range(NOW - HISTORY, NOW, freq="15min", inclusive="left", tz="UTC")
    hours = pd.date_range(NOW - HISTORY, NOW + timedelta(days=1), freq="1h", tz="UTC")
    out = []
    for i in range(count):
        zone, country = ZONES[i % len(ZONES)]
        local = index.tz_convert(zone)
        hour = (local.hour + local.minute / 60.0).to_numpy(dtype="float64")
        days_off = holidays.country_holidays(country, years=[NOW.year - 1, NOW.year])
        workday = np.asarray(local.day_of_week < 5) & ~np.isin(local.date, np.array(list(days_off)))
        base_kw = rng.uniform(20, 400)
        occupied = ((hour >= rng.uniform(6, 8)) & (hour < rng.uniform(17, 20)) & workday)
        t_hourly = (8 + 8 * np.sin(2 * np.pi * (np.arange(len(hours)) / 24.0 - 0.3))
                    + rng.normal(0, 1.5, len(hours)).cumsum() * 0.1)
        temperature = pd.Series(t_hourly, index=hours)
        t_q = temperature.reindex(index, method="ffill").to_numpy(dtype="float64")
        load = (base_kw * (0.4 + 0.6 * occupied)
                + base_kw * 0.02 * np.maximum(0, 15 - t_q) * occupied
                + base_kw * rng.normal(0, 0.05, len(index)))
        series = pd.Series(load, index=index)
        gaps = rng.integers(0, len(index) - 16, 3)
        for g in gaps:
            series.iloc[g:g + int(rng.integers(1, 16))] = np.nan
        out.append(Facility(series.dropna(), temperature, zone, country))
    return out


def cycle(facilities: list[Facility], model: str) -> float:
    started = time.perf_counter()
    for f in facilities:
        forecast(f.load_kw, now=NOW, timezone=f.timezone, temperature_c=f.temperature_c,
                 country=f.country, model=model)
    return time.perf_counter() - started


_WORKER_FLEET: list[Facility] = []


def _init_worker(size: int) -> None:
    _WORKER_FLEET[:] = fleet(size)
    cycle(_WORKER_FLEET[:2], MODELS[0])


def _share(args: tuple[str, int, int]) -> float:
    model, start, stop = args
    return cycle(_WORKER_FLEET[start:stop], model)


def parallel_cycle(pool: ProcessPoolExecutor, size: int, processes: int, model: str) -> float:
    """Wall-clock time of one cycle over ``size`` facilities split across the workers (each
    built the same fleet at start-up, so only the forecasts are timed)."""
    bounds = [(model, size * i // processes, size * (i + 1) // processes)
              for i in range(processes)]
    started = time.perf_counter()
    list(pool.map(_share, bounds))
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--facilities", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--choose", type=int, default=3, help="facilities to time choose_model on")
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes splitting the facilities (1: in this process)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    facts = run_facts()
    print(", ".join(f"{k} {v}" for k, v in facts.items()))
    found: dict[str, Any] = {"machine": facts, "processes": a.processes, "repeat": a.repeat,
                             "sizes": [], "choose_model": None}
    print(f"processes {a.processes}")
    print("| facilities | model | runs s | median s | ms per facility | / seasonal naive |")
    print("|---:|---|---|---:|---:|---:|")
    for size in a.facilities:
        times: dict[str, list[float]] = {m: [] for m in MODELS}
        if a.processes > 1:
            # One BLAS thread per worker: two workers with two OpenBLAS threads each on two
            # cores ran slower than one process. The variable must be set before a (spawned,
            # not forked) worker imports numpy.
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            with ProcessPoolExecutor(a.processes, mp_context=get_context("spawn"),
                                     initializer=_init_worker, initargs=(size,)) as pool:
                list(pool.map(_share, [(MODELS[0], 0, 1)] * a.processes))  # wait for start-up
                for _ in range(a.repeat):
                    for model in MODELS:
                        times[model].append(parallel_cycle(pool, size, a.processes, model))
        else:
            facilities = fleet(size)
            cycle(facilities[:5], MODELS[0])  # warm imports and caches
            for _ in range(a.repeat):
                for model in MODELS:
                    times[model].append(cycle(facilities, model))
        base = statistics.median(times[BASELINE])
        found["sizes"].append({"facilities": size, "runs_s": times,
                               "median_s": {m: statistics.median(t) for m, t in times.items()}})
        for model in MODELS:
            med = statistics.median(times[model])
            runs = ", ".join(f"{t:.1f}" for t in times[model])
            print(f"| {size:,} | {model} | {runs} | {med:.1f} | {med / size * 1000:.0f} "
                  f"| {med / base:.1f} |", flush=True)
    if a.choose > 0:
        found["choose_model"] = choose(a.choose)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2))
    return 0


def choose(count: int) -> dict[str, Any]:
    sample = fleet(count, seed=11)
    chose = []
    started = time.perf_counter()
    for f in sample:
        chose.append(choose_model(f.load_kw, temperature_c=f.temperature_c, timezone=f.timezone,
                                  country=f.country, now=NOW).model)
    per = (time.perf_counter() - started) / max(1, len(sample))
    print(f"\nchoose_model (35 origins x fourier_ols, mstl_ets, seasonal_naive): {per:.1f} s "
          f"per facility; chose {', '.join(chose)}")
    return {"s_per_facility": per, "chose": chose}


if __name__ == "__main__":
    sys.exit(main())
