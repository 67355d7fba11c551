"""The time-series port: readings, rollups, window checkpoints and dead letters, committed
as one batch. Adapters: SQLite (embedded), InfluxDB (production)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from schemas.deadletter import DeadLetter
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.rollups import Checkpoint


@dataclass(slots=True)
class CommitBatch:
    """Everything one pipeline step produced; stored atomically so that a restart sees either
    all of it or none of it."""

    readings: list[SensorReading] = field(default_factory=list)
    rollups: list[Rollup] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.readings or self.rollups or self.dead_letters or self.checkpoints)


class TimeSeriesStore(Protocol):
    async def commit(self, batch: CommitBatch) -> None: ...

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool: ...

    async def latest_readings(self, facility_id: str) -> list[SensorReading]: ...

    async def rollups(
        self,
        *,
        scope: Scope,
        scope_id: str,
        window: WindowName,
        start: datetime,
        end: datetime,
        limit: int,
    ) -> list[Rollup]: ...

    async def checkpoints(self) -> list[Checkpoint]: ...

    async def carries(
        self, facility_id: str, before: datetime
    ) -> dict[str, tuple[datetime, float]]: ...

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]: ...

    async def minute_rollups(
        self, facility_id: str, start: datetime, end: datetime
    ) -> list[Rollup]: ...

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]: ...

    async def prune(self, *, readings_before: datetime, minute_rollups_before: datetime,
                    rollups_before: datetime) -> int: ...
