"""The cache port's contract, for the in-process cache and Redis: values come back until their
TTL runs out and never after; keys do not bleed into each other."""

from __future__ import annotations

import asyncio
import time

import pytest

from tables.ports.cache import Cache

pytestmark = pytest.mark.integration


async def test_a_value_is_served_until_its_ttl_and_never_after(cache: Cache) -> None:
    await cache.ping()
    ttl_s = 0.4
    await cache.set("current:plant-a", b'[{"kw": 1}]', ttl_s=ttl_s)
    set_at = time.monotonic()
    assert await cache.get("current:plant-a") == b'[{"kw": 1}]'
    assert await cache.get("current:plant-b") is None
    # Poll: every hit must come within the TTL, and the value must go.
    while (value := await cache.get("current:plant-a")) is not None:
        assert value == b'[{"kw": 1}]'
        assert time.monotonic() - set_at <= ttl_s + 0.05, "served after its TTL"
        await asyncio.sleep(0.01)
        assert time.monotonic() - set_at < 5, "never expired"
    assert time.monotonic() - set_at >= ttl_s - 0.05, "expired too early"


async def test_a_new_value_replaces_the_old_one_with_its_own_ttl(cache: Cache) -> None:
    await cache.set("k", b"old", ttl_s=0.2)
    await cache.set("k", b"new", ttl_s=30)
    started = time.monotonic()
    while time.monotonic() - started < 0.4:  # past the first TTL
        assert await cache.get("k") == b"new"
        await asyncio.sleep(0.02)
