"""The hostile-traffic soak (issue 13, property 10): ``make run``'s system under a mixed load for
a set duration, with a broker restart and a SEMS restart in the middle.

``sems run`` (embedded SQLite) consumes its meters over a real Mosquitto (``--mqtt``,
``--no-simulate``) from ``sems simulate --live --log`` (with duplicates, delays, late and
malformed messages), so every valid reading can be looked for in the store at the end. Beside
it: raw garbage over MQTT; API queries with random valid and hostile parameters over every GET
route of the live OpenAPI document as admin, viewer, utility (API key) and nobody; signed DR
webhooks and API-key events on a short schedule (with forged, stale and hostile ones,
overlapping windows and concurrent duplicates); the simulated BMS in this process, watched for
loads shed past their event's release deadline. At 30 % of the run Mosquitto is restarted
(SIGTERM, same port); at 60 % SEMS itself (SIGTERM, same data dir): the embedded profile has
no store server, so that is its store restart (SQLite closed by the stopping process, opened
again by the new one). ``--profile production`` also restarts PostgreSQL at 45 %.

Targets (exit status 1 when one is missed): 0 5xx, 0 stuck DR events, 0 loads shed past their
deadline, 0 readings lost, RSS growth under 50 MB within every SEMS process life (after its
warm-up; ``bench/soak_rss.py``). Method and results: docs/reliability.md.

    python -m bench.soak [--duration-s 600] [--json soak.json] [--workdir DIR] [--rate 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.report import machine_facts
from bench.soak_load import Credentials, Tally, Traffic, mqtt_garbage
from bench.soak_production import ProductionServers
from bench.soak_rss import LifeRss, life_rss, worst_growth_mb
from bench.soak_schedule import DrSchedule, ShedWatch, shifted, wait_final
from bench.soak_system import (
    REPO,
    SemsProcess,
    SimulatorProcess,
    base_env,
    dead_letter_reasons,
    expected_readings,
    log_summary,
    shed_loads,
    stored_readings,
)
from bench.soak_system import cli as sems_cli
from connectors.mqtt import BrokerAddress, MqttPublisher
from simulators.bms.server import BmsServer
from simulators.bms.service import BmsService
from simulators.fleet import build_fleet
from simulators.publish import align
from tests.servers import Mosquitto, free_port, wait_until

RSS_GROWTH_LIMIT_MB = 50.0
RSS_EVERY_S = 5.0
RSS_WARMUP_S = 60.0
"""Load a SEMS process serves before its RSS is the reference (10 % of shorter runs)."""
RELEASE_STAGES = 3
RELEASE_GAP_S = 20.0
REPORT_TIMEOUT_S = 30.0
RELEASE_GRACE_S = 60.0
SHUTDOWN_GRACE_S = 30.0
Readings = Callable[[], Awaitable[set[tuple[str, int]]]]
SIM_FAULTS = ["--duplicate-rate", "0.02", "--delay-rate", "0.02", "--late", "6",
              "--malformed", "16"]


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    rate: float
    workdir: Path | None
    json_path: Path | None
    seed: int
    sems_repo: Path
    profile: str


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=600.0, help="load phase (600 s)")
    p.add_argument("--rate", type=float, default=15.0, help="API queries per second (15)")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--sems-repo", type=Path, default=REPO,
                   help="run the SEMS of another checkout (e.g. `git archive be4c639` "
                        "unpacked) to check that the soak catches what was fixed since")
    p.add_argument("--profile", choices=["embedded", "production"], default="embedded",
                   help="embedded SQLite (default), or InfluxDB + PostgreSQL + Redis with a "
                        "PostgreSQL restart in the middle")
    a = p.parse_args(argv)
    if a.duration_s < 60:
        p.error("--duration-s must be at least 60")
    return Options(a.duration_s, a.rate, a.workdir, a.json, a.seed, a.sems_repo.resolve(),
                   a.profile)


@dataclass
class Result:
    machine: dict[str, str]
    duration_s: float
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    requests_by_status: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    first_5xx: dict[str, str] = field(default_factory=dict)
    findings: dict[str, str] = field(default_factory=dict)
    dr_events: dict[str, int] = field(default_factory=dict)
    stuck_events: list[str] = field(default_factory=list)
    dr_failures: dict[str, str] = field(default_factory=dict)
    shed_past_deadline: list[str] = field(default_factory=list)
    readings_expected: int = 0
    readings_lost: int = 0
    lost_reasons: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    """``start``: the first SEMS process after its warm-up; ``end``: the last one at its
    stop. Two processes: their difference is not the growth (:attr:`rss_lives` is)."""
    rss_warmup_s: float = 0.0
    rss_lives: list[LifeRss] = field(default_factory=list)
    rss_samples_mb: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds into the load, pid, RSS) every 5 s: the trend, not just two points."""
    store_restart: str = ""
    soak_side: list[str] = field(default_factory=list)
    """Unhandled asyncio errors in the soak's own process (e.g. its MQTT client's disconnect
    future after the broker restart): reported, not SEMS's."""
    sems_log: dict[str, Any] = field(default_factory=dict)
    sems_stop_s: list[float] = field(default_factory=list)
    sems_exit_codes: list[int | None] = field(default_factory=list)
    mqtt: dict[str, int] = field(default_factory=dict)
    disruptions: list[str] = field(default_factory=list)

    def rss_growth_mb(self) -> float | None:
        """The largest growth of one SEMS process life (warm-up to its stop)."""
        return worst_growth_mb(self.rss_lives)

    def misses(self) -> list[str]:
        growth = self.rss_growth_mb()
        return [m for ok, m in [
            (self.server_errors == 0, f"{self.server_errors} 5xx"),
            (not self.stuck_events, f"{len(self.stuck_events)} stuck DR events"),
            (not self.shed_past_deadline,
             f"{len(self.shed_past_deadline)} loads shed past deadline"),
            (self.readings_lost == 0, f"{self.readings_lost} readings lost"),
            (growth is not None and growth < RSS_GROWTH_LIMIT_MB,
             f"RSS growth {'not measured' if growth is None else f'{growth:.1f} MB'}"),
        ] if not ok]


