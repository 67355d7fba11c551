"""Throughput of the kafka runtime beside the local runtime, in the same run, broker included.

Two measurements, each with a baseline beside it:

* **End to end**: a backlog of simulator readings queued in an MQTT session is drained by
  the local runtime (MQTT -> validation -> rollups -> SQLite) and by the kafka runtime
  (MQTT -> validation -> Kafka -> worker: rollups, Faust table, rollup topics -> SQLite),
  both in one process as ``sems run --runtime kafka`` runs it, and as an ingest process
  (``sems ingest``) with 1 and 2 ``sems worker`` processes beside it.
* **Per worker**: the same readings already on ``sensor-readings`` (as the ingest writes
  them) are drained by 1 and by 2 ``sems worker`` processes, beside ``kcat`` reading the
  topic to /dev/null (the broker's ceiling for a consumer).

Each run gets fresh topics (everything is deleted between runs) and a fresh consumer group;
runs are interleaved and reported as medians and ratios. Every SEMS run's store is checked
against the first local run's: readings lost or stored twice, rollup rows missing or extra.
Method and results: docs/performance.md.

    python -m bench.kafka [--readings 200000] [--repeat 3] [--workers 1,2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from bench.backlog import Backlog, build_backlog, publish_backlog
from bench.consumers import (
    BROKER_INFLIGHT,
    Drain,
    DrainTimeout,
    drain_timeout_s,
    forget_session,
)
from bench.report import Results, machine_facts, print_report, write_json
from bench.sems import SemsRuntime, cpu_use
from connectors import kafka as topics
from connectors.mqtt import BrokerAddress
from core.looplag import freeze_startup_heap
from simulators.fleet import Fleet, build_fleet
from streams import compose
from tests.integration.helpers import provision, settings
from tests.integration.kafka_helpers import (
    Worker,
    ingested,
    produce,
    register_in,
    rollups,
    scalar,
)
from tests.servers import Kafka, Mosquitto

LOCAL = "SEMS local runtime"
KCAT = "kcat (topic -> /dev/null)"
PARTITIONS = 8
# No window may close on the wall clock during a drain: every run must close the same
# windows, by event time alone, so their rollups can be compared row for row.
IDLE_TIMEOUT_S = 3600.0
POLL_S = 0.02
SLOW_POLL_S = 0.5
"""Until 95 % of the readings are stored: a COUNT(*) over the readings costs about 2 ms of
CPU, which 50 polls a second would take from the pipeline under test."""
WORKER_READY_S = 2.0
READINGS_SQL = "SELECT COUNT(*) FROM readings"
DISTINCT_SQL = "SELECT COUNT(*) FROM (SELECT DISTINCT meter_id, ts_ms FROM readings)"


def workers_name(n: int) -> str:
    return f"SEMS kafka worker x{n} (topic -> store)"


@dataclass(frozen=True, slots=True)
class Options:
    readings: int
    repeat: int
    workers: tuple[int, ...]
    facilities: int
    meters_per_facility: int
    seed: int
    json_path: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.kafka", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200_000, help="backlog size (200000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per consumer (3)")
    p.add_argument("--workers", default="1,2",
                   help="worker counts for the per-worker drain, comma-separated (1,2)")
    p.add_argument("--facilities", type=int, default=100, help="fleet facilities (100)")
    p.add_argument("--meters", type=int, default=5, help="meters per facility (5)")
    p.add_argument("--seed", type=int, default=42, help="simulator seed (42)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    a = p.parse_args(argv)
    try:
        workers = tuple(int(w) for w in a.workers.split(",") if w.strip())
    except ValueError:
        p.error("--workers takes comma-separated integers, e.g. 1,2")
    if a.readings < 1 or a.repeat < 1 or any(w < 1 for w in workers):
        p.error("--readings, --repeat and every --workers count must be at least 1")
    return Options(a.readings, a.repeat, workers, a.facilities, a.meters, a.seed, a.json)


# -- the broker between runs ----------------------------------------------------------------

async def delete_all_topics(bootstrap: str, *, timeout_s: float = 60.0) -> None:
    """Delete every topic but the broker's own, and wait until the broker lists none, so the
    next run starts from empty topics (and a new group from offset 0)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        if names:
            await admin.delete_topics(names)
        deadline = time.monotonic() + timeout_s
        while [t for t in await admin.list_topics() if not t.startswith("__")]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics still listed {timeout_s:g} s after deletion")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class BrokerCpu:
    """The broker JVM's CPU over a drain."""

    pid: int
    started: float = 0.0

    def start(self) -> None:
        self.started = process_cpu_s(self.pid)

    def note(self, wall_s: float) -> str:
        used = process_cpu_s(self.pid) - self.started
        return f"Kafka broker JVM: {used:.2f} s CPU ({used / wall_s:.0%} of a core)"


