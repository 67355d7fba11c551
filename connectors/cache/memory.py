"""An in-process TTL cache: the embedded default's ``Cache``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryCache:
    """Bounded (least recently set goes first), expiring on read."""

    def __init__(self, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self.clock() >= expires_at:
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self.clock() + ttl_s, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def ping(self) -> None:
        return None