async def soak(opts: Options, workdir: Path) -> Result:
    fleet = build_fleet(facilities=3, meters_per_facility=4, seed=42)  # sems run's demo fleet
    result = Result(machine=machine_facts(), duration_s=opts.duration_s)
    mosquitto = Mosquitto(workdir / "mosquitto").start()
    bms = BmsServer(BmsService(fleet.models))
    await bms.start()
    servers = ProductionServers.start(workdir) if opts.profile == "production" else None
    env, dropped = base_env({
        **(servers.env() if servers is not None else {}),
        "SEMS_BMS_URL": bms.wsdl_url, "SEMS_LOG_LEVEL": "WARNING",
        "SEMS_DR_RELEASE_STAGES": str(RELEASE_STAGES),
        "SEMS_DR_RELEASE_GAP_S": str(RELEASE_GAP_S),
        "SEMS_DR_REPORT_TIMEOUT_S": str(REPORT_TIMEOUT_S),
        "SEMS_DR_RELEASE_GRACE_S": str(RELEASE_GRACE_S),
        "SEMS_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
    }, repo=opts.sems_repo)
    if opts.sems_repo != REPO or dropped:
        result.disruptions.append(f"SEMS from {opts.sems_repo}; settings it does not know, "
                                  f"not set: {dropped}")
    sems = SemsProcess(workdir, free_port(), mosquitto.url, env, repo=opts.sems_repo,
                       profile=opts.profile)
    sim = SimulatorProcess(workdir, mosquitto.url, base_env({})[0])
    fids = [f.facility_id for f in fleet.facilities]
    since = datetime.now(UTC) - timedelta(hours=2)
    result.rss_warmup_s = min(RSS_WARMUP_S, opts.duration_s * 0.1)
    sampling = asyncio.Event()

    async def sample_rss() -> None:
        sems.sample_rss()

    sampler = asyncio.create_task(every(sampling, RSS_EVERY_S, sample_rss, concurrency=1))
    asyncio.get_running_loop().set_exception_handler(
        lambda _, ctx: result.soak_side.append(f"{ctx.get('message')}: "
                                               f"{ctx.get('exception')!r}"[:300]))
    load_t0: float | None = None

    async def readings() -> set[tuple[str, int]]:
        if servers is not None:
            return await servers.stored_readings(workdir, fids, since)
        return await asyncio.to_thread(stored_readings, sems.data_dir / "sems.db")

    try:
        await asyncio.to_thread(sems.start)  # subscribes (persistent session) before any publish
        data = ["--data-dir", str(sems.data_dir)]

        def cli(args: list[str], env: dict[str, str]) -> str:
            return sems_cli(args, env, repo=opts.sems_repo)

        prof = ["--profile", opts.profile]
        secret = cli(["utility", "add", "soakgrid", "--name", "Soak Grid", *prof,
                      *(a for f in fids for a in ("--facility", f)), *data], env).splitlines()[-1]
        creds = Credentials(
            admin=cli(["token", "create", "--role", "admin", "--subject", "soak-admin", *data],
                      env),
            viewer=cli(["token", "create", "--role", "viewer", "--facility", fids[0],
                        "--subject", "soak-viewer", *data], env),
            api_key=cli(["utility", "key", "create", "soakgrid", *prof, *data],
                        env).splitlines()[-1],
            utility_id="soakgrid", secret=secret)
        now = datetime.now(UTC)
        sim.start(start=now - timedelta(hours=1), duration_s=3600, faults=SIM_FAULTS)
        await asyncio.to_thread(wait_until, sim.backfilled, timeout_s=120,
                                what="the simulator's backfill")
        await settle(readings, timeout_s=120)
        load_t0 = time.monotonic()
        await load(opts, result, fleet, sems, sim, mosquitto, creds, readings, servers,
                   started=load_t0)
        sim.stop()
        await settle(readings, timeout_s=60)
        await check_readings(result, sim, sems, await readings())
    finally:
        sim.stop()
        if sems.process is not None:  # its last RSS sample is taken just before the SIGTERM
            await asyncio.to_thread(sems.stop, grace_s=SHUTDOWN_GRACE_S + 15)
        sampling.set()
        await sampler
        if load_t0 is not None:
            rss_lives(result, sems, load_t0)
        result.sems_stop_s, result.sems_exit_codes = sems.stop_s, sems.exit_codes
        result.sems_log = log_summary(workdir)
        gc.collect()  # a dropped future's error reaches the handler now, not after the report
        mosquitto.stop()
        await bms.stop()
        if servers is not None:
            servers.stop()
    return result


