"""Helpers for the kafka runtime's fault tests: a recorded replay, its local-runtime baseline,
the ingest's output produced straight to Kafka, and ``sems worker`` subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from connectors import kafka as topics
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.raw import RawMessage
from schemas.reading import SensorReading
from schemas.validation import ValidationSettings, validate_reading
from simulators.fleet import Fleet
from simulators.publish import Faults, Simulation
from tables.ports.metadata import MetadataStore
from tests.integration.helpers import eventually, settings, start_runtime
from tests.servers import spawn, stop_process

Recorded = list[tuple[str, bytes]]

PARTITIONS = 4
# No window may close on the wall clock: a replay interrupted by a kill or a broker restart
# must close exactly the windows an uninterrupted one closes, by event time alone.
IDLE_TIMEOUT_S = 3600.0
SEMS = [sys.executable, "-m", "streams.cli"]
REPO = Path(__file__).resolve().parents[2]


async def record(fleet: Fleet, *, start: datetime, minutes: int) -> Recorded:
    """``minutes`` of the fleet with duplicates, out-of-order, late and bad messages."""
    out: Recorded = []

    async def keep(topic: str, payload: bytes) -> None:
        out.append((topic, payload))

    sim = Simulation(fleet, keep, faults=Faults(duplicate_rate=0.03, delay_rate=0.03,
                                                late_count=3, malformed_count=8), seed=5)
    await sim.run_range(start, start + timedelta(minutes=minutes),
                        inject_at=start + timedelta(minutes=minutes // 2))
    return out


def rollups(db: Path) -> list[tuple[Any, ...]]:
    """Every rollup row, floats rounded to 9 decimals (sums may differ in the last bit). The
    rounding is Python's, as for rows built from ``Rollup`` records: SQLite's ``round`` can
    give a neighbouring float of the same decimal value."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT scope, scope_id, window, window_start_ms, sample_count, total_energy_kwh, "
            "avg_power_kw, max_power_kw, min_power_kw, coverage FROM rollups ORDER BY 1, 2, 3, 4"
        ).fetchall()
    return [rounded(row) for row in rows]