# -- checks against the local runtime's store -------------------------------------------------

@dataclass
class Reference:
    """The first local run's rollups: every later run must produce the same rows."""

    rows: set[tuple[Any, ...]] | None = None


def compare(db: Path, expected: int, reference: Reference) -> tuple[int, int, tuple[str, ...]]:
    """(lost, duplicated, notes) of a store after draining ``expected`` readings."""
    stored, distinct = scalar(db, READINGS_SQL), scalar(db, DISTINCT_SQL)
    rows = set(rollups(db))
    lost = max(0, expected - distinct)
    duplicated = (stored - distinct) + max(0, distinct - expected)
    notes = [f"{stored} readings stored, {distinct} distinct (meter, ts); {len(rows)} rollups"]
    if reference.rows is None:
        reference.rows = rows
    else:
        missing, extra = len(reference.rows - rows), len(rows - reference.rows)
        lost += missing
        duplicated += extra
        notes.append(f"rollups against the first local run: {missing} missing, {extra} "
                     "extra or different")
    return lost, duplicated, tuple(notes)


# -- the consumers --------------------------------------------------------------------------

@dataclass
class Bench:
    mosquitto: Mosquitto
    kafka: Kafka
    fleet: Fleet
    backlog: Backlog
    workdir: Path
    reference: Reference

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress.parse(self.mosquitto.url)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def broker_cpu(self) -> BrokerCpu:
        assert self.kafka.process is not None
        return BrokerCpu(self.kafka.process.pid)


async def local_run(bench: Bench, run_id: str) -> Drain:
    sems = SemsRuntime(bench.broker, client_id=f"bench-{run_id}", share_group=f"g-{run_id}",
                       fleet=bench.fleet, workdir=bench.workdir / run_id)
    sems.settings = sems.settings.model_copy(update={"idle_timeout_s": IDLE_TIMEOUT_S})
    await sems.subscribe()
    try:
        await publish_backlog(bench.broker.host, bench.broker.port, bench.backlog,
                              client_id=f"pub-{uuid.uuid4().hex[:8]}")
        freeze_startup_heap()  # as `sems run` does after its start-up
        drain = await sems.drain(bench.backlog.count)
    finally:
        await sems.forget()
    lost, duplicated, notes = compare(sems.settings.database_path, bench.backlog.count,
                                      bench.reference)
    return Drain(LOCAL, drain.expected, drain.received, drain.elapsed_s, lost=lost,
                 duplicated=duplicated, notes=drain.notes[-2:] + notes)


async def wait_stored(db: Path, expected: int, *, started: float, workers: list[Worker],
                      logs: Path) -> tuple[float, float | None]:
    """Poll the store until it holds ``expected`` readings; returns when that was, and when
    the first reading was stored (``perf_counter``)."""
    deadline = started + drain_timeout_s(expected)
    first_stored: float | None = None
    while True:
        stored = scalar(db, READINGS_SQL)
        now = time.perf_counter()
        if stored and first_stored is None:
            first_stored = now
        if stored >= expected:
            return now, first_stored
        if now > deadline:
            raise DrainTimeout(f"stored {stored} of {expected} in {now - started:.0f} s")
        if not all(w.alive for w in workers):
            raise RuntimeError(f"a worker exited; logs in {logs}")
        await asyncio.sleep(POLL_S if stored >= 0.95 * expected else SLOW_POLL_S)


