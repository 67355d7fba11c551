"""What a profile's store adapter is: every store port behind one object that opens and closes
(SQLite embedded; InfluxDB + PostgreSQL in production). Only the composition root holds a
``Store``; agents and the API depend on the ports of their area."""

from __future__ import annotations

from typing import Protocol

from tables.ports.access import AccessStore
from tables.ports.dr import DrStore
from tables.ports.forecasts import ForecastStore
from tables.ports.identity import IdentityStore
from tables.ports.metadata import MetadataStore
from tables.ports.timeseries import TimeSeriesStore


class StoreUnavailable(RuntimeError):
    """The backing store cannot be reached; callers answer 503 or retry."""


class Store(TimeSeriesStore, MetadataStore, AccessStore, ForecastStore, DrStore,
            IdentityStore, Protocol):
    """What a runtime opens: time series, metadata and people behind one object (SQLite embedded;
    InfluxDB + PostgreSQL in production)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...