def rounded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def scalar(db: Path, sql: str) -> int:
    """One number from the store's SQLite file, read with a connection of our own."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def dead_letter_reasons(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY 1"))


@dataclass(frozen=True)
class Outcome:
    """What a run leaves in its store."""

    rollups: list[tuple[Any, ...]]
    readings: int
    dead_letters: dict[str, int]

    @classmethod
    def of(cls, db: Path) -> Outcome:
        return cls(rollups(db), scalar(db, "SELECT COUNT(*) FROM readings"),
                   dead_letter_reasons(db))


async def local_baseline(data_dir: Path, fleet: Fleet, recorded: Recorded,
                         *, expected_readings: int) -> Outcome:
    """The uninterrupted reference: the local runtime on the same recorded input."""
    cfg = settings(data_dir, idle_timeout_s=IDLE_TIMEOUT_S)
    local = await start_runtime(cfg, fleet)
    db = cfg.database_path
    try:
        for topic, payload in recorded:
            await local.raw.send(RawMessage(topic, payload, datetime.now(UTC)))

        async def stored() -> bool:
            return scalar(db, "SELECT COUNT(*) FROM readings") == expected_readings

        await eventually(stored, timeout_s=30, what="the local baseline's readings")
    finally:
        await local.stop()
    return Outcome.of(db)


async def register(store: MetadataStore, fleet: Fleet) -> None:
    await store.upsert_facilities(list(fleet.facilities))
    await store.upsert_meters(list(fleet.meters))


async def register_in(database_path: Path, fleet: Fleet) -> None:
    """Register the fleet in a store file before any worker opens it (``sems worker`` does
    not register facilities; ``sems facilities import`` would do the same)."""
    store = SqliteStore(database_path, metrics=Metrics())
    await store.open()
    try:
        await register(store, fleet)
    finally:
        await store.close()


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes


def ingested(fleet: Fleet, recorded: Recorded) -> list[Record]:
    """What the ingest service sends to Kafka for the recorded payloads: validated readings
    keyed by facility, dead letters keyed by their source topic."""
    out: list[Record] = []
    now = datetime.now(UTC)
    for topic, payload in recorded:
        result = validate_reading(payload, topic=topic, registry=fleet.registry, now=now,
                                  settings=ValidationSettings())
        if isinstance(result, SensorReading):
            out.append(Record(topics.READINGS, result.facility_id.encode(),
                              result.model_dump_json().encode()))
        else:
            out.append(Record(topics.DEAD_LETTERS, result.source.encode(),
                              result.model_dump_json().encode()))
    return out


async def produce(bootstrap: str, records: Sequence[Record], *, chunk: int = 0,
                  pause: Callable[[], Awaitable[None]] | None = None) -> None:
    """Send ``records`` with the ingest's producer settings (idempotent, acks=all), waiting
    for every acknowledgement. With ``chunk``, awaits ``pause()`` after each chunk, so a test
    can pace the replay and act while it is under way."""
    kafka = topics.producer(bootstrap)
    await kafka.start()
    try:
        size = chunk or len(records)
        for i in range(0, len(records), size):
            deliveries = [await kafka.send(r.topic, r.value, key=r.key)
                          for r in records[i:i + size]]
            await asyncio.gather(*deliveries)
            if pause is not None:
                await pause()
    finally:
        await kafka.stop()


@dataclass
class Worker:
    """``sems worker`` as an operator starts it: a process of its own, its log in a file."""

    bootstrap: str
    data_dir: Path
    app_id: str
    log_path: Path
    partitions: int = PARTITIONS
    env: dict[str, str] = field(default_factory=dict)
    """More settings (SEMS_*) for this worker, e.g. the production profile's servers."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        env.update({
            "SEMS_KAFKA_APP_ID": self.app_id,
            "SEMS_KAFKA_PARTITIONS": str(self.partitions),
            "SEMS_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
            "SEMS_DEMO_FLEET": "false",
            "SEMS_LOG_LEVEL": "INFO",
            **self.env,
        })
        with self.log_path.open("ab") as log:
            self.process = spawn(
                [*SEMS, "worker", "--kafka", self.bootstrap, "--data-dir", str(self.data_dir)],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown, no offset commit, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    def stop(self, *, timeout_s: float = 30) -> int | None:
        """Ctrl+C (SIGTERM, as ``sems worker`` handles it); kill -9 if it does not exit."""
        if self.process is None:
            return None
        stop_process(self.process, timeout_s=timeout_s)
        return self.process.returncode


async def settled(read: Callable[[], Any], expected: Any, *, timeout_s: float,
                  what: str) -> None:
    """Wait until ``read()`` equals ``expected``; on timeout, show the last value read."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = read()
        if last == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; "
                                 f"last read: {summary(last)}, expected: {summary(expected)}"
                                 f"{differences(last, expected)}")
        await asyncio.sleep(0.1)


def summary(value: Any) -> str:
    if isinstance(value, Outcome):
        return (f"{len(value.rollups)} rollups, {value.readings} readings, dead letters "
                f"{value.dead_letters}")
    if isinstance(value, list):
        return f"{len(value)} rows"
    return repr(value)


def differences(last: Any, expected: Any, *, limit: int = 5) -> str:
    """The first rollup rows that differ, to tell a missing window from a wrong one."""
    if not (isinstance(last, Outcome) and isinstance(expected, Outcome)):
        return ""
    got, want = set(last.rollups), set(expected.rollups)
    missing, unexpected = sorted(want - got)[:limit], sorted(got - want)[:limit]
    return f"\n  missing rows: {missing}\n  unexpected rows: {unexpected}"


async def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offsets of ``sensor-readings``, by partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topics.READINGS}


def kcat() -> str:
    found = shutil.which("kcat")
    if found is None:
        raise RuntimeError("kcat is not installed: run infra/local/install-services.sh")
    return found


async def run_kcat(*args: str, timeout_s: float = 30) -> str:
    """kcat (librdkafka), a Kafka client no one here wrote, as a data engineer runs it."""
    proc = await asyncio.create_subprocess_exec(
        kcat(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"kcat {' '.join(args)} exited {proc.returncode}: {err.decode()}")
    return out.decode()