def _recovered(worker: Worker) -> bool:
    """The worker has its partitions and has recovered its table since its last assignment."""
    log = worker.log()
    return log.rfind("Worker ready") > log.rfind("Setting newly assigned partitions") >= 0


async def wait_workers_ready(workers: list[Worker], *, timeout_s: float = 120.0) -> None:
    """Every worker has joined the group and recovered, and stays so for ``WORKER_READY_S``
    (a later member's join rebalances the earlier ones)."""
    deadline = time.perf_counter() + timeout_s
    steady_since: float | None = None
    while True:
        now = time.perf_counter()
        if all(_recovered(w) for w in workers):
            steady_since = steady_since or now
            if now - steady_since >= WORKER_READY_S:
                return
        else:
            steady_since = None
        if now > deadline or not all(w.alive for w in workers):
            raise RuntimeError("workers did not become ready: " + "; ".join(
                str(w.log_path) for w in workers))
        await asyncio.sleep(0.1)


def e2e_name(workers: int) -> str:
    if workers == 0:
        return "SEMS kafka: one process (sems run)"
    return f"SEMS kafka: ingest + {workers} worker{'s' if workers > 1 else ''}"


def _process_cpu_note(workers: list[Worker], wall_s: float, *, readings: int,
                      before: Sequence[float] | None = None) -> str:
    cpus = [process_cpu_s(w.process.pid) for w in workers if w.process is not None]
    if before is not None:
        cpus = [c - b for c, b in zip(cpus, before, strict=True)]
    per = max(readings, 1) / 1e6
    return "worker CPU: " + ", ".join(f"{c:.2f} s ({c / wall_s:.0%}; {c / per:.0f} us a reading)"
                                      for c in cpus)


async def e2e_run(bench: Bench, run_id: str, *, workers: int) -> Drain:
    """MQTT backlog -> ingest -> Kafka -> worker(s) -> store. With ``workers`` 0, ingest and
    worker share one process, as ``sems run --runtime kafka`` runs them; otherwise this
    process is the ingest service alone (``sems ingest``) and each worker is a ``sems worker``
    process of its own, started, joined and recovered before the clock starts, as workers
    run in production (their start-up is reported beside)."""
    await delete_all_topics(bench.bootstrap)
    client_id = f"bench-{run_id}"
    app_id = f"bench-{run_id}"
    cfg = settings(bench.workdir / run_id, runtime="kafka", kafka_bootstrap=bench.bootstrap,
                   kafka_partitions=PARTITIONS, kafka_app_id=app_id,
                   idle_timeout_s=IDLE_TIMEOUT_S, mqtt_url=bench.mosquitto.url,
                   mqtt_client_id=client_id, mqtt_share_group=f"g-{run_id}")
    expected = bench.backlog.count
    # Connect once so the MQTT session exists, then queue the backlog in it.
    first = await provision(compose.kafka(cfg), bench.fleet)
    try:
        assert first.mqtt is not None
        await asyncio.wait_for(first.mqtt.connected.wait(), 30)
    finally:
        await first.stop()
    db = cfg.database_path
    procs: list[Worker] = []
    try:
        spawned = time.perf_counter()
        procs = [Worker(bench.bootstrap, cfg.data_dir, app_id,
                        bench.workdir / run_id / f"worker-{i}.log", partitions=PARTITIONS).start()
                 for i in range(workers)]
        await wait_workers_ready(procs)
        ready_s = time.perf_counter() - spawned
        ready_note = f"workers started, joined and recovered in {ready_s:.1f} s"
        worker_cpu_before = [process_cpu_s(w.process.pid) for w in procs if w.process]
        await publish_backlog(bench.broker.host, bench.broker.port, bench.backlog,
                              client_id=f"pub-{uuid.uuid4().hex[:8]}")
        broker_cpu = bench.broker_cpu()
        broker_cpu.start()
        freeze_startup_heap()  # as `sems ingest` does after its start-up
        started = time.perf_counter()
        cpu_started = (time.thread_time(), time.process_time())
        runtime = compose.kafka(cfg)
        await runtime.open()
        await runtime.reload_registry()
        await runtime.start(ingest=True, worker=workers == 0)
        try:
            finished, _ = await wait_stored(db, expected, started=started, workers=procs,
                                            logs=bench.workdir / run_id)
            wall_s = finished - started
            notes = [("this process (ingest and worker): " if workers == 0
                      else "this process (ingest): ")
                     + cpu_use(cpu_started, wall_s=wall_s, readings=expected)]
            if procs:
                notes += [_process_cpu_note(procs, wall_s, readings=expected,
                                            before=worker_cpu_before),
                          ready_note]
            notes.append(broker_cpu.note(wall_s))
        finally:
            await runtime.stop()
    finally:
        for w in procs:
            w.stop()
        await forget_session(bench.broker, client_id)
    lost, duplicated, checks = compare(db, expected, bench.reference)
    return Drain(e2e_name(workers), expected, scalar(db, READINGS_SQL), wall_s, lost=lost,
                 duplicated=duplicated, notes=(*notes, *checks))


