"""``/current`` through a real Redis: one store query per facility per TTL, never a value
older than the TTL, hit/miss counted, and when Redis is down the API keeps answering from the
store (uncached) and goes back to the cache once Redis returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import ApiDeps, create_app
from connectors.cache import RedisCache
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.metadata import Facility, Meter, MeterType
from schemas.reading import SensorReading
from tables.ports.timeseries import CommitBatch
from tests.auth_helpers import authenticator, bearer
from tests.integration.helpers import eventually
from tests.servers import Redis

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
TTL_S = 0.5
NOW = datetime.now(UTC).replace(microsecond=0)
FACILITY = Facility(facility_id="plant-1", name="Plant 1", contract_demand_kw=300)
METER = Meter(meter_id="p1-main", facility_id="plant-1", meter_type=MeterType.MAIN,
              sample_interval_s=15.0)


def reading(at: datetime, kw: float) -> SensorReading:
    return SensorReading(facility_id="plant-1", meter_id="p1-main", meter_type=MeterType.MAIN,
                         timestamp=at, active_power_kw=kw, reactive_power_kvar=1.0,
                         voltage_v=400.0, frequency_hz=50.0)


class CountingStore(SqliteStore):
    """The real store, counting the queries ``/current`` makes of it; with a ``gate``, each
    query waits for it (a slow store)."""

    latest_calls = 0
    metadata_calls = 0
    gate: asyncio.Event | None = None

    async def latest_readings(self, facility_id: str) -> list[SensorReading]:
        self.latest_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().latest_readings(facility_id)

    async def facility(self, facility_id: str) -> Facility | None:
        self.metadata_calls += 1
        return await super().facility(facility_id)

    async def facilities(self) -> list[Facility]:
        self.metadata_calls += 1
        return await super().facilities()

    async def meters(self) -> list[Meter]:
        self.metadata_calls += 1
        return await super().meters()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([FACILITY])
    await s.upsert_meters([METER])
    await s.commit(CommitBatch(readings=[reading(NOW - timedelta(seconds=30), 100.0)]))
    yield s
    await s.close()


@pytest.fixture
async def client(store: CountingStore, own_redis: Redis) -> AsyncIterator[Client]:
    cache = RedisCache(own_redis.url, retry_after_s=0.2)
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                             cache=cache, current_ttl_s=TTL_S, auth=authenticator(store)))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        yield c
    await cache.close()


async def total_kw(client: Client) -> Any:
    resp = await client.get("/api/facilities/plant-1/current")
    body = await resp.json()
    assert resp.status == 200, body
    return body["total_power_kw"]


def cache_count(store: SqliteStore, result: str) -> float:
    return store.metrics.registry.get_sample_value(
        "sems_cache_requests_total", {"cache": "current", "result": result}) or 0.0


async def test_current_is_served_from_redis_within_its_ttl_and_fresh_after(
    client: Client, store: CountingStore,
) -> None:
    assert await total_kw(client) == 100.0
    assert await total_kw(client) == 100.0
    assert store.latest_calls == 1
    assert (cache_count(store, "miss"), cache_count(store, "hit")) == (1, 1)

    # A new reading is stored: within the TTL the cached answer may still show, but once the
    # TTL has passed the API must show the new value, and never the old one after that.
    await store.commit(CommitBatch(readings=[reading(NOW, 150.0)]))
    stored_at = time.monotonic()
    while (kw := await total_kw(client)) == 100.0:
        assert time.monotonic() - stored_at <= TTL_S + 0.1, "served older than its TTL"
        await asyncio.sleep(0.02)
    assert kw == 150.0
    assert store.latest_calls == 2


async def test_with_redis_down_current_answers_uncached_then_uses_it_again(
    client: Client, store: CountingStore, own_redis: Redis,
) -> None:
    assert await total_kw(client) == 100.0
    own_redis.stop()
    calls = store.latest_calls
    for _ in range(3):
        assert await total_kw(client) == 100.0
    assert store.latest_calls == calls + 3  # every request went to the store
    assert cache_count(store, "error") >= 1

    own_redis.start()  # empty: Redis here keeps nothing across restarts

    async def cached_again() -> bool:
        before = store.latest_calls
        await total_kw(client)
        await total_kw(client)
        return store.latest_calls - before <= 1

    await eventually(cached_again, timeout_s=10, what="/current served from Redis again")


async def test_concurrent_misses_share_one_store_query(
    client: Client, store: CountingStore,
) -> None:
    """A dashboard wall asking for the same facility at once while the store is slow: one
    query, every request answered from it."""
    store.gate = asyncio.Event()
    requests = [asyncio.create_task(total_kw(client)) for _ in range(20)]

    async def all_missed() -> bool:
        return cache_count(store, "miss") == 20

    await eventually(all_missed, timeout_s=10, what="20 requests missing the cache")
    assert store.latest_calls == 1
    store.gate.set()
    assert await asyncio.gather(*requests) == [100.0] * 20
    assert store.latest_calls == 1


async def test_a_cached_current_reads_nothing_from_the_store(
    client: Client, store: CountingStore,
) -> None:
    """The hot path of a polled dashboard: once cached, ``/current`` is answered from Redis
    alone, the facility included, with the ages worked out at each request."""
    first = await (await client.get("/api/facilities/plant-1/current")).json()
    latest, metadata = store.latest_calls, store.metadata_calls
    second = await (await client.get("/api/facilities/plant-1/current")).json()
    assert (store.latest_calls, store.metadata_calls) == (latest, metadata)
    assert cache_count(store, "hit") == 1
    assert second["total_power_kw"] == first["total_power_kw"] == 100.0
    assert second["contract_demand_kw"] == 300.0
    assert second["data_age_s"] >= first["data_age_s"] >= 30.0  # the reading is 30 s old


async def test_an_unknown_facility_is_a_404_and_is_not_cached(
    client: Client, store: CountingStore,
) -> None:
    for _ in range(2):
        resp = await client.get("/api/facilities/plant-9/current")
        assert resp.status == 404
        assert (await resp.json())["error_code"] == "facility_not_found"
    assert cache_count(store, "hit") == 0
    # Registered now: found at once (a miss asks the store for the facility).
    await store.upsert_facilities([Facility(facility_id="plant-9", name="Nine",
                                            contract_demand_kw=10)])
    resp = await client.get("/api/facilities/plant-9/current")
    assert resp.status == 200
    assert (await resp.json())["total_power_kw"] is None  # no meters yet
