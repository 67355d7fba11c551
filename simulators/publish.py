"""Drives a simulated fleet: turns its readings into MQTT-style messages on a clock, with
optional faults injected on purpose (duplicates, out-of-order, late and malformed messages),
and logs exactly what it published so tests can recompute the expected result independently.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Literal

import orjson

from schemas.reading import SensorReading
from schemas.validation import TOPIC_PREFIX
from simulators.fleet import Fleet

STEP_S = 15
YIELD_EVERY_S = 0.005
"""A backfill hands the event loop back after about this long: it runs in the process that
serves the API (``sems run``), and a sink with room never makes it wait."""
Kind = Literal["reading", "duplicate", "delayed", "late", "malformed"]
Publish = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Faults:
    """Share of readings to repeat or hold back one step, and counts of late and malformed
    messages to slip in."""

    duplicate_rate: float = 0.0
    delay_rate: float = 0.0
    late_count: int = 0
    malformed_count: int = 0


def topic_of(r: SensorReading) -> str:
    return f"{TOPIC_PREFIX}/{r.facility_id}/{r.meter_id}"


def payload_of(r: SensorReading) -> bytes:
    return orjson.dumps({
        "facility_id": r.facility_id,
        "meter_id": r.meter_id,
        "meter_type": r.meter_type.value,
        "timestamp": r.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "active_power_kw": round(r.active_power_kw, 3),
        "reactive_power_kvar": round(r.reactive_power_kvar, 3),
        "voltage_v": round(r.voltage_v, 2),
        "frequency_hz": round(r.frequency_hz, 3),
    })


def malformed_payloads(r: SensorReading) -> list[tuple[str, bytes]]:
    """One of each kind of bad input a real meter gateway produces."""
    good = orjson.loads(payload_of(r))
    topic = topic_of(r)
    missing = {k: v for k, v in good.items() if k != "voltage_v"}
    return [
        (topic, b"{not json"),
        (topic, orjson.dumps(missing)),
        (topic, orjson.dumps({**good, "active_power_kw": "12.5"})),
        (topic, orjson.dumps({**good, "frequency_hz": 0.5})),
        (topic, orjson.dumps({**good, "extra": 1})),
        (topic, orjson.dumps({**good, "timestamp": good["timestamp"].rstrip("Z")})),
        (f"{TOPIC_PREFIX}/{r.facility_id}/no-such-meter",
         orjson.dumps({**good, "meter_id": "no-such-meter"})),
        (topic, b"\xff\xfe binary"),
    ]


def align(ts: datetime, step_s: int = STEP_S) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step_s, tz=UTC)


class Simulation:
    def __init__(self, fleet: Fleet, publish: Publish, *, faults: Faults = Faults(),
                 seed: int = 0, log: IO[bytes] | None = None) -> None:
        self.fleet = fleet
        self.publish = publish
        self.faults = faults
        self.rng = random.Random(seed)
        self.log = log
        self.published = 0
        self._held: list[SensorReading] = []

    async def _send(self, topic: str, payload: bytes, kind: Kind) -> None:
        await self.publish(topic, payload)
        self.published += 1
        if self.log is not None:
            self.log.write(orjson.dumps({"topic": topic, "payload": payload.decode("utf-8",
                           "backslashreplace"), "kind": kind}) + b"\n")

    async def step(self, ts: datetime) -> None:
        """Publish every meter's reading at ``ts`` (plus any faults due)."""
        held, self._held = self._held, []
        f = self.faults
        for r in self.fleet.readings_at(ts):
            if f.delay_rate and self.rng.random() < f.delay_rate:
                self._held.append(r)
                continue
            await self._send(topic_of(r), payload_of(r), "reading")
            if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
                await self._send(topic_of(r), payload_of(r), "duplicate")
        for r in held:
            await self._send(topic_of(r), payload_of(r), "delayed")

    async def flush(self) -> None:
        for r in self._held:
            await self._send(topic_of(r), payload_of(r), "delayed")
        self._held = []

    async def inject(self, ts: datetime) -> None:
        """Late and malformed messages, stamped relative to ``ts``."""
        f = self.faults
        sample = self.fleet.readings_at(ts)
        for i in range(f.late_count):
            # Off the 15 s grid, so it is a new reading, and ten minutes old: past any window.
            r = sample[i % len(sample)]
            late = r.model_copy(update={"timestamp": ts - timedelta(minutes=10, seconds=-7 - i)})
            await self._send(topic_of(late), payload_of(late), "late")
        bad = malformed_payloads(sample[0])
        for i in range(f.malformed_count):
            topic, payload = bad[i % len(bad)]
            await self._send(topic, payload, "malformed")

    async def run_range(self, start: datetime, end: datetime, *,
                        inject_at: datetime | None = None) -> datetime:
        """Publish ``[start, end)`` as fast as the sink takes it (backfill, tests); returns the
        next step's timestamp."""
        ts = align(start)
        since = time.perf_counter()
        while ts < end:
            await self.step(ts)
            if inject_at is not None and ts == align(inject_at):
                await self.inject(ts)
            ts += timedelta(seconds=STEP_S)
            if time.perf_counter() - since >= YIELD_EVERY_S:
                await asyncio.sleep(0)
                since = time.perf_counter()
        await self.flush()
        return ts

    async def run_live(self, clock: Callable[[], datetime], *,
                       next_step: datetime | None = None) -> None:
        """Publish each 15 s step when the wall clock reaches it, forever; from ``next_step``
        if given (catching up at once on steps already due), so nothing is skipped after a
        backfill."""
        ts = next_step or align(clock()) + timedelta(seconds=STEP_S)
        while True:
            wait_s = (ts - clock()).total_seconds()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            await self.step(ts)
            ts += timedelta(seconds=STEP_S)


def open_log(path: Path | None) -> IO[bytes] | None:
    return path.open("ab") if path else None
