"""A store as its port areas: each area is an adapter of its own (given to the constructor),
and the store forwards each call to the one that answers it. The profiles' stores
(``SqliteStore``, ``PostgresStore``, ``ProductionStore``) are built this way, so that callers
keep one object while each area's code sees only the connection object it was given.

The forwarding is written out, method by method, rather than generated: a subclass that
overrides one method (tests count or fail calls this way) sees it called, and mypy checks
each area adapter against its port where the store is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from connectors.composed_identity import IdentityArea
from schemas.access import ApiKeyRecord, Utility
from schemas.deadletter import DeadLetter
from schemas.dr import BmsCommandRecord, DrEvent, DrStatus
from schemas.forecast import LoadForecast
from schemas.metadata import Facility, Meter
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.access import AccessStore
from tables.ports.dr import DrCreation, DrEventOrder, DrStore
from tables.ports.forecasts import ForecastRow, ForecastStore
from tables.ports.identity import IdentityStore
from tables.ports.metadata import MetadataStore
from tables.ports.timeseries import CommitBatch, TimeSeriesStore
from tables.rollups import Checkpoint


class RelationalAreas(IdentityArea):
    """Metadata, access, forecasts, DR and people (``connectors.composed_identity``): the
    areas both profiles keep in a relational database (SQLite; PostgreSQL)."""

    def __init__(self, *, metadata: MetadataStore, access: AccessStore,
                 forecasts: ForecastStore, dr: DrStore, identity: IdentityStore) -> None:
        super().__init__(identity=identity)
        self.metadata = metadata
        self.access = access
        self.forecasts = forecasts
        self.dr = dr

    # -- metadata ------------------------------------------------------------------------

    async def facilities(self) -> list[Facility]:
        return await self.metadata.facilities()

    async def facility(self, facility_id: str) -> Facility | None:
        return await self.metadata.facility(facility_id)

    async def meters(self) -> list[Meter]:
        return await self.metadata.meters()

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        await self.metadata.upsert_facilities(facilities)

    async def upsert_meters(self, meters: list[Meter]) -> None:
        await self.metadata.upsert_meters(meters)

    async def ping(self) -> None:
        await self.metadata.ping()

    # -- access --------------------------------------------------------------------------

    async def upsert_utility(self, utility: Utility) -> None:
        await self.access.upsert_utility(utility)

    async def utilities(self) -> list[Utility]:
        return await self.access.utilities()

    async def utility(self, utility_id: str) -> Utility | None:
        return await self.access.utility(utility_id)

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        await self.access.add_api_key(record)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self.access.api_key(key_id)

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        return await self.access.revoke_api_key(key_id, at=at)

    # -- forecasts -----------------------------------------------------------------------

    async def upsert_forecast(self, forecast: LoadForecast) -> None:
        await self.forecasts.upsert_forecast(forecast)

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        return await self.forecasts.forecast_rows(facility_id, start=start, end=end)

    # -- demand response -----------------------------------------------------------------

    async def create_dr_events(self, events: Sequence[DrEvent]) -> DrCreation:
        return await self.dr.create_dr_events(events)

    async def insert_dr_event(self, event: DrEvent) -> bool:
        return await self.dr.insert_dr_event(event)

    async def update_dr_event(self, event: DrEvent) -> None:
        await self.dr.update_dr_event(event)

    async def add_dr_event_failure(self, id: str, reason: str) -> None:
        await self.dr.add_dr_event_failure(id, reason)

    async def dr_event(self, id: str) -> DrEvent | None:
        return await self.dr.dr_event(id)

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000,
                        order: DrEventOrder = "start_desc",
                        ended_before: datetime | None = None) -> list[DrEvent]:
        return await self.dr.dr_events(facility_id=facility_id, statuses=statuses,
                                       limit=limit, order=order, ended_before=ended_before)

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        return await self.dr.record_bms_command(record)

    async def update_bms_command(self, record: BmsCommandRecord) -> None:
        await self.dr.update_bms_command(record)

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None:
        return await self.dr.bms_command(command_id)

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        return await self.dr.bms_commands(dr_event_id)


class ComposedStore(RelationalAreas):
    """Every area of ``tables.ports.store.Store`` but its lifecycle, which the subclass adds
    (it knows what its connection objects are)."""

    def __init__(self, *, timeseries: TimeSeriesStore, metadata: MetadataStore,
                 access: AccessStore, forecasts: ForecastStore, dr: DrStore,
                 identity: IdentityStore) -> None:
        super().__init__(metadata=metadata, access=access, forecasts=forecasts, dr=dr,
                         identity=identity)
        self.timeseries = timeseries

    async def commit(self, batch: CommitBatch) -> None:
        await self.timeseries.commit(batch)

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool:
        return await self.timeseries.has_reading(meter_id, timestamp)

    async def latest_readings(self, facility_id: str) -> list[SensorReading]:
        return await self.timeseries.latest_readings(facility_id)

    async def rollups(self, *, scope: Scope, scope_id: str, window: WindowName,
                      start: datetime, end: datetime, limit: int) -> list[Rollup]:
        return await self.timeseries.rollups(scope=scope, scope_id=scope_id, window=window,
                                             start=start, end=end, limit=limit)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.timeseries.checkpoints()

    async def carries(self, facility_id: str,
                      before: datetime) -> dict[str, tuple[datetime, float]]:
        return await self.timeseries.carries(facility_id, before)

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]:
        return await self.timeseries.readings_since(facility_id, since)

    async def minute_rollups(self, facility_id: str, start: datetime,
                             end: datetime) -> list[Rollup]:
        return await self.timeseries.minute_rollups(facility_id, start, end)

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]:
        return await self.timeseries.dead_letters(limit=limit)

    async def prune(self, *, readings_before: datetime, minute_rollups_before: datetime,
                    rollups_before: datetime) -> int:
        return await self.timeseries.prune(readings_before=readings_before,
                                           minute_rollups_before=minute_rollups_before,
                                           rollups_before=rollups_before)
