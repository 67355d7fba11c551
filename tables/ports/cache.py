"""The cache port: the API's short-lived answers (``/current``). Adapters: in-process, Redis."""

from __future__ import annotations

from typing import Protocol


class CacheUnavailable(RuntimeError):
    """The cache cannot be reached; callers go to the store instead."""


class Cache(Protocol):
    """A shared cache of serialized values with a time to live. Never serves a value older
    than the ``ttl_s`` it was set with."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None: ...

    async def ping(self) -> None: ...
