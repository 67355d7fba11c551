"""Ports the agents and the API depend on; adapters live in ``connectors/``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from schemas.access import ApiKeyRecord, Utility
from schemas.deadletter import DeadLetter
from schemas.dr import BmsCommandRecord, DrEvent, DrStatus
from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility, Meter
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.rollups import Checkpoint

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]


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


class AccessStore(Protocol):
    """Utilities and their API keys (``schemas/access.py``)."""

    async def upsert_utility(self, utility: Utility) -> None: ...

    async def utilities(self) -> list[Utility]: ...

    async def utility(self, utility_id: str) -> Utility | None: ...

    async def add_api_key(self, record: ApiKeyRecord) -> None: ...

    async def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        """Whether a key that was active is now revoked."""
        ...


@dataclass(frozen=True, slots=True)
class ForecastRow:
    """One stored forecast point and the run it comes from."""

    point: LoadForecastPoint
    model: str
    made_at: datetime
    weather_used: bool


class ForecastStore(Protocol):
    """``load_forecasts``: one row per facility and time, the newest run's."""

    async def upsert_forecast(self, forecast: LoadForecast) -> None: ...

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        """Rows with ``start <= timestamp < end``, in time order."""
        ...


OVERLAPPING_STATUSES: tuple[DrStatus, ...] = ("scheduled", "active", "completed")
"""The events a new one of the same facility must not overlap. A failed event is not among
them: it sheds nothing any more, and the utility may ask again."""


@dataclass(frozen=True, slots=True)
class DrCreation:
    """What ``DrStore.create_dr_events`` did: either every new event was stored, or (when
    ``conflicts`` is not empty) nothing was.

    ``events``: the events asked for, in order, as stored (a replayed one as it was first
    stored, with its current status); ``replayed``: the ids that existed already;
    ``conflicts``: the stored events that the new ones overlap, newest start first."""

    events: tuple[DrEvent, ...] = ()
    replayed: frozenset[str] = frozenset()
    conflicts: tuple[DrEvent, ...] = ()

    @property
    def inserted(self) -> tuple[DrEvent, ...]:
        return () if self.conflicts else tuple(e for e in self.events
                                                if e.id not in self.replayed)


DrEventOrder = Literal["start_desc", "start_asc", "end_desc"]


class DrEventOverlaps(RuntimeError):
    """``insert_dr_event`` of an event that overlaps one of the same facility."""

    def __init__(self, conflicts: tuple[DrEvent, ...]) -> None:
        super().__init__("overlaps " + ", ".join(e.id for e in conflicts))
        self.conflicts = conflicts


class DrStore(Protocol):
    """``dr_events`` and the ``bms_commands`` audit trail (``schemas/dr.py``).

    The store enforces the two intake rules atomically (not the callers, by a read and then a
    write, which concurrent requests interleave): an event id is created once, and a facility
    has at most one event in ``OVERLAPPING_STATUSES`` over any instant (``[event_start,
    event_end)`` windows; back to back do not overlap). An event that fails later leaves the
    rule's scope."""

    async def create_dr_events(self, events: Sequence[DrEvent]) -> DrCreation:
        """In one transaction: the events whose id exists are replays (nothing changes for
        them); the others are all stored, unless one overlaps an event of its facility in
        ``OVERLAPPING_STATUSES`` (or another new one of the same facility): then none is, and
        ``conflicts`` says with what. A new event that is ``failed`` already is not checked."""
        ...

    async def insert_dr_event(self, event: DrEvent) -> bool:
        """``create_dr_events([event])``: ``False`` (and nothing changed) when its id exists
        already; raises ``DrEventOverlaps`` when it overlaps."""
        ...

    async def update_dr_event(self, event: DrEvent) -> None:
        """Writes everything but ``failures``, which only ``add_dr_event_failure`` appends
        (the command agent and the DR agent write the same event concurrently)."""
        ...

    async def add_dr_event_failure(self, id: str, reason: str) -> None: ...

    async def dr_event(self, id: str) -> DrEvent | None: ...

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000,
                        order: DrEventOrder = "start_desc",
                        ended_before: datetime | None = None) -> list[DrEvent]:
        """``order``: newest start first (what people list), oldest start first (what is
        due soonest: a full page never hides an active event behind future ones), or latest
        end first (with ``ended_before``: the events most recently over)."""
        ...

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        """Inserts the audit entry; ``False`` when the command id is there already."""
        ...

    async def update_bms_command(self, record: BmsCommandRecord) -> None: ...

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None: ...

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        """In the order they were requested."""
        ...


class CacheUnavailable(RuntimeError):
    """The cache cannot be reached; callers go to the store instead."""


class Cache(Protocol):
    """A shared cache of serialized values with a time to live. Never serves a value older
    than the ``ttl_s`` it was set with."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None: ...

    async def ping(self) -> None: ...


class Store(TimeSeriesStore, MetadataStore, AccessStore, ForecastStore, DrStore, Protocol):
    """What a runtime opens: time series and metadata behind one object (SQLite embedded;
    InfluxDB + PostgreSQL in production)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Location:
    """Where a facility is, in decimal degrees (WGS 84); what weather providers are asked for."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        # The comparisons are False for NaN, so NaN is refused too.
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"latitude must be within [-90, 90], got {self.latitude}")
        if not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"longitude must be within [-180, 180], got {self.longitude}")


class WeatherUnavailable(RuntimeError):
    """No weather for this request: the provider is disabled, unreachable, refused it, or has
    nothing for the range. Forecasts then go on without weather features and say so."""


class WeatherProvider(Protocol):
    """Hourly outdoor temperature at a location, for the past (to fit a model) and the next
    hours (to forecast). ``connectors/weather/``: an offline climatology (the embedded default)
    and WeatherAPI.com."""

    @property
    def source(self) -> str:
        """What the values are (``climatology``, ``weatherapi``, ``none``), for the forecast to
        say what it used."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def hourly_temperature_c(
        self, location: Location, *, start: datetime, end: datetime
    ) -> pd.Series[float]:
        """Temperature (°C) for every hour ``h`` with ``floor_hour(start) <= h < end``: a
        float64 series on an hourly, tz-UTC ``DatetimeIndex``. An hour the provider has no
        value for is NaN (gaps of up to 3 h are interpolated); nothing at all, or a failed
        request, raises ``WeatherUnavailable``. ``start`` and ``end`` must be timezone-aware
        and ``start < end`` (``ValueError`` otherwise)."""
        ...
