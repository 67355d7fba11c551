"""Dashboard API latency under load, production profile: ``/current`` with the Redis cache
beside the same route without a cache, in the same run.

The API runs as ``sems run --profile production`` (a process of its own) against real InfluxDB,
PostgreSQL and Redis servers, over a fleet whose last hour of readings is stored. Two loads:

* **open loop** at a fixed rate (default 500 requests/s, the issue's figure) over random
  facilities for ``--duration-s``: each request is timed from when it was *due*, so a stalled
  server cannot hide its queueing (no coordinated omission); p50/p95/p99 and errors.
* **wrk** (Debian's ``wrk``, closed loop, ``-c`` connections) for the most the API serves.

Configurations alternate run by run; results are medians over ``--repeat`` runs.
Method and results: docs/performance.md.

    python -m bench.api [--facilities 100] [--rate 500] [--duration-s 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

from bench.report import machine_facts
from connectors.postgres.migrate import upgrade
from core.metrics import Metrics
from schemas.reading import SensorReading
from simulators.fleet import Fleet, build_fleet
from simulators.publish import Simulation
from streams.settings import Settings
from streams.stores import build_store
from tables.ports.timeseries import CommitBatch
from tests.servers import (
    INFLUX_ORG,
    INFLUX_TOKEN,
    InfluxDB,
    Postgres,
    Redis,
    free_port,
    stop_process,
    store_server_versions,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
TARGET_P95_MS = 50.0
WITH_REDIS = "/current, Redis cache"
UNCACHED = "/current, no cache"


@dataclass(frozen=True, slots=True)
class Options:
    facilities: int
    rate: float
    duration_s: float
    repeat: int
    connections: int
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--facilities", type=int, default=100, help="fleet facilities (100)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (500)")
    p.add_argument("--duration-s", type=float, default=20.0, help="open-loop run (20 s)")
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration (3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    return Options(a.facilities, a.rate, a.duration_s, a.repeat, a.connections, a.json)


@dataclass
class Run:
    config: str
    rate: float
    sent: int
    errors: int
    achieved_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    wrk_requests_per_s: float
    wrk_p50_ms: float
    wrk_p99_ms: float


@dataclass
class Results:
    machine: dict[str, str]
    facilities: int
    runs: list[Run] = field(default_factory=list)

    def median(self, config: str, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs
                                       if r.config == config))


# -- the system under test ------------------------------------------------------------------

@dataclass
class Servers:
    influx: InfluxDB
    postgres: Postgres
    redis: Redis
    bucket_prefix: str

    def settings(self, data_dir: Path) -> Settings:
        return Settings.model_validate({
            "profile": "production", "runtime": "local", "data_dir": data_dir,
            "influx_url": self.influx.url, "influx_token": INFLUX_TOKEN,
            "influx_org": INFLUX_ORG, "influx_bucket_prefix": self.bucket_prefix,
            "postgres_dsn": self.postgres.dsn, "redis_url": self.redis.url,
        })


async def load_fleet(servers: Servers, fleet: Fleet, workdir: Path) -> int:
    """Register the fleet and store its last hour of readings; returns readings stored."""
    store = build_store(servers.settings(workdir / "loader"), Metrics())
    await store.open()
    try:
        await store.upsert_facilities(list(fleet.facilities))
        await store.upsert_meters(list(fleet.meters))
        readings: list[SensorReading] = []

        async def keep(_topic: str, payload: bytes) -> None:
            readings.append(SensorReading.model_validate_json(payload))

        now = datetime.now(UTC).replace(microsecond=0)
        await Simulation(fleet, keep, seed=1).run_range(now - timedelta(hours=1), now)
        for i in range(0, len(readings), 5_000):
            await store.commit(CommitBatch(readings=readings[i:i + 5_000]))
        return len(readings)
    finally:
        await store.close()


@dataclass
class Api:
    """``sems run --profile production`` serving the API, no simulator."""

    servers: Servers
    workdir: Path
    cached: bool
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    """An admin bearer token of the API's local issuer (every request carries one)."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Api:
        s = self.servers
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        env.update({
            "SEMS_INFLUX_URL": s.influx.url, "SEMS_INFLUX_TOKEN": INFLUX_TOKEN,
            "SEMS_INFLUX_ORG": INFLUX_ORG, "SEMS_INFLUX_BUCKET_PREFIX": s.bucket_prefix,
            "SEMS_POSTGRES_DSN": s.postgres.dsn,
            "SEMS_REDIS_URL": s.redis.url if self.cached else "",
            "SEMS_LOG_LEVEL": "WARNING",
            # One client stands for every dashboard here: no per-caller limit.
            "SEMS_API_RATE_PER_S": "1000000", "SEMS_API_RATE_BURST": "1000000",
        })
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = subprocess.run(
            [sys.executable, "-m", "streams.cli", "token", "create", "--role", "admin",
             "--data-dir", str(self.workdir / "data")], env=env, cwd=REPO, check=True,
            capture_output=True, text=True).stdout.strip()
        with (self.workdir / "api.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "run", "--profile", "production",
                 "--runtime", "local", "--no-simulate", "--no-demo-fleet",
                 "--data-dir", str(self.workdir / "data"), "--port", str(self.port)],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        wait_until(self._healthy, timeout_s=60, what=f"the API on {self.base}")
        return self

    def _healthy(self) -> bool:
        import urllib.request

        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"sems run exited; log in {self.workdir / 'api.log'}")
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=30)


# -- the loads ------------------------------------------------------------------------------

def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


