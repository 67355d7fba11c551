"""InfluxDB write throughput: SEMS's time-series adapter beside the server's own limit, in the
same run, on a real InfluxDB 2.7 (``infra/local/influxdb.sh``).

* **SEMS write()**: ``InfluxTimeSeries.write`` of the simulator's readings in batches of
  ``--batch`` (what the pipeline does per batch: build line protocol, one POST per bucket,
  wait for the answer), one batch after another.
* **raw bulk POST**: the same batches as line protocol built beforehand, POSTed to
  ``/api/v2/write`` with aiohttp one after another, and with 4 in flight: the server's rate
  for this data with no client work at all.

Each run writes into a fresh bucket; runs are interleaved; medians and ratios are reported.
A point is one line: one reading, four fields. Method and results: docs/performance.md.

    python -m bench.influx [--readings 200000] [--batch 2000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

from bench.report import machine_facts
from connectors.influx import InfluxBuckets, InfluxTimeSeries
from connectors.influx.protocol import reading_line
from core.metrics import Metrics
from schemas.reading import SensorReading
from simulators.fleet import build_fleet
from simulators.publish import Simulation
from tests.servers import INFLUX_ORG, INFLUX_TOKEN, InfluxDB, store_server_versions

SEMS = "SEMS InfluxTimeSeries.write"
RAW_1 = "raw bulk POST, 1 in flight"
RAW_4 = "raw bulk POST, 4 in flight"


@dataclass(frozen=True, slots=True)
class Options:
    readings: int
    batch: int
    repeat: int
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.influx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    return Options(a.readings, a.batch, a.repeat, a.json)


async def simulated(readings: int) -> list[SensorReading]:
    """The first ``readings`` of a 100-facility fleet, starting 12 hours ago."""
    fleet = build_fleet(facilities=100, meters_per_facility=5, seed=42)
    out: list[SensorReading] = []

    async def keep(_topic: str, payload: bytes) -> None:
        out.append(SensorReading.model_validate_json(payload))

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=12)
    steps = -(-readings // len(fleet.meters))
    await Simulation(fleet, keep, seed=1).run_range(start, start + timedelta(seconds=15 * steps))
    return out[:readings]


def buckets() -> InfluxBuckets:
    sfx = uuid.uuid4().hex[:8]
    return InfluxBuckets(raw=f"b_raw_{sfx}", minute=f"b_1m_{sfx}", rollups=f"b_r_{sfx}")


async def sems_write(url: str, batches: list[list[SensorReading]]) -> float:
    store = InfluxTimeSeries(url, INFLUX_TOKEN, INFLUX_ORG, buckets=buckets(),
                             metrics=Metrics(), timeout_s=60)
    await store.open()
    try:
        started = time.perf_counter()
        for b in batches:
            await store.write(b, [])
        return time.perf_counter() - started
    finally:
        await store.close()


async def raw_post(url: str, bodies: list[bytes], *, in_flight: int) -> float:
    b = buckets()
    store = InfluxTimeSeries(url, INFLUX_TOKEN, INFLUX_ORG, buckets=b, metrics=Metrics())
    await store.open()  # the same bucket set-up, retention included
    await store.close()
    endpoint = f"{url}/api/v2/write?org={INFLUX_ORG}&bucket={b.raw}&precision=ms"
    headers = {"Authorization": f"Token {INFLUX_TOKEN}",
               "Content-Type": "text/plain; charset=utf-8"}
    slots = asyncio.Semaphore(in_flight)
    async with aiohttp.ClientSession() as http:
        async def post(body: bytes) -> None:
            async with slots, http.post(endpoint, data=body, headers=headers) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"write refused: {resp.status} {await resp.text()}")

        started = time.perf_counter()
        await asyncio.gather(*(post(body) for body in bodies))
        return time.perf_counter() - started


async def run(opts: Options) -> dict[str, list[float]]:
    readings = await simulated(opts.readings)
    batches = [readings[i:i + opts.batch] for i in range(0, len(readings), opts.batch)]
    bodies = ["\n".join(reading_line(r) for r in b).encode() for b in batches]
    rates: dict[str, list[float]] = {SEMS: [], RAW_1: [], RAW_4: []}
    with tempfile.TemporaryDirectory(prefix="sems-bench-influx-") as tmp:
        server = InfluxDB(Path(tmp) / "influxdb").start()
        try:
            measures: dict[str, Callable[[], Awaitable[float]]] = {
                SEMS: lambda: sems_write(server.url, batches),
                RAW_1: lambda: raw_post(server.url, bodies, in_flight=1),
                RAW_4: lambda: raw_post(server.url, bodies, in_flight=4),
            }
            kinds = list(measures)
            for rep in range(opts.repeat):
                for kind in kinds[rep % 3:] + kinds[:rep % 3]:
                    elapsed = await measures[kind]()
                    rates[kind].append(len(readings) / elapsed)
                    print(f"run {rep + 1}/{opts.repeat} {kind}: {rates[kind][-1]:,.0f} points/s",
                          file=sys.stderr)
        finally:
            server.stop()
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    rates = asyncio.run(run(opts))
    facts = {**machine_facts(), **store_server_versions()}
    for key in ("date", "nproc", "cpu", "sems", "python", "influxdb"):
        print(f"{key:>10}: {facts[key]}")
    print(f"{'data':>10}: {opts.readings:,} simulator readings (4 fields each) in batches of "
          f"{opts.batch:,}; {opts.repeat} runs each, interleaved\n")
    runs = " | ".join(f"run {i + 1}" for i in range(opts.repeat))
    print(f"| writer | {runs} | median points/s |")
    print("|---|" + "---:|" * (opts.repeat + 1))
    for kind, values in rates.items():
        cells = " | ".join(f"{v:,.0f}" for v in values)
        print(f"| {kind} | {cells} | {statistics.median(values):,.0f} |")
    sems = statistics.median(rates[SEMS])
    print(f"\nSEMS / raw 1 in flight: {sems / statistics.median(rates[RAW_1]):.2f}; "
          f"SEMS / raw 4 in flight: {sems / statistics.median(rates[RAW_4]):.2f}")
    if opts.json_path is not None:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_bytes(orjson.dumps(
            {"machine": facts, "readings": opts.readings, "batch": opts.batch,
             "repeat": opts.repeat, "points_per_s": rates,
             "median_points_per_s": {k: statistics.median(v) for k, v in rates.items()}},
            option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
