"""Redis as the API's shared cache (redis-py's asyncio client).

Redis expires keys itself (``SET ... PX``), so a value is never served after its TTL. Every
failure (refused, timed out, reset) is a ``CacheUnavailable``: the caller serves from the store
instead. After a failure the cache stays bypassed for ``retry_after_s`` so that a dead Redis
costs one failed attempt per interval, not a timeout per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tables.ports.cache import CacheUnavailable


class RedisCache:
    def __init__(self, url: str, *, prefix: str = "sems:", timeout_s: float = 0.25,
                 retry_after_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=0, retry_on_timeout=False)
        self._down_until = 0.0

    def _check(self) -> None:
        if self.clock() < self._down_until:
            raise CacheUnavailable("redis failed recently; bypassing it for now")

    def _failed(self, op: str, exc: Exception) -> CacheUnavailable:
        self._down_until = self.clock() + self.retry_after_s
        return CacheUnavailable(f"redis {op} failed: {type(exc).__name__}")

    async def get(self, key: str) -> bytes | None:
        self._check()
        try:
            value = await self._client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            raise self._failed("GET", exc) from exc
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        self._check()
        try:
            await self._client.set(self.prefix + key, value, px=max(1, round(ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            raise self._failed("SET", exc) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._failed("PING", exc) from exc
        self._down_until = 0.0

    async def close(self) -> None:
        await self._client.aclose()
