"""Window arithmetic and sample-and-hold integration: pure functions on epoch milliseconds.

A meter sample at ``ts`` holds its power from ``ts`` until the next sample of the same meter,
but never longer than the meter's nominal interval: a longer silence is a gap (missing energy),
not zero power. Times are integer milliseconds so that window edges are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from schemas.rollup import WINDOW_SECONDS, WindowName

MS_PER_HOUR = 3_600_000
MINUTE_MS = 60_000
WINDOW_MS: dict[WindowName, int] = {w: s * 1000 for w, s in WINDOW_SECONDS.items()}
COMPOSED_WINDOWS: tuple[WindowName, ...] = (WindowName.MIN_15, WindowName.HOUR_1)
"""Windows built from closed 1-min windows rather than from samples."""


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the tumbling window of ``size_ms`` that contains ``ts_ms`` (epoch-aligned)."""
    return ts_ms - ts_ms % size_ms


@dataclass(frozen=True, slots=True)
class Segment:
    """``kw`` held over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    kw: float

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


def hold_segments(
    samples: Sequence[tuple[int, float]],
    *,
    carry: tuple[int, float] | None,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
) -> list[Segment]:
    """Segments of ``[start_ms, end_ms)`` covered by one meter's samples.

    ``samples`` are the meter's ``(ts_ms, kw)`` inside the window, sorted by time; ``carry`` is
    its last sample before the window, whose hold may spill into it.
    """
    points: list[tuple[int, float]] = []
    if carry is not None and carry[0] < start_ms:
        points.append(carry)
    points.extend(samples)
    segments: list[Segment] = []
    for i, (ts, kw) in enumerate(points):
        hold_end = ts + interval_ms
        if i + 1 < len(points):
            hold_end = min(hold_end, points[i + 1][0])
        a = max(ts, start_ms)
        b = min(hold_end, end_ms)
        if b > a:
            segments.append(Segment(a, b, kw))
    return segments


@dataclass(frozen=True, slots=True)
class Extremes:
    max_kw: float
    min_kw: float


def total_extremes(per_meter: Sequence[Sequence[Segment]]) -> Extremes | None:
    """Max and min of the sum of several meters' held power, over the instants at which every
    meter is covered; ``None`` when there is no such instant."""
    if not per_meter or any(not segs for segs in per_meter):
        return None
    edges = sorted({e for segs in per_meter for s in segs for e in (s.start_ms, s.end_ms)})
    cursors = [0] * len(per_meter)
    best_max: float | None = None
    best_min: float | None = None
    for a, b in pairwise(edges):
        total = 0.0
        for m, segs in enumerate(per_meter):
            i = cursors[m]
            while i < len(segs) and segs[i].end_ms <= a:
                i += 1
            cursors[m] = i
            if i == len(segs) or segs[i].start_ms > a or segs[i].end_ms < b:
                break
            total += segs[i].kw
        else:
            best_max = total if best_max is None else max(best_max, total)
            best_min = total if best_min is None else min(best_min, total)
    if best_max is None or best_min is None:
        return None
    return Extremes(best_max, best_min)


@dataclass(slots=True)
class Accumulator:
    """Running totals of one scope over one window, folded from segments or closed windows."""

    energy_kwh: float = 0.0
    covered_ms: int = 0
    sample_count: int = 0
    max_kw: float | None = None
    min_kw: float | None = None

    def add_extremes(self, max_kw: float | None, min_kw: float | None) -> None:
        if max_kw is not None:
            self.max_kw = max_kw if self.max_kw is None else max(self.max_kw, max_kw)
        if min_kw is not None:
            self.min_kw = min_kw if self.min_kw is None else min(self.min_kw, min_kw)

    def add_segments(self, segments: Sequence[Segment], sample_count: int) -> None:
        for s in segments:
            self.energy_kwh += s.kw * s.duration_ms / MS_PER_HOUR
            self.covered_ms += s.duration_ms
            self.add_extremes(s.kw, s.kw)
        self.sample_count += sample_count

    def merge(self, other: Accumulator) -> None:
        self.energy_kwh += other.energy_kwh
        self.covered_ms += other.covered_ms
        self.sample_count += other.sample_count
        self.add_extremes(other.max_kw, other.min_kw)

    @property
    def avg_kw(self) -> float | None:
        if self.covered_ms == 0:
            return None
        return self.energy_kwh * MS_PER_HOUR / self.covered_ms