async def settle(readings: Readings, *, timeout_s: float) -> None:
    """Wait until the store's reading count has not moved for 5 s (the backlog is in)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            n = len(await readings())
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 5:
                return
        await asyncio.sleep(1)


def rss_lives(result: Result, sems: SemsProcess, load_t0: float) -> None:
    """Each SEMS process life's RSS measure, times in seconds into the load phase."""
    for pid, raw in sems.rss_lives:
        samples = [(t - load_t0, mb) for t, mb in raw]
        result.rss_samples_mb += [(round(t, 1), pid, round(mb, 1)) for t, mb in samples]
        if samples:
            result.rss_lives.append(life_rss(pid, samples, warmup_s=result.rss_warmup_s))
    lives = result.rss_lives
    result.rss_mb = {"start": lives[0].warm_mb if lives else None,
                     "end": lives[-1].end_mb if lives else None}


async def load(opts: Options, result: Result, fleet: Any, sems: SemsProcess,
               sim: SimulatorProcess, mosquitto: Mosquitto, creds: Credentials,
               readings: Readings, servers: ProductionServers | None, *,
               started: float) -> None:
    tally = Tally()
    stop = asyncio.Event()
    mqtt_sent: Counter[str] = Counter()
    broker = BrokerAddress.parse(mosquitto.url)
    async with Traffic(sems.base, creds, fleet, tally, seed=opts.seed) as traffic:
        await traffic.load_spec()
        schedule = DrSchedule(traffic, release_s=RELEASE_STAGES * RELEASE_GAP_S)
        watch = ShedWatch(traffic, fleet.models,
                          deadline_s=RELEASE_STAGES * RELEASE_GAP_S + RELEASE_GRACE_S)
        tasks = [
            asyncio.create_task(every(stop, 1 / opts.rate, traffic.query, concurrency=16)),
            asyncio.create_task(every(stop, 0.5, traffic.hostile_webhook)),
            asyncio.create_task(every(stop, 1.0, traffic.hostile_dr_post)),
            asyncio.create_task(schedule.run(stop, until_s=opts.duration_s - 60)),
            asyncio.create_task(mqtt_garbage(
                lambda: MqttPublisher(broker, client_id="soak-garbage"), fleet,
                seed=opts.seed, stop=stop, every_s=2.0, sent=mqtt_sent)),
        ]
        watcher = asyncio.create_task(watch.run())
        await asyncio.sleep(max(0.0, started + opts.duration_s * 0.3 - time.monotonic()))
        await restart_broker(result, sim, mosquitto, tally)
        if servers is not None:
            await asyncio.sleep(max(0.0, started + opts.duration_s * 0.45 - time.monotonic()))
            at_s, shed = time.monotonic() - started, _shed_count(fleet)
            t0 = time.monotonic()
            tally.outage_began(frozenset({"store"}))
            await asyncio.to_thread(servers.restart_postgres)
            tally.outage_ended()
            result.disruptions.append(f"PostgreSQL restarted in {time.monotonic() - t0:.1f} s")
            result.store_restart = (
                f"PostgreSQL (DR events, commands, utilities) restarted at {at_s:.0f} s "
                f"while SEMS ran ({shed}); InfluxDB and Redis not restarted")
        await asyncio.sleep(max(0.0, started + opts.duration_s * 0.6 - time.monotonic()))
        at_s, shed = time.monotonic() - started, _shed_count(fleet)
        tally.restart_began()
        tally.outage_began(frozenset({"mqtt"}))  # the new process connects after it listens
        took = await asyncio.to_thread(sems.stop, grace_s=SHUTDOWN_GRACE_S + 15)
        await asyncio.to_thread(sems.start)
        tally.restart_ended()
        tally.outage_ended()
        result.disruptions.append(f"SEMS restarted at {at_s:.0f} s (stopped in {took:.1f} s, "
                                  f"{shed})")
        if servers is None:
            result.store_restart = (
                f"embedded profile, no store server: SEMS restarted at {at_s:.0f} s ({shed}); "
                "the stopping process closed SQLite, the new one opened the same file")
        await asyncio.sleep(max(0.0, started + opts.duration_s - time.monotonic()))
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        events = await wait_final(traffic, deadline_s=RELEASE_STAGES * RELEASE_GAP_S
                                  + REPORT_TIMEOUT_S + RELEASE_GRACE_S + 60)
        await watch.settle(timeout_s=RELEASE_STAGES * RELEASE_GAP_S + RELEASE_GRACE_S + 10)
        watch.stop()
        await watcher
    result.requests = {}
    for (kind, status), n in sorted(tally.statuses.items()):
        result.requests.setdefault(kind, {})[status] = n
    by_status: Counter[str] = Counter()
    for (_, status), n in tally.statuses.items():
        by_status[status] += n
    result.requests_by_status = dict(sorted(by_status.items()))
    result.server_errors, result.first_5xx = tally.server_errors, tally.first_5xx
    result.findings = {**tally.findings, **schedule.findings}
    result.dr_events = dict(Counter(e["status"] for e in events))
    now = datetime.now(UTC)
    deadline = timedelta(seconds=RELEASE_STAGES * RELEASE_GAP_S + REPORT_TIMEOUT_S
                         + RELEASE_GRACE_S)
    for e in events:
        if e["status"] not in ("completed", "failed") and \
                shifted(e["event_end"], deadline) < now:
            result.stuck_events.append(f"{e['id']} {e['facility_id']} {e['status']} "
                                       f"{e['event_start']}..{e['event_end']}")
        if e["status"] == "failed":
            result.dr_failures.setdefault("; ".join(e.get("failures") or ["(no reason)"])[:200],
                                          e["id"])
    result.shed_past_deadline = watch.violations
    result.mqtt = {**mqtt_sent, "scheduled DR events": schedule.created}


