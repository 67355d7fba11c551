"""The API under load, production profile (InfluxDB, PostgreSQL, Redis), everything that
issue 15's targets compare measured in the same run:

* **same process**: wrk on ``/healthz``, authenticated ``/current`` (cached, random facilities)
  and ``/api/facilities``, one after another against one ``sems run`` process: the ratios of
  each route to health;
* **open loop** at a fixed rate (500 requests/s) over random facilities for ``--duration-s``,
  each request timed from when it was *due* (no coordinated omission): p50/p95/p99, errors;
  with the Redis cache and without it (``SEMS_REDIS_URL=`` empty);
* **ceiling**: wrk on ``/current`` with the cache against the same without;
* **processes**: wrk on ``/current`` against ``sems api --workers 1`` and ``--workers 2``,
  with the CPU wrk and the API processes used;
* **start-up**: ``/current`` open loop (``--startup-rate``) from the moment ``sems run``
  accepts connections, for ``--startup-s``, while its start-up work (recovery, the first
  forecasts, a cold cache) runs.

Every request carries an admin token of the API's local issuer; the per-credential and
per-address limits are raised (one bench process stands for every dashboard). The exit status
is 1 when a target is missed (see ``TARGETS``; the processes target only on 4 or more cores,
where wrk and two API processes each have one). Method and results: docs/performance.md.

    python -m bench.api [--facilities 100] [--rate 500] [--duration-s 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.api_load import OpenLoop, Wrk, has_data, open_loop, wrk
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
    spawn,
    stop_process,
    store_server_versions,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Options:
    facilities: int
    rate: float
    duration_s: float
    repeat: int
    connections: int
    wrk_s: float
    startup_rate: float
    startup_s: float
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--facilities", type=int, default=100, help="fleet facilities (100)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s (500)")
    p.add_argument("--duration-s", type=float, default=20.0, help="open-loop run (20 s)")
    p.add_argument("--repeat", type=int, default=3, help="runs of everything (3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--wrk-s", type=float, default=8.0, help="each wrk run (8 s)")
    p.add_argument("--startup-rate", type=float, default=100.0,
                   help="open-loop requests/s during start-up (100)")
    p.add_argument("--startup-s", type=float, default=10.0,
                   help="how long after the API accepts start-up is measured (10 s)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    return Options(a.facilities, a.rate, a.duration_s, a.repeat, a.connections, a.wrk_s,
                   a.startup_rate, a.startup_s, a.json)


@dataclass
class Run:
    """One repeat: every measurement the targets compare, made in the same run."""

    startup: OpenLoop
    healthz: Wrk
    current: Wrk
    facilities: Wrk
    cached: OpenLoop
    uncached: OpenLoop
    uncached_current: Wrk
    one_process: Wrk
    two_processes: Wrk
    embedded_healthz: Wrk
    embedded_current: Wrk
    embedded_facilities: Wrk

    def ratios(self) -> dict[str, float]:
        return {
            "embedded current / healthz": (self.embedded_current.requests_per_s
                                           / self.embedded_healthz.requests_per_s),
            "embedded facilities / healthz": (self.embedded_facilities.requests_per_s
                                              / self.embedded_healthz.requests_per_s),
            "current / healthz": self.current.requests_per_s / self.healthz.requests_per_s,
            "facilities / healthz": (self.facilities.requests_per_s
                                     / self.healthz.requests_per_s),
            "cached / uncached ceiling": (self.current.requests_per_s
                                          / self.uncached_current.requests_per_s),
            "2 / 1 processes": (self.two_processes.requests_per_s
                                / self.one_process.requests_per_s),
        }


@dataclass
class Results:
    machine: dict[str, str]
    facilities: int
    runs: list[Run] = field(default_factory=list)


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
    """``sems run --profile production`` (no simulator), or ``sems api --workers N``."""

    servers: Servers
    workdir: Path
    cached: bool
    workers: int = 0
    """0: ``sems run``; N: ``sems api --workers N``."""
    embedded: bool = False
    """``sems run`` as it comes (SQLite, the simulated demo fleet, forecasts), not production."""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        s = self.servers
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        env.update({
            "SEMS_LOG_LEVEL": "WARNING",
            # One client stands for every dashboard here: no per-caller or per-address limit.
            "SEMS_API_RATE_PER_S": "1000000", "SEMS_API_RATE_BURST": "1000000",
            "SEMS_API_CLIENT_RATE_PER_S": "1000000", "SEMS_API_CLIENT_RATE_BURST": "1000000",
        })
        if self.embedded:
            return env
        env.update({
            "SEMS_INFLUX_URL": s.influx.url, "SEMS_INFLUX_TOKEN": INFLUX_TOKEN,
            "SEMS_INFLUX_ORG": INFLUX_ORG, "SEMS_INFLUX_BUCKET_PREFIX": s.bucket_prefix,
            "SEMS_POSTGRES_DSN": s.postgres.dsn,
            "SEMS_REDIS_URL": s.redis.url if self.cached else "",
        })
        return env

    def launch(self) -> Api:
        env = self.env()
        data = str(self.workdir / "data")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = subprocess.run(
            [sys.executable, "-m", "streams.cli", "token", "create", "--role", "admin",
             "--data-dir", data], env=env, cwd=REPO, check=True, capture_output=True,
            text=True).stdout.strip()
        command = (["run", "--backfill-s", "600"] if self.embedded else
                   ["run", "--profile", "production", "--runtime", "local", "--no-simulate",
                    "--no-demo-fleet"] if self.workers == 0 else
                   ["api", "--profile", "production", "--workers", str(self.workers)])
        with (self.workdir / "api.log").open("ab") as log:
            self.process = spawn([sys.executable, "-m", "streams.cli", *command,
                                  "--data-dir", data, "--port", str(self.port)],
                                 env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        return self

    def accepting(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the API exited; log in {self.workdir / 'api.log'}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def wait_accepting(self) -> None:
        wait_until(self.accepting, timeout_s=60, what=f"the API on {self.base}", poll_s=0.005)

    def start(self) -> Api:
        self.launch()
        self.wait_accepting()
        return self

    def pids(self) -> list[int]:
        """The processes serving: ``sems run`` or ``sems api`` itself, or the workers of a
        ``sems api --workers N`` group."""
        if self.process is None:
            return []
        if self.workers <= 1:
            return [self.process.pid]
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(c) for c in children]

    def all_serving(self) -> bool:
        return len(self.pids()) == max(1, self.workers) and self.accepting()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=30)


# -- one run --------------------------------------------------------------------------------

async def warm(api: Api, paths: list[str]) -> None:
    """Every facility asked once, so that wrk measures the cache, not its first misses."""
    await open_loop(api.base, paths, rate=200, duration_s=len(paths) / 200, token=api.token,
                    warm=False)


def wrk_on(api: Api, paths: list[str], opts: Options, root: Path) -> Wrk:
    return wrk(api.base, paths, connections=opts.connections, duration_s=opts.wrk_s,
               workdir=root, token=api.token, api_pids=api.pids())


async def measure(servers: Servers, paths: list[str], opts: Options, root: Path,
                  rep: int) -> Run:
    tag = f"{rep}-{uuid.uuid4().hex[:4]}"
    order = [True, False] if rep % 2 == 0 else [False, True]
    parts: dict[str, object] = {}
    for cached in order:
        api = Api(servers, root / f"run-{tag}-{'c' if cached else 'u'}", cached=cached)
        api.launch()
        try:
            api.wait_accepting()
            if cached:  # from the first moment it accepts: start-up work and a cold cache
                parts["startup"] = await open_loop(api.base, paths, rate=opts.startup_rate,
                                                   duration_s=opts.startup_s,
                                                   token=api.token, warm=False)
            await warm(api, paths)
            if cached:
                for name, route in (("healthz", ["/healthz"]), ("current", paths),
                                    ("facilities", ["/api/facilities"])):
                    parts[name] = await asyncio.to_thread(wrk_on, api, route, opts, root)
                parts["cached"] = await open_loop(api.base, paths, rate=opts.rate,
                                                  duration_s=opts.duration_s, token=api.token)
            else:
                parts["uncached_current"] = await asyncio.to_thread(wrk_on, api, paths, opts,
                                                                    root)
                parts["uncached"] = await open_loop(api.base, paths, rate=opts.rate,
                                                    duration_s=opts.duration_s,
                                                    token=api.token)
        finally:
            api.stop()
    for workers in ([1, 2] if rep % 2 == 0 else [2, 1]):
        api = Api(servers, root / f"api-{tag}-{workers}", cached=True, workers=workers)
        api.start()
        try:
            wait_until(api.all_serving, timeout_s=30, what="the API processes")
            await warm(api, paths)
            key = "one_process" if workers == 1 else "two_processes"
            parts[key] = await asyncio.to_thread(wrk_on, api, paths, opts, root)
        finally:
            api.stop()
    api = Api(servers, root / f"embedded-{tag}", cached=True, embedded=True).start()
    try:
        await has_data(api.base, EMBEDDED_CURRENT, token=api.token)
        for name, route in (("embedded_healthz", ["/healthz"]),
                            ("embedded_current", [EMBEDDED_CURRENT]),
                            ("embedded_facilities", ["/api/facilities"])):
            parts[name] = await asyncio.to_thread(wrk_on, api, route, opts, root)
    finally:
        api.stop()
    return Run(**parts)  # type: ignore[arg-type]


EMBEDDED_CURRENT = "/api/facilities/fac-001/current"
"""The demo fleet's first facility, as in the issue's embedded profile."""


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
            for rep in range(opts.repeat):
                r = await measure(servers, paths, opts, root, rep)
                results.runs.append(r)
                ratios = ", ".join(f"{k} {v:.2f}" for k, v in r.ratios().items())
                print(f"run {rep + 1}/{opts.repeat}: cached p95 {r.cached.p95_ms:.1f} ms, "
                      f"{r.cached.errors} errors; start-up p99 {r.startup.p99_ms:.0f} ms; "
                      f"{ratios}", file=sys.stderr)
        finally:
            redis.stop()
            postgres.stop()
            influx.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from bench.api_report import report

    opts = parse_args(argv)
    started = time.perf_counter()
    results = asyncio.run(run(opts))
    found = report(results, opts)
    if opts.json_path is not None:
        opts.json_path.write_bytes(orjson.dumps(
            {"machine": results.machine, "facilities": results.facilities,
             "runs": [{**asdict(r), "ratios": r.ratios()} for r in results.runs],
             "targets": [asdict(t) for t in found]}, option=orjson.OPT_INDENT_2))
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0 if all(t.met for t in found if t.judged) else 1


if __name__ == "__main__":
    sys.exit(main())
