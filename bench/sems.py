"""SEMS as a consumer: the local runtime (MQTT -> validation -> rollups -> SQLite) draining the
backlog, then a check of its SQLite file for readings lost or counted twice."""

from __future__ import annotations

import asyncio
import cProfile
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.consumers import Drain, drain_timeout_s, forget_session
from connectors.mqtt import BrokerAddress
from simulators.fleet import Fleet
from streams.local import LocalRuntime
from streams.settings import Settings
from tests.integration.helpers import settings, start_runtime

POLL_S = 0.01
STALL_S = 15.0
ACCEPTED = "sems_readings_accepted_total"
RECEIVED = "sems_readings_received_total"
DUPLICATES_DROPPED = "sems_readings_duplicate_total"

STORED_SQL = "SELECT COUNT(*) FROM readings"
DISTINCT_SQL = "SELECT COUNT(*) FROM (SELECT DISTINCT meter_id, ts_ms FROM readings)"
DEAD_SQL = "SELECT COUNT(*) FROM dead_letters"
# Every reading before its facility's closed_until is in exactly one closed 1-min window.
ROLLUP_SAMPLES_SQL = (
    "SELECT COALESCE(SUM(sample_count), 0) FROM rollups WHERE scope = 'meter' AND window = '1m'"
)
CLOSED_READINGS_SQL = (
    "SELECT COUNT(*) FROM readings r JOIN window_checkpoints c USING (facility_id) "
    "WHERE c.closed_until_ms IS NOT NULL AND r.ts_ms < c.closed_until_ms"
)


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """What the SQLite file holds after a drain of ``expected`` readings."""

    expected: int
    stored: int
    distinct: int
    dead_letters: int
    rollup_samples: int
    closed_readings: int

    @property
    def lost(self) -> int:
        """Readings missing from the table, plus closed readings missing from the rollups."""
        return max(0, self.expected - self.distinct) + max(
            0, self.closed_readings - self.rollup_samples)

    @property
    def duplicated(self) -> int:
        """Rows beyond one per (meter, timestamp), plus samples counted twice in rollups."""
        return (self.stored - self.distinct) + max(0, self.distinct - self.expected) + max(
            0, self.rollup_samples - self.closed_readings)

    def notes(self) -> tuple[str, ...]:
        return (
            f"{self.stored} rows, {self.distinct} distinct (meter, ts), "
            f"{self.dead_letters} dead letters",
            f"1-min meter rollups hold {self.rollup_samples} samples; "
            f"{self.closed_readings} stored readings lie in closed windows",
        )


def check_store(path: Path, *, expected: int) -> StoreCheck:
    with sqlite3.connect(path) as conn:
        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        return StoreCheck(
            expected=expected,
            stored=one(STORED_SQL),
            distinct=one(DISTINCT_SQL),
            dead_letters=one(DEAD_SQL),
            rollup_samples=one(ROLLUP_SAMPLES_SQL),
            closed_readings=one(CLOSED_READINGS_SQL),
        )


def _sample(runtime: LocalRuntime, name: str, labels: dict[str, str] | None = None) -> int:
    return int(_value(runtime, name, labels))


def _value(runtime: LocalRuntime, name: str, labels: dict[str, str] | None = None) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def time_spent(runtime: LocalRuntime) -> str:
    """Where the pipeline's time went, from its own histograms."""
    sqlite = {"store": "sqlite"}
    writes = _sample(runtime, "sems_store_write_duration_seconds_count", sqlite)
    write_s = _value(runtime, "sems_store_write_duration_seconds_sum", sqlite)
    batches = _sample(runtime, "sems_rollup_batch_duration_seconds_count")
    batch_s = _value(runtime, "sems_rollup_batch_duration_seconds_sum")
    return (f"{writes} SQLite write transactions took {write_s:.2f} s (writer thread); "
            f"{batches} rollup batches took {batch_s:.2f} s including their commits")


async def wait_accepted(runtime: LocalRuntime, expected: int, *, timeout_s: float) -> float:
    """Poll the accepted counter until it reaches ``expected``, the deadline passes or it
    stalls; returns when it stopped (``perf_counter``)."""
    deadline = time.perf_counter() + timeout_s
    last, last_change = -1, time.perf_counter()
    while True:
        now = time.perf_counter()
        accepted = _sample(runtime, ACCEPTED)
        if accepted >= expected or now > deadline or now - last_change > STALL_S:
            return now
        if accepted != last:
            last, last_change = accepted, now
        await asyncio.sleep(POLL_S)


def cpu_use(started: tuple[float, float], *, wall_s: float, readings: int) -> str:
    """CPU of the event-loop thread (the caller's) and of the process's other threads, in all
    and per reading."""
    loop_s = time.thread_time() - started[0]
    other_s = time.process_time() - started[1] - loop_s
    per = max(readings, 1) / 1e6
    return (f"CPU over {wall_s:.2f} s: event-loop thread {loop_s:.2f} s "
            f"({loop_s / wall_s:.0%}), other threads {other_s:.2f} s ({other_s / wall_s:.0%}); "
            f"{(loop_s + other_s) / per:.0f} us a reading ({loop_s / per:.0f} on the loop)")


class SemsRuntime:
    """The local runtime with a fresh data directory, registry provisioned from the fleet."""

    name = "SEMS local runtime"

    def __init__(self, broker: BrokerAddress, *, client_id: str, share_group: str,
                 fleet: Fleet, workdir: Path, profiler: cProfile.Profile | None = None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.fleet = fleet
        self.profiler = profiler
        self.settings: Settings = settings(
            workdir, mqtt_url=f"mqtt://{broker.host}:{broker.port}",
            mqtt_client_id=client_id, mqtt_share_group=share_group,
        )

    async def subscribe(self) -> None:
        runtime = await start_runtime(self.settings, self.fleet)
        try:
            if runtime.mqtt is None:
                raise RuntimeError("the runtime has no MQTT source")
            await asyncio.wait_for(runtime.mqtt.connected.wait(), 30)
        finally:
            await runtime.stop()

    async def drain(self, expected: int) -> Drain:
        if self.profiler is not None:
            self.profiler.enable()
        started = time.perf_counter()
        cpu_started = (time.thread_time(), time.process_time())
        runtime = await start_runtime(self.settings, self.fleet)
        try:
            finished = await wait_accepted(runtime, expected,
                                           timeout_s=drain_timeout_s(expected))
        finally:
            if self.profiler is not None:
                self.profiler.disable()
            accepted = _sample(runtime, ACCEPTED)
            received = _sample(runtime, RECEIVED)
            dropped = _sample(runtime, DUPLICATES_DROPPED)
            spent = time_spent(runtime)
            cpu = cpu_use(cpu_started, wall_s=time.perf_counter() - started,
                          readings=accepted)
            await runtime.stop()
        check = check_store(self.settings.database_path, expected=expected)
        notes = (f"received {received}, accepted {accepted}, "
                 f"redeliveries dropped as duplicates {dropped}", *check.notes(), spent, cpu)
        return Drain(self.name, expected, accepted, finished - started, lost=check.lost,
                     duplicated=check.duplicated, notes=notes)

    async def forget(self) -> None:
        await forget_session(self.broker, self.client_id)