def _shed_count(fleet: Any) -> str:
    shed = shed_loads(fleet.models)
    return f"{sum(map(len, shed.values()))} loads of {len(shed)} facilities shed then"


async def every(stop: asyncio.Event, period_s: float, action: Any, *,
                concurrency: int = 4) -> None:
    """Run ``action`` every ``period_s`` (open loop, at most ``concurrency`` at once)."""
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            await action()
        finally:
            slots.release()

    next_at = time.monotonic()
    while not stop.is_set():
        await slots.acquire()
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(running.discard)
        next_at += period_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*running, return_exceptions=True)


async def restart_broker(result: Result, sim: SimulatorProcess, mosquitto: Mosquitto,
                         tally: Tally) -> None:
    """Stop the simulator between two steps (nothing in flight), SIGTERM Mosquitto and start it
    on the same port; then the simulator again from the step after its last one. SEMS's
    persistent session must bring back what the broker had queued for it."""
    into_step_s = time.time() % 15
    if not 5 <= into_step_s <= 9:  # mid-step: no publish in flight
        await asyncio.sleep((7 - into_step_s) % 15)
    sim.stop()
    next_step = align(datetime.now(UTC)) + timedelta(seconds=15)
    t0 = time.monotonic()
    tally.outage_began(frozenset({"mqtt"}))
    await asyncio.to_thread(mosquitto.stop)
    await asyncio.to_thread(mosquitto.start)
    tally.outage_ended()
    gap_s = max(0.0, (datetime.now(UTC) - next_step).total_seconds())
    sim.start(start=next_step, duration_s=gap_s, faults=[])
    result.disruptions.append(f"Mosquitto restarted in {time.monotonic() - t0:.1f} s "
                              f"(simulator resumed from {next_step.isoformat()})")


