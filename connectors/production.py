"""The production store: InfluxDB for time series, PostgreSQL for metadata and events.

One object with the same ports as the embedded SQLite store (``TimeSeriesStore`` and
``MetadataStore``), so the pipeline and the API do not change with the profile.

SQLite commits a batch in one transaction; two servers cannot. ``commit`` writes the
readings and rollups to InfluxDB first, then the dead letters and checkpoints to PostgreSQL.
Every write is an idempotent upsert (a point of the same series and time replaces the old one;
dead letters are unique per source and payload; checkpoints are keyed by facility), and the
pipeline acknowledges its input only after ``commit`` returns, so a failure anywhere in
between replays the batch and converges on the same rows.
"""

from __future__ import annotations

from datetime import datetime

from connectors.influx import InfluxTimeSeries
from connectors.postgres import PostgresStore
from connectors.postgres.dr import DelegatedDr
from schemas.access import ApiKeyRecord, Utility
from schemas.deadletter import DeadLetter
from schemas.forecast import LoadForecast
from schemas.metadata import Facility, Meter
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.forecasts import ForecastRow
from tables.ports.timeseries import CommitBatch
from tables.rollups import Checkpoint


class ProductionStore(DelegatedDr):
    def __init__(self, influx: InfluxTimeSeries, postgres: PostgresStore) -> None:
        self.influx = influx
        self.postgres = postgres

    async def open(self) -> None:
        await self.postgres.open()
        await self.influx.open()

    async def close(self) -> None:
        await self.influx.close()
        await self.postgres.close()

    # -- time series -------------------------------------------------------------------------

    async def commit(self, batch: CommitBatch) -> None:
        if batch.readings or batch.rollups:
            await self.influx.write(batch.readings, batch.rollups)
        if batch.dead_letters or batch.checkpoints:
            await self.postgres.record(batch.dead_letters, batch.checkpoints)

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool:
        return await self.influx.has_reading(meter_id, timestamp)

    async def latest_readings(self, facility_id: str) -> list[SensorReading]:
        return await self.influx.latest_readings(facility_id)

    async def rollups(self, *, scope: Scope, scope_id: str, window: WindowName,
                      start: datetime, end: datetime, limit: int) -> list[Rollup]:
        return await self.influx.rollups(scope=scope, scope_id=scope_id, window=window,
                                         start=start, end=end, limit=limit)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.postgres.checkpoints()

    async def carries(self, facility_id: str,
                      before: datetime) -> dict[str, tuple[datetime, float]]:
        return await self.influx.carries(facility_id, before)

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]:
        return await self.influx.readings_since(facility_id, since)

    async def minute_rollups(self, facility_id: str, start: datetime,
                             end: datetime) -> list[Rollup]:
        return await self.influx.minute_rollups(facility_id, start, end)

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]:
        return await self.postgres.dead_letters(limit=limit)

    async def prune(self, *, readings_before: datetime, minute_rollups_before: datetime,
                    rollups_before: datetime) -> int:
        """InfluxDB expires points by its buckets' retention; dead letters go with the raw
        readings' horizon."""
        return await self.postgres.prune_dead_letters(readings_before)

    # -- metadata ------------------------------------------------------------------------------

    async def facilities(self) -> list[Facility]:
        return await self.postgres.facilities()

    async def meters(self) -> list[Meter]:
        return await self.postgres.meters()

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        await self.postgres.upsert_facilities(facilities)

    async def upsert_meters(self, meters: list[Meter]) -> None:
        await self.postgres.upsert_meters(meters)

    async def ping(self) -> None:
        await self.postgres.ping()
        await self.influx.ping()

    # -- access: PostgreSQL ----------------------------------------------------------------

    async def upsert_utility(self, utility: Utility) -> None:
        await self.postgres.upsert_utility(utility)

    async def utilities(self) -> list[Utility]:
        return await self.postgres.utilities()

    async def utility(self, utility_id: str) -> Utility | None:
        return await self.postgres.utility(utility_id)

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self.postgres.add_api_key(record)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self.postgres.api_key(key_id)

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        return await self.postgres.revoke_api_key(key_id, at=at)

    # -- forecasts: PostgreSQL -------------------------------------------------------------

    async def upsert_forecast(self, forecast: LoadForecast) -> None:
        await self.postgres.upsert_forecast(forecast)

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        return await self.postgres.forecast_rows(facility_id, start=start, end=end)
