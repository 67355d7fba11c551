"""Adapters under one contract: each suite here runs unchanged against every adapter of its
port, on real servers (InfluxDB, PostgreSQL, Redis) started by tests/servers.py:

- time series (``test_store_contract``): SQLite, InfluxDB + PostgreSQL (``store``);
- metadata, access, forecasts, DR, people: SQLite, PostgreSQL, InfluxDB + PostgreSQL
  (``relational``);
- cache: in-process, Redis (``cache``);
- signed-in sessions: SQLite, Redis (``sessions``).

Two ports keep their suites beside their adapters' servers: the BMS (SOAP client against the
simulator's SOAP server, and the simulator's in-process adapter: the ``bms`` fixture of
``tests/integration/test_bms_soap.py``) and the weather (climatology and WeatherAPI.com against
a server speaking its protocol: ``tests/integration/test_weather_api.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.cache import MemoryCache, RedisCache
from connectors.cache.redis_sessions import RedisSessions
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from tables.ports.cache import Cache
from tables.ports.identity import SessionStore
from tables.ports.store import Store
from tests.contract.adapters import (
    RELATIONAL,
    STORES,
    Adapter,
    RelationalStore,
    opened,
    opened_store,
)
from tests.servers import Redis

pytestmark = pytest.mark.integration


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The whole store port (time series and metadata) of each profile."""
    adapter: Adapter = request.param
    async with opened_store(adapter, request, tmp_path) as s:
        yield s


@pytest.fixture(params=RELATIONAL)
async def relational(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[RelationalStore]:
    """Metadata, access, forecasts and DR of every adapter that has them."""
    adapter: Adapter = request.param
    async with opened(adapter, request, tmp_path) as s:
        yield s


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        yield MemoryCache()
        return
    server: Redis = request.getfixturevalue("redis_server")
    c = RedisCache(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield c
    await c.close()


@pytest.fixture(params=["sqlite", "redis"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    """The session store of each profile: the embedded store's file, Redis."""
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "sessions.db", metrics=Metrics())
        await store.open()
        yield store.sessions
        await store.close()
        return
    server: Redis = request.getfixturevalue("redis_server")
    redis = RedisSessions(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield redis
    await redis.close()
