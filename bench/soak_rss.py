"""The soak's memory measure (``bench/soak.py``): RSS per SEMS process life.

The soak restarts SEMS in the middle (in the embedded profile that restart is the store
restart), so an RSS taken at the start and one taken at the end belong to two processes and
their difference means nothing. Each life is measured on its own instead: its RSS once it has
served the load for a warm-up (imports, first queries, pools and caches filling are not a
leak), against its last RSS before it was stopped, with the least-squares slope of its samples
in between as the trend. The growth target holds for every life that was measured; the last
life, which also serves the wait for the final DR states, is the longest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Sample = tuple[float, float]
"""(seconds into the load phase, RSS in MB); negative before the load started."""


@dataclass(frozen=True, slots=True)
class LifeRss:
    pid: int
    from_s: float
    """The life's first sample (seconds into the load; negative: before the load)."""
    to_s: float
    """Its last sample, taken just before SIGTERM."""
    warm_s: float | None
    warm_mb: float | None
    """RSS at the first sample at least the warm-up after the load reached this life."""
    end_mb: float
    peak_mb: float
    growth_mb: float | None
    """``end_mb - warm_mb``; None when the life ended before its warm-up did."""
    slope_mb_per_min: float | None
    """Least-squares trend of the samples from the warm one on (3 samples at least)."""


def life_rss(pid: int, samples: Sequence[Sample], *, warmup_s: float) -> LifeRss:
    """One life's measure. The load reaches a life at ``max(its first sample, 0)``."""
    if not samples:
        raise ValueError(f"no RSS sample of pid {pid}")
    ordered = sorted(samples)
    warm_from_s = max(ordered[0][0], 0.0) + warmup_s
    after = [s for s in ordered if s[0] >= warm_from_s]
    measured = len(after) >= 2
    end_s, end_mb = ordered[-1]
    return LifeRss(
        pid=pid, from_s=ordered[0][0], to_s=end_s,
        warm_s=after[0][0] if measured else None,
        warm_mb=after[0][1] if measured else None,
        end_mb=end_mb, peak_mb=max(mb for _, mb in ordered),
        growth_mb=end_mb - after[0][1] if measured else None,
        slope_mb_per_min=slope_per_min(after) if len(after) >= 3 else None)


def slope_per_min(samples: Sequence[Sample]) -> float | None:
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_mb = sum(mb for _, mb in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (mb - mean_mb) for t, mb in samples)
    return cov / var * 60


def worst_growth_mb(lives: Sequence[LifeRss]) -> float | None:
    """The largest growth of the measured lives; None when no life was measured."""
    growths = [life.growth_mb for life in lives if life.growth_mb is not None]
    return max(growths) if growths else None
