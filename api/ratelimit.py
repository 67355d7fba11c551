"""Token-bucket rate limits per caller (``Principal.rate_key``) and per client address, in
process.

Each API process limits on its own; behind N replicas a caller gets up to N times the rate,
which is the point of scaling out, and keeps a limit free of a shared round trip per request."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate_per_s: float
    burst: int
    max_callers: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    """caller -> (tokens left, monotonic time of the last update), least recently seen first."""

    def take(self, caller: str, now_s: float) -> float:
        """Spend one request of ``caller``'s budget: 0 when allowed, else the seconds until
        one is available again (the ``Retry-After``)."""
        tokens = self._refill(caller, now_s)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now_s)
            wait_s = 0.0
        else:
            self._buckets[caller] = (tokens, now_s)
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._forget_idlest()
        return wait_s

    def charge(self, caller: str, now_s: float, cost: float) -> None:
        """Spend ``cost`` more of ``caller``'s budget after the fact (down to empty): a
        refused credential costs more than a request, so guessing is slow while a busy but
        honest address keeps its whole rate."""
        tokens = self._refill(caller, now_s)
        self._buckets[caller] = (max(0.0, tokens - cost), now_s)
        self._forget_idlest()

    def _refill(self, caller: str, now_s: float) -> float:
        tokens, last_s = self._buckets.pop(caller, (float(self.burst), now_s))
        return min(float(self.burst), tokens + max(0.0, now_s - last_s) * self.rate_per_s)

    def _forget_idlest(self) -> None:
        if len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)  # forgets the idlest caller: a full bucket anyway
