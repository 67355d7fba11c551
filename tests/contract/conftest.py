"""Adapters under one contract: each test here runs unchanged against the embedded adapter and
the production one, on real servers (InfluxDB, PostgreSQL, Redis) started by tests/servers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.cache import MemoryCache, RedisCache
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from streams.stores import build_store
from tables.ports.cache import Cache
from tables.ports.store import Store
from tests.integration.helpers import production_settings
from tests.servers import InfluxDB, Redis

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "influxdb+postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The whole store port (time series and metadata) of each profile."""
    metrics = Metrics()
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "sems.db", metrics=metrics)
    else:
        influx: InfluxDB = request.getfixturevalue("influxdb")
        dsn: str = request.getfixturevalue("pg_database")
        s = build_store(production_settings(tmp_path, influx, dsn), metrics)
    await s.open()
    yield s
    await s.close()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    server: Redis = request.getfixturevalue("redis_server")
    c = RedisCache(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield c
    await c.close()
