"""Does the API stall while ``sems run`` starts? ``/current`` latency during start-up,
backfill and the first forecasts (model choice), beside the same polling of the same process
once it is idle, in the same run.

Each run starts ``sems run`` (the embedded default: local runtime, SQLite, the in-process
simulator) with ``--backfill-s`` of history to feed, and polls ``/api/facilities/fac-001/current``
at a fixed rate from the moment the port answers. Each request is timed from when it was due,
and sent then whether or not the previous one was answered (open loop), so a stalled loop
cannot hide its queueing (no coordinated omission). The busy phase lasts
until the backfill is fed (``/current`` has live data) and every facility has a forecast
(the model choice ran); then the baseline phase polls the idle process for ``--baseline-s``.
``sems_event_loop_lag_seconds`` (the process's own probe, a sliding maximum) is read from
``/metrics`` twice a second. Reported: p50/p95/p99/max of each phase, the max loop lag, the
ratios busy/baseline, and medians over ``--runs``.

    python -m bench.startup [--runs 3] [--backfill-s 172800] [--rate 20] [--baseline-s 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.report import cpu_model, sems_revision
from tests.servers import free_port, spawn, stop_process

SEMS = [sys.executable, "-m", "streams.cli"]
REPO = Path(__file__).resolve().parents[1]
FACILITIES = ("fac-001", "fac-002", "fac-003")
LAG = re.compile(r"^sems_event_loop_lag_seconds (\S+)$", re.MULTILINE)
TARGET_P99_S = 0.25


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Phase:
    latencies_s: list[float] = field(default_factory=list)
    worst: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the start, latency s) of the slowest requests: when the API stalled."""
    lags_s: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float]:
        lat = self.latencies_s
        return {"requests": len(lat), "errors": self.errors,
                "p50_ms": quantile(lat, 0.5) * 1000, "p95_ms": quantile(lat, 0.95) * 1000,
                "p99_ms": quantile(lat, 0.99) * 1000, "max_ms": max(lat, default=0) * 1000,
                "max_loop_lag_ms": max(self.lags_s, default=0) * 1000}

    def stalls(self) -> list[tuple[float, float]]:
        return sorted(sorted(self.worst, key=lambda w: -w[1])[:8])


@dataclass
class RunResult:
    busy: dict[str, float]
    baseline: dict[str, float]
    stalls: list[tuple[float, float]]
    backfill_fed_s: float
    forecasts_s: float


