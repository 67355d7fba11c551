"""Ports the agents and the API depend on; adapters live in ``connectors/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from schemas.deadletter import DeadLetter
from schemas.metadata import Facility, Meter
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


class StoreUnavailable(RuntimeError):
    """The backing store cannot be reached; callers answer 503 or retry."""


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


class MetadataStore(Protocol):
    async def facilities(self) -> list[Facility]: ...

    async def meters(self) -> list[Meter]: ...

    async def upsert_facilities(self, facilities: list[Facility]) -> None: ...

    async def upsert_meters(self, meters: list[Meter]) -> None: ...

    async def ping(self) -> None: ...


class CacheUnavailable(RuntimeError):
    """The cache cannot be reached; callers go to the store instead."""


class Cache(Protocol):
    """A shared cache of serialized values with a time to live. Never serves a value older
    than the ``ttl_s`` it was set with."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None: ...

    async def ping(self) -> None: ...


class Store(TimeSeriesStore, MetadataStore, Protocol):
    """What a runtime opens: time series and metadata behind one object (SQLite embedded;
    InfluxDB + PostgreSQL in production)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...
