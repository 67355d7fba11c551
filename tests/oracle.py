"""An independent recomputation of rollups from the readings a simulator published.

Deliberately a different algorithm from ``tables/``: each meter's samples become one global
list of hold intervals, which are intersected with every window of every size directly
(no per-window state, no carries, no folding of minutes into hours).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.metadata import Registry

SIZES_S = {"1m": 60, "15m": 900, "1h": 3600}


@dataclass(frozen=True)
class Expected:
    avg_power_kw: float
    max_power_kw: float | None
    min_power_kw: float | None
    total_energy_kwh: float
    sample_count: int
    coverage: float


def _epoch_s(ts: str) -> float:
    return datetime.fromisoformat(ts).astimezone(UTC).timestamp()


def expected_rollups(
    readings: Iterable[dict[str, object]], registry: Registry
) -> dict[tuple[str, str, str, float], Expected]:
    """Keyed by (scope, meter or facility id, window, window start epoch s)."""
    samples: dict[str, dict[float, float]] = defaultdict(dict)
    for r in readings:
        meter = str(r["meter_id"])
        ts = _epoch_s(str(r["timestamp"]))
        samples[meter].setdefault(ts, float(r["active_power_kw"]))  # type: ignore[arg-type]

    intervals: dict[str, list[tuple[float, float, float]]] = {}
    for meter, by_ts in samples.items():
        step = registry.meters[meter].sample_interval_s
        points = sorted(by_ts.items())
        spans = []
        for i, (ts, kw) in enumerate(points):
            end = ts + step
            if i + 1 < len(points):
                end = min(end, points[i + 1][0])
            spans.append((ts, end, kw))
        intervals[meter] = spans

    out: dict[tuple[str, str, str, float], Expected] = {}
    for window, size in SIZES_S.items():
        per_meter: dict[tuple[str, float], tuple[float, float, int, list[float]]] = {}
        for meter, spans in intervals.items():
            starts = {s - s % size for a, b, _ in spans for s in (a, b - 1e-9)}
            for w0 in sorted(starts):
                w1 = w0 + size
                energy = covered = 0.0
                kws = []
                for a, b, kw in spans:
                    overlap = min(b, w1) - max(a, w0)
                    if overlap > 0:
                        energy += kw * overlap / 3600
                        covered += overlap
                        kws.append(kw)
                if covered <= 0:
                    continue
                count = sum(1 for ts in samples[meter] if w0 <= ts < w1)
                per_meter[(meter, w0)] = (energy, covered, count, kws)
                out[("meter", meter, window, w0)] = Expected(
                    energy * 3600 / covered, max(kws), min(kws), energy, count, covered / size
                )
        for facility_id in registry.facilities:
            mains = registry.main_meters[facility_id]
            starts = {w0 for (m, w0) in per_meter if m in mains}
            for w0 in sorted(starts):
                parts = [per_meter.get((m, w0)) for m in mains]
                present = [p for p in parts if p is not None]
                extremes = _total_extremes([intervals.get(m, []) for m in mains], w0, w0 + size)
                out[("facility", facility_id, window, w0)] = Expected(
                    sum(p[0] * 3600 / p[1] for p in present),
                    extremes[0] if extremes else None,
                    extremes[1] if extremes else None,
                    sum(p[0] for p in present),
                    sum(p[2] for p in present),
                    sum(p[1] for p in present) / (len(mains) * size),
                )
    return out


def _total_extremes(per_meter: list[list[tuple[float, float, float]]], w0: float,
                    w1: float) -> tuple[float, float] | None:
    """Evaluate the sum at every instant where some meter's value changes."""
    edges = sorted({t for spans in per_meter for a, b, _ in spans for t in (a, b)
                    if w0 <= t < w1} | {w0})
    totals = []
    for t in edges:
        total = 0.0
        for spans in per_meter:
            value = next((kw for a, b, kw in spans if a <= t < b), None)
            if value is None:
                break
            total += value
        else:
            totals.append(total)
    return (max(totals), min(totals)) if totals else None