class Sems:
    def __init__(self, workdir: Path, *, backfill_s: float, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data = workdir / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        env.update(SEMS_API_RATE_PER_S="100000", SEMS_API_RATE_BURST="100000", **extra_env)
        token = subprocess.run([*SEMS, "token", "create", "--role", "admin", "--data-dir",
                                str(data)], env=env, cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.strip()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.log = (workdir / "sems.log").open("wb")
        self.started = time.perf_counter()
        self.process = spawn([*SEMS, "run", "--port", str(self.port), "--data-dir", str(data),
                              "--backfill-s", str(backfill_s)], env=env, cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=self.log,
                             stderr=subprocess.STDOUT)

    def stop(self) -> None:
        stop_process(self.process, timeout_s=30)
        self.log.close()


async def _poll(session: aiohttp.ClientSession, sems: Sems, phase: list[Phase],
                interval_s: float, stop: asyncio.Event) -> None:
    """``/current`` every ``interval_s`` (open loop: each request is sent when due, whether or
    not the previous one has been answered), each timed from its due time, into the phase
    current when it was due."""
    url = f"{sems.base}/api/facilities/fac-001/current"
    in_flight: set[asyncio.Task[None]] = set()

    async def one(due: float, into: Phase) -> None:
        try:
            async with session.get(url, headers=sems.headers) as r:
                await r.read()
                ok = r.status == 200
        except aiohttp.ClientError:
            ok = False
        if not ok:
            into.errors += 1
            return
        latency_s = time.perf_counter() - due
        into.latencies_s.append(latency_s)
        if latency_s > 0.1:
            into.worst.append((round(due - sems.started, 2), round(latency_s, 3)))

    due = time.perf_counter()
    while not stop.is_set():
        wait_s = due - time.perf_counter()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        task = asyncio.create_task(one(due, phase[0]))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        due += interval_s
    if in_flight:
        await asyncio.gather(*in_flight)


async def _lag(session: aiohttp.ClientSession, sems: Sems, phase: list[Phase],
               stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with session.get(f"{sems.base}/metrics", headers=sems.headers) as r:
                m = LAG.search(await r.text())
            if m:
                phase[0].lags_s.append(float(m.group(1)))
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)


async def _get_json(session: aiohttp.ClientSession, sems: Sems, path: str) -> object:
    async with session.get(sems.base + path, headers=sems.headers) as r:
        return await r.json() if r.status == 200 else None


async def one_run(workdir: Path, *, backfill_s: float, rate: float,
                  baseline_s: float, timeout_s: float, extra_env: dict[str, str],
                  forecasts: bool) -> RunResult:
    sems = Sems(workdir, backfill_s=backfill_s, extra_env=extra_env)
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=100)) as session:
            while True:  # the port answers
                try:
                    async with session.get(f"{sems.base}/healthz") as r:
                        await r.read()
                    break
                except aiohttp.ClientError:
                    if sems.process.poll() is not None:
                        raise RuntimeError("sems run exited") from None
                    await asyncio.sleep(0.02)
            busy, baseline = Phase(), Phase()
            phase = [busy]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_poll(session, sems, phase, 1 / rate, stop)),
                     asyncio.create_task(_lag(session, sems, phase, stop))]
            fed_s = forecasts_s = 0.0
            deadline = time.perf_counter() + timeout_s
            while not (fed_s and forecasts_s):
                if time.perf_counter() > deadline:
                    raise TimeoutError("backfill or forecasts not done in time")
                await asyncio.sleep(1.0)
                if not fed_s:
                    body = await _get_json(session, sems, "/api/facilities/fac-001/current")
                    age = body.get("data_age_s") if isinstance(body, dict) else None
                    if age is not None and age < 30:
                        fed_s = time.perf_counter() - started
                if not forecasts:
                    forecasts_s = fed_s
                elif not forecasts_s:
                    counts = [await _get_json(session, sems, f"/api/facilities/{f}/forecast")
                              for f in FACILITIES]
                    if all(isinstance(c, dict) and c.get("points") for c in counts):
                        forecasts_s = time.perf_counter() - started
            phase[0] = baseline
            await asyncio.sleep(baseline_s)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        sems.stop()
    return RunResult(busy.summary(), baseline.summary(), busy.stalls(), fed_s, forecasts_s)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--backfill-s", type=float, default=2 * 86_400.0)
    p.add_argument("--rate", type=float, default=20.0, help="/current requests per second")
    p.add_argument("--baseline-s", type=float, default=15.0)
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--env", action="append", default=[], metavar="SEMS_X=VALUE",
                   help="a setting for the measured sems run (SEMS_FORECAST_ENABLED=false: "
                        "start-up and backfill alone)")
    p.add_argument("--out", type=Path, default=REPO / ".run" / "bench-startup.json")
    args = p.parse_args(argv)
    extra_env = dict(e.split("=", 1) for e in args.env)
    forecasts = extra_env.get("SEMS_FORECAST_ENABLED", "true").lower() not in ("false", "0")
    results: list[RunResult] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="sems-bench-startup-") as tmp:
            r = asyncio.run(one_run(Path(tmp), backfill_s=args.backfill_s, rate=args.rate,
                                    baseline_s=args.baseline_s, timeout_s=args.timeout_s,
                                    extra_env=extra_env, forecasts=forecasts))
        results.append(r)
        print(f"run {i + 1}: backfill fed at {r.backfill_fed_s:.1f} s, forecasts at "
              f"{r.forecasts_s:.1f} s; busy {_row(r.busy)}; baseline {_row(r.baseline)}; "
              f"slowest (s since start, latency s): {r.stalls}", flush=True)

    def med(which: str, key: str) -> float:
        return float(statistics.median(getattr(r, which)[key] for r in results))

    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "max_loop_lag_ms")
    summary: dict[str, Any] = {
        "revision": sems_revision(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "args": {k: str(v) for k, v in
                                                              vars(args).items()},
        "busy": {k: med("busy", k) for k in keys},
        "baseline": {k: med("baseline", k) for k in keys},
        "backfill_fed_s": statistics.median(r.backfill_fed_s for r in results),
        "forecasts_s": statistics.median(r.forecasts_s for r in results),
        "runs": [asdict(r) for r in results],
    }
    summary["ratio"] = {k: summary["busy"][k] / max(summary["baseline"][k], 1e-3)
                        for k in keys}
    print(f"\nmedians of {len(results)} runs ({summary['revision']}):")
    print(f"{'':10}" + "".join(f"{k:>17}" for k in keys))
    for row in ("busy", "baseline", "ratio"):
        fmt = "{:>17.2f}" if row == "ratio" else "{:>17.1f}"
        print(f"{row:10}" + "".join(fmt.format(summary[row][k]) for k in keys))
    p99 = summary["busy"]["p99_ms"]
    print(f"target: busy p99 < {TARGET_P99_S * 1000:.0f} ms: "
          f"{'met' if p99 < TARGET_P99_S * 1000 else 'NOT met'} ({p99:.0f} ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return 0


def _row(s: dict[str, float]) -> str:
    return (f"p50 {s['p50_ms']:.0f} p95 {s['p95_ms']:.0f} p99 {s['p99_ms']:.0f} "
            f"max {s['max_ms']:.0f} ms, lag {s['max_loop_lag_ms']:.0f} ms ({s['requests']:.0f} "
            f"req, {s['errors']:.0f} err)")


if __name__ == "__main__":
    sys.exit(main())
