"""The production store: InfluxDB for time series, PostgreSQL for metadata and events.

One object with the same ports as the embedded SQLite store (``tables.ports.store.Store``), so
the pipeline and the API do not change with the profile. The time-series area is the join of
the two servers (``ProductionTimeSeries``); every other area is the PostgreSQL store's adapter
of it.

SQLite commits a batch in one transaction; two servers cannot. ``commit`` writes the
readings and rollups to InfluxDB first, then the dead letters and checkpoints to PostgreSQL.
Every write is an idempotent upsert (a point of the same series and time replaces the old one;
dead letters are unique per source and payload; checkpoints are keyed by facility), and the
pipeline acknowledges its input only after ``commit`` returns, so a failure anywhere in
between replays the batch and converges on the same rows.
"""

from __future__ import annotations

from datetime import datetime

from connectors.composed import ComposedStore
from connectors.influx import InfluxTimeSeries
from connectors.postgres import PostgresStore
from connectors.postgres.pipeline import PostgresPipelineState
from schemas.deadletter import DeadLetter
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.timeseries import CommitBatch
from tables.rollups import Checkpoint


class ProductionTimeSeries:
    """``TimeSeriesStore``: readings and rollups in InfluxDB, dead letters and checkpoints in
    PostgreSQL."""

    def __init__(self, influx: InfluxTimeSeries, pipeline: PostgresPipelineState) -> None:
        self._influx = influx
        self._pipeline = pipeline

    async def commit(self, batch: CommitBatch) -> None:
        if batch.readings or batch.rollups:
            await self._influx.write(batch.readings, batch.rollups)
        if batch.dead_letters or batch.checkpoints:
            await self._pipeline.record(batch.dead_letters, batch.checkpoints)

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool:
        return await self._influx.has_reading(meter_id, timestamp)

    async def latest_readings(self, facility_id: str) -> list[SensorReading]:
        return await self._influx.latest_readings(facility_id)

    async def rollups(self, *, scope: Scope, scope_id: str, window: WindowName,
                      start: datetime, end: datetime, limit: int) -> list[Rollup]:
        return await self._influx.rollups(scope=scope, scope_id=scope_id, window=window,
                                          start=start, end=end, limit=limit)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self._pipeline.checkpoints()

    async def carries(self, facility_id: str,
                      before: datetime) -> dict[str, tuple[datetime, float]]:
        return await self._influx.carries(facility_id, before)

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]:
        return await self._influx.readings_since(facility_id, since)

    async def minute_rollups(self, facility_id: str, start: datetime,
                             end: datetime) -> list[Rollup]:
        return await self._influx.minute_rollups(facility_id, start, end)

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]:
        return await self._pipeline.dead_letters(limit=limit)

    async def prune(self, *, readings_before: datetime, minute_rollups_before: datetime,
                    rollups_before: datetime) -> int:
        """InfluxDB expires points by its buckets' retention; dead letters go with the raw
        readings' horizon."""
        return await self._pipeline.prune_dead_letters(readings_before)


class ProductionStore(ComposedStore):
    def __init__(self, influx: InfluxTimeSeries, postgres: PostgresStore) -> None:
        self.influx = influx
        self.postgres = postgres
        super().__init__(timeseries=ProductionTimeSeries(influx, postgres.pipeline),
                         metadata=postgres.metadata, access=postgres.access,
                         forecasts=postgres.forecasts, dr=postgres.dr,
                         identity=postgres.identity)

    async def open(self) -> None:
        await self.postgres.open()
        try:
            await self.influx.open()
        except BaseException:
            await self.postgres.close()  # its pool and reconnect task go with the failed open
            raise

    async def close(self) -> None:
        await self.influx.close()
        await self.postgres.close()

    async def ping(self) -> None:
        await self.postgres.ping()
        await self.influx.ping()