async def load_topic(bench: Bench) -> None:
    """Fresh topics holding the backlog as the ingest writes it."""
    await delete_all_topics(bench.bootstrap)
    await topics.ensure_topics(bench.bootstrap, topics.topic_specs(partitions=PARTITIONS))
    await produce(bench.bootstrap, ingested(bench.fleet, list(bench.backlog.messages)))


async def workers_run(bench: Bench, run_id: str, *, n: int) -> Drain:
    """``n`` ``sems worker`` processes draining the readings already on the topic."""
    await load_topic(bench)
    data = bench.workdir / run_id / "data"
    db = data / "sems.db"
    await register_in(db, bench.fleet)
    expected = bench.backlog.count
    broker_cpu = bench.broker_cpu()
    broker_cpu.start()
    started = time.perf_counter()
    workers = [Worker(bench.bootstrap, data, f"bench-{run_id}",
                      bench.workdir / run_id / f"worker-{i}.log", partitions=PARTITIONS).start()
               for i in range(n)]
    try:
        finished, first_stored = await wait_stored(db, expected, started=started,
                                                   workers=workers, logs=bench.workdir / run_id)
        wall_s = finished - started
        cpu = _process_cpu_note(workers, wall_s, readings=expected)
        broker = broker_cpu.note(wall_s)
    finally:
        for w in workers:
            w.stop()
    lost, duplicated, notes = compare(db, expected, bench.reference)
    startup_s = (first_stored or finished) - started
    steady = expected / (finished - first_stored) if first_stored and finished > first_stored \
        else 0.0
    return Drain(workers_name(n), expected, scalar(db, READINGS_SQL), wall_s, lost=lost,
                 duplicated=duplicated,
                 notes=(f"first reading stored {startup_s:.2f} s after the start "
                        f"(process start, group join, assignment); {steady:,.0f} readings/s "
                        "from then on",
                        cpu,
                        broker, *notes))


async def kcat_run(bench: Bench) -> Drain:
    """kcat reading the whole topic to /dev/null: what the broker serves one consumer."""
    await load_topic(bench)
    binary = shutil.which("kcat")
    if binary is None:
        raise RuntimeError("kcat is missing: run infra/local/install-services.sh")
    expected = bench.backlog.count
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        binary, "-C", "-b", bench.bootstrap, "-t", topics.READINGS, "-o", "beginning",
        "-c", str(expected), "-q", "-f", "%k %s\n",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), drain_timeout_s(expected))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DrainTimeout("kcat ran past its deadline") from None
    elapsed_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"kcat exited {proc.returncode}: {err.decode()}")
    return Drain(KCAT, expected, expected, elapsed_s, lost=0, duplicated=None)