async def check_readings(result: Result, sim: SimulatorProcess, sems: SemsProcess,
                         stored: set[tuple[str, int]]) -> None:
    expected = expected_readings(sim.log_path)
    db = sems.data_dir / "sems.db"
    missing = expected - stored
    result.readings_expected, result.readings_lost = len(expected), len(missing)
    if missing and db.exists():
        result.lost_reasons = dead_letter_reasons(db, missing)
    result.lost_examples = [f"{m} {datetime.fromtimestamp(t / 1000, UTC).isoformat()}"
                            for m, t in sorted(missing, key=lambda x: x[1])[:5]]


def print_report(r: Result) -> None:
    print(f"\nhostile-traffic soak, {r.duration_s:.0f} s load")
    print(f"{'requests':<34}{'status':>30}{'count':>9}")
    for kind, statuses in r.requests.items():
        for status, n in statuses.items():
            print(f"  {kind:<32}{status:>30}{n:>9}")
    print(f"all requests by status: {r.requests_by_status}")
    print(f"5xx: {r.server_errors}")
    for key, example in r.first_5xx.items():
        print(f"  first {key}: {example[:240]}")
    print(f"DR events by state at the end: {r.dr_events}; stuck: {len(r.stuck_events)}")
    for line in r.stuck_events[:5]:
        print(f"  stuck {line}")
    for reason, eid in r.dr_failures.items():
        print(f"  failed ({eid}): {reason}")
    print(f"loads shed past deadline: {len(r.shed_past_deadline)}")
    for line in r.shed_past_deadline[:5]:
        print(f"  {line}")
    print(f"readings: {r.readings_expected} expected, {r.readings_lost} lost "
          f"{r.lost_reasons or ''} {r.lost_examples[:3] or ''}")
    rss = {k: _mb(v) for k, v in r.rss_mb.items()}
    print(f"RSS MB {rss} (start: first SEMS process {r.rss_warmup_s:.0f} s into the load; "
          f"end: last process at its stop); growth per process life "
          f"(after warm-up -> stop), worst {_mb(r.rss_growth_mb())} MB:")
    for n, life in enumerate(r.rss_lives, 1):
        print(f"  life {n} (pid {life.pid}, {life.from_s:.0f}..{life.to_s:.0f} s): "
              f"{_mb(life.warm_mb)} at {_mb(life.warm_s)} s -> {_mb(life.end_mb)}, "
              f"growth {_mb(life.growth_mb)} MB, peak {_mb(life.peak_mb)}, "
              f"trend {_mb(life.slope_mb_per_min, 2)} MB/min")
    print(f"store restart: {r.store_restart or '(none: the run ended before it)'}")
    print(f"SEMS stops took {r.sems_stop_s} s, exit codes {r.sems_exit_codes}")
    print(f"MQTT extras: {r.mqtt}; disruptions: {r.disruptions}")
    for line in r.soak_side[:5]:
        print(f"  soak process (not SEMS): {line}")
    for key, example in r.findings.items():
        print(f"  finding: {key}: {example[:240]}")
    print(f"SEMS log: {r.sems_log.get('tracebacks')} tracebacks; most frequent:")
    for g in r.sems_log.get("lines", [])[:8]:
        print(f"  {g['count']:>5} x {g['first'][:200]}")
    misses = r.misses()
    print("targets: " + ("all met" if not misses else "MISSED: " + ", ".join(misses)))


def _mb(v: float | None, digits: int = 1) -> float | None:
    return v if v is None else round(v, digits)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = opts.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="sems-soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(soak(opts, workdir))
    print_report(result)
    if opts.json_path is not None:
        opts.json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 1 if result.misses() else 0


if __name__ == "__main__":
    sys.exit(main())
