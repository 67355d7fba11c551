"""The registry in memory: at most ``ttl_s`` old, one pair of store reads per refresh, a
failed refresh not kept."""

import asyncio

import pytest

from api.metadata_cache import MetadataCache
from schemas.metadata import Facility, Meter, MeterType
from tables.ports.store import StoreUnavailable

pytestmark = pytest.mark.unit


class Store:
    def __init__(self) -> None:
        self.facility_rows = [Facility(facility_id="a", name="A", contract_demand_kw=10)]
        self.meter_rows = [Meter(meter_id="a-main", facility_id="a", meter_type=MeterType.MAIN)]
        self.reads = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def facilities(self) -> list[Facility]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise StoreUnavailable("down")
        return list(self.facility_rows)

    async def meters(self) -> list[Meter]:
        return list(self.meter_rows)


class Clock:
    now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def test_refreshed_after_the_ttl() -> None:
    store, clock = Store(), Clock()
    cache = MetadataCache(store, ttl_s=5.0, clock=clock)  # type: ignore[arg-type]
    assert [i for i, _ in (await cache.registry()).listing] == ["a"]
    store.facility_rows.append(Facility(facility_id="b", name="B", contract_demand_kw=20))
    clock.now_s = 4.9  # within the TTL: the list is the one read at 0
    assert [i for i, _ in (await cache.registry()).listing] == ["a"]
    assert store.reads == 1
    clock.now_s = 5.0  # the TTL has passed: read again
    assert [i for i, _ in (await cache.registry()).listing] == ["a", "b"]
    assert store.reads == 2
    registry = await cache.registry()
    assert registry.listing[0][1]["meters"] == [
        {"meter_id": "a-main", "meter_type": "main", "sample_interval_s": 15.0}]


async def test_concurrent_refreshes_share_one_read_and_a_failure_is_not_kept() -> None:
    store = Store()
    cache = MetadataCache(store, ttl_s=5.0, clock=Clock())  # type: ignore[arg-type]
    store.gate, store.down = asyncio.Event(), True
    waiting = [asyncio.create_task(cache.registry()) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results) and store.reads == 1
    store.down = False
    assert [i for i, _ in (await cache.registry()).listing] == ["a"]  # tried again
    assert store.reads == 2