# -- the run --------------------------------------------------------------------------------

def kafka_version() -> str:
    libs = sorted(Path(__file__).resolve().parents[1].glob(".cache/kafka/libs/kafka_2.13-*.jar"))
    return libs[0].stem.removeprefix("kafka_2.13-") if libs else "unknown"


def plan(workers: tuple[int, ...]) -> dict[str, Callable[[Bench, str], Awaitable[Drain]]]:
    """Every consumer of a run, in report order, and how to measure it."""
    kinds: dict[str, Callable[[Bench, str], Awaitable[Drain]]] = {LOCAL: local_run}
    for n in (0, *workers):
        kinds[e2e_name(n)] = functools.partial(e2e_run, workers=n)
    kinds[KCAT] = lambda bench, _run_id: kcat_run(bench)
    for n in workers:
        kinds[workers_name(n)] = functools.partial(workers_run, n=n)
    return kinds


async def run(opts: Options) -> Results:
    fleet = build_fleet(facilities=opts.facilities, meters_per_facility=opts.meters_per_facility,
                        seed=opts.seed)
    backlog = await build_backlog(fleet, readings=opts.readings)
    measure = plan(opts.workers)
    kinds = list(measure)
    with tempfile.TemporaryDirectory(prefix="sems-bench-kafka-") as tmp:
        root = Path(tmp)
        mosquitto = Mosquitto(root / "mosquitto",
                              max_inflight_messages=BROKER_INFLIGHT).start()
        kafka = Kafka(root / "kafka").start()
        try:
            machine = {**machine_facts(), "kafka": kafka_version(),
                       "faust-streaming": version("faust-streaming"),
                       "aiokafka": version("aiokafka")}
            results = Results(readings=backlog.count, repeat=opts.repeat, machine=machine,
                              fleet=f"{opts.facilities} facilities x "
                                    f"{opts.meters_per_facility} meters, seed {opts.seed}, "
                                    f"{PARTITIONS} partitions")
            bench = Bench(mosquitto, kafka, fleet, backlog, root, Reference())
            # The reference rollups come from a local run, so the local runtime goes first.
            for rep in range(opts.repeat):
                shift = rep % len(kinds)
                order = kinds[shift:] + kinds[:shift] if rep else kinds
                for kind in order:
                    run_id = f"{rep + 1}-{kinds.index(kind)}"
                    drain = await measure[kind](bench, run_id)
                    results.drains.append(drain)
                    print(f"run {rep + 1}/{opts.repeat} {kind}: "
                          f"{drain.readings_per_s:,.0f} readings/s", file=sys.stderr)
        finally:
            kafka.stop()
            mosquitto.stop()
    position = {k: i for i, k in enumerate(kinds)}
    results.drains.sort(key=lambda d: position[d.consumer])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results = asyncio.run(run(opts))
    best = max((e2e_name(n) for n in (0, *opts.workers)),
               key=lambda k: results.summary(k).median_per_s)
    print_report(results, sems=best, baselines=(LOCAL,))
    for n in (0, *opts.workers):
        name = e2e_name(n)
        print(f"{name} / {LOCAL} (medians): {results.ratio(name, LOCAL):.2f}")
    for n in opts.workers:
        name = workers_name(n)
        print(f"{name} / {KCAT} (medians): {results.ratio(name, KCAT):.2f}; "
              f"per worker {results.summary(name).median_per_s / n:,.0f} readings/s")
    if opts.json_path is not None:
        write_json(results, opts.json_path)
    return 0 if results.clean() else 1


if __name__ == "__main__":
    sys.exit(main())