async def open_loop(base: str, paths: list[str], *, rate: float, duration_s: float,
                    token: str) -> tuple[list[float], int, float]:
    """(latencies in ms, errors, achieved requests/s), each request timed from when it was
    due."""
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {token}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        loop = asyncio.get_running_loop()

        async def one(url: str, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append((loop.time() - due) * 1000)

        # Warm the connection pool so that connects do not count.
        await asyncio.gather(*(one(base + paths[0], loop.time()) for _ in range(20)))
        latencies.clear()
        errors = 0
        total = int(rate * duration_s)
        start = loop.time() + 0.1
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(base + rng.choice(paths), due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return latencies, errors, total / elapsed


WRK_LUA = """
wrk.headers["Authorization"] = "Bearer %s"
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def wrk(base: str, paths: list[str], *, connections: int, workdir: Path,
        token: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``wrk --latency`` for 10 s."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is missing: apt-get install wrk")
    script = workdir / "paths.lua"
    script.write_text(WRK_LUA % (token, ", ".join(f'"{p}"' for p in paths)))
    out = subprocess.run([binary, "-t2", f"-c{connections}", "-d10s", "--latency",
                          "-s", str(script), base], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} error responses:\n{out}")
    return rps, pct("50"), pct("99")


async def measure(api: Api, config: str, paths: list[str], opts: Options,
                  workdir: Path) -> Run:
    latencies, errors, achieved = await open_loop(api.base, paths, rate=opts.rate,
                                                  duration_s=opts.duration_s, token=api.token)
    ms = sorted(latencies)
    rps, w50, w99 = await asyncio.to_thread(wrk, api.base, paths,
                                            connections=opts.connections, workdir=workdir,
                                            token=api.token)
    return Run(config, opts.rate, len(ms), errors, achieved, percentile(ms, 0.5),
               percentile(ms, 0.95), percentile(ms, 0.99), ms[-1] if ms else float("nan"),
               rps, w50, w99)


async def run(opts: Options) -> Results:
    fleet = build_fleet(facilities=opts.facilities, meters_per_facility=5, seed=42)
    paths = [f"/api/facilities/{f.facility_id}/current" for f in fleet.facilities]
    with tempfile.TemporaryDirectory(prefix="sems-bench-api-") as tmp:
        root = Path(tmp)
        influx = InfluxDB(root / "influxdb").start()
        postgres = Postgres(root / "postgres").start()
        redis = Redis(root / "redis").start()
        try:
            upgrade(postgres.dsn)
            servers = Servers(influx, postgres, redis, f"bench{uuid.uuid4().hex[:6]}")
            stored = await load_fleet(servers, fleet, root)
            print(f"stored {stored:,} readings of {opts.facilities} facilities", file=sys.stderr)
            machine = {k: v for k, v in machine_facts().items()
                       if k not in ("mosquitto", "aiomqtt", "paho-mqtt")}
            results = Results(machine={**machine, **store_server_versions(),
                                       "wrk": "4.1.0 (Debian)"}, facilities=opts.facilities)
            configs = [WITH_REDIS, UNCACHED]
            for rep in range(opts.repeat):
                for config in configs[rep % 2:] + configs[:rep % 2]:
                    api = Api(servers, root / f"api-{rep}-{config[-5:]}",
                              cached=config == WITH_REDIS).start()
                    try:
                        r = await measure(api, config, paths, opts, root)
                    finally:
                        api.stop()
                    results.runs.append(r)
                    print(f"run {rep + 1}/{opts.repeat} {config}: p95 {r.p95_ms:.1f} ms at "
                          f"{r.achieved_per_s:.0f}/s, {r.errors} errors; wrk "
                          f"{r.wrk_requests_per_s:,.0f}/s", file=sys.stderr)
        finally:
            redis.stop()
            postgres.stop()
            influx.stop()
    return results


def report(results: Results, opts: Options) -> None:
    for key, value in results.machine.items():
        print(f"{key:>10}: {value}")
    print(f"{'fleet':>10}: {results.facilities} facilities x 5 meters, last hour stored; "
          f"open loop {opts.rate:g}/s for {opts.duration_s:g} s; wrk -c{opts.connections} 10 s")
    print()
    print("| configuration | open-loop rate | p50 ms | p95 ms | p99 ms | errors | "
          "wrk max req/s | wrk p50 ms | wrk p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config in (WITH_REDIS, UNCACHED):
        m = results.median
        errors = sum(r.errors for r in results.runs if r.config == config)
        print(f"| {config} | {m(config, 'achieved_per_s'):.0f}/s | {m(config, 'p50_ms'):.1f} | "
              f"{m(config, 'p95_ms'):.1f} | {m(config, 'p99_ms'):.1f} | {errors} | "
              f"{m(config, 'wrk_requests_per_s'):,.0f} | {m(config, 'wrk_p50_ms'):.1f} | "
              f"{m(config, 'wrk_p99_ms'):.1f} |")
    p95 = results.median(WITH_REDIS, "p95_ms")
    wrk_ratio = (results.median(WITH_REDIS, "wrk_requests_per_s")
                 / results.median(UNCACHED, "wrk_requests_per_s"))
    print(f"\np95 with Redis at {opts.rate:g}/s: {p95:.1f} ms (target < {TARGET_P95_MS:g} ms: "
          f"{'met' if p95 < TARGET_P95_MS else 'NOT met'}); uncached / cached p95: "
          f"{results.median(UNCACHED, 'p95_ms') / p95:.1f}x; wrk max cached / uncached: "
          f"{wrk_ratio:.1f}x")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    results = asyncio.run(run(opts))
    report(results, opts)
    if opts.json_path is not None:
        opts.json_path.write_bytes(orjson.dumps(
            {"machine": results.machine, "facilities": results.facilities,
             "runs": [asdict(r) for r in results.runs]}, option=orjson.OPT_INDENT_2))
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0 if all(r.errors == 0 for r in results.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
