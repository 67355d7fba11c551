"""The adapters each contract suite runs against, on the session's servers
(``tests/servers.py``) with a database and buckets of the test's own: SQLite, PostgreSQL
alone, and the production store (InfluxDB + PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import pytest

from connectors.postgres import PostgresStore
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from streams.stores import build_store
from tables.ports.access import AccessStore
from tables.ports.dr import DrStore
from tables.ports.forecasts import ForecastStore
from tables.ports.identity import IdentityStore
from tables.ports.metadata import MetadataStore
from tables.ports.store import Store
from tests.integration.helpers import production_settings

Adapter = Literal["sqlite", "postgresql", "influxdb+postgresql"]
STORES: list[Adapter] = ["sqlite", "influxdb+postgresql"]
"""The adapters of the whole store (``Store``, time series included): one per profile."""
RELATIONAL: list[Adapter] = ["sqlite", "postgresql", "influxdb+postgresql"]
"""The adapters of metadata, access, forecasts, DR and people: PostgreSQL has them on its own
too."""


class Opens(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


class RelationalStore(MetadataStore, AccessStore, ForecastStore, DrStore, IdentityStore, Opens,
                      Protocol):
    """What the metadata, access, forecast, DR and identity suites use (each upserts the facilities
    its rows belong to): every adapter in ``RELATIONAL``."""


S = TypeVar("S", bound=Opens)


@asynccontextmanager
async def _opened(s: S) -> AsyncIterator[S]:
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _production(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return build_store(production_settings(tmp_path, request.getfixturevalue("influxdb"),
                                           request.getfixturevalue("pg_database")), Metrics())


def opened_store(adapter: Adapter, request: pytest.FixtureRequest,
                 tmp_path: Path) -> AbstractAsyncContextManager[Store]:
    if adapter == "sqlite":
        return _opened(SqliteStore(tmp_path / "sems.db", metrics=Metrics()))
    if adapter == "influxdb+postgresql":
        return _opened(_production(request, tmp_path))
    raise ValueError(f"{adapter} is not a whole store (no time series)")


def opened(adapter: Adapter, request: pytest.FixtureRequest,
           tmp_path: Path) -> AbstractAsyncContextManager[RelationalStore]:
    if adapter == "postgresql":
        return _opened(PostgresStore(request.getfixturevalue("pg_database"), metrics=Metrics()))
    return opened_store(adapter, request, tmp_path)
