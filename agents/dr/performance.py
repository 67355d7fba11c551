"""Event performance: achieved reduction = baseline - metered load, interval by interval.

Metered load is the facility's interval-mean kW from the rollups (main meters only). Rollups
finer than the baseline (15-min against an hourly baseline) are averaged into it, but only when
every sub-interval is there: a gap is missing energy, not zero load. Missing intervals are left
out of the average and reported through ``coverage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from agents.dr.baseline_result import BaselineMethod, BaselineResult
from agents.dr.series import BaselineInputError, LoadInput, infer_interval_s, to_series, values_at


class InsufficientMeterDataError(ValueError):
    """No complete metered interval inside the event, or metering coarser than the baseline."""


@dataclass(frozen=True, slots=True)
class IntervalPerformance:
    interval_start: datetime
    baseline_kw: float
    metered_kw: float | None
    achieved_reduction_kw: float | None


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    event_id: str | None
    baseline_method: BaselineMethod
    interval_s: int
    intervals: tuple[IntervalPerformance, ...]
    average_achieved_reduction_kw: float  # over the metered intervals
    min_achieved_reduction_kw: float
    energy_reduction_kwh: float  # over the metered intervals
    coverage: float  # metered intervals / event intervals
    target_reduction_kw: float | None
    percent_of_target: float | None
    intervals_meeting_target: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "baseline_method": self.baseline_method,
            "interval_s": self.interval_s,
            "intervals": [
                {
                    "interval_start": i.interval_start.isoformat(),
                    "baseline_kw": i.baseline_kw,
                    "metered_kw": i.metered_kw,
                    "achieved_reduction_kw": i.achieved_reduction_kw,
                }
                for i in self.intervals
            ],
            "average_achieved_reduction_kw": self.average_achieved_reduction_kw,
            "min_achieved_reduction_kw": self.min_achieved_reduction_kw,
            "energy_reduction_kwh": self.energy_reduction_kwh,
            "coverage": self.coverage,
            "target_reduction_kw": self.target_reduction_kw,
            "percent_of_target": self.percent_of_target,
            "intervals_meeting_target": self.intervals_meeting_target,
        }


def _metered_kw(metered: LoadInput, starts: tuple[datetime, ...], interval_s: int) -> list[
    float | None
]:
    series = to_series(metered)
    try:
        step_s = interval_s if len(series) < 2 else infer_interval_s(series)
    except BaselineInputError as exc:
        raise InsufficientMeterDataError(str(exc)) from exc
    if step_s > interval_s or interval_s % step_s:
        raise InsufficientMeterDataError(
            f"metered intervals of {step_s} s cannot be folded into {interval_s} s baseline ones"
        )
    parts = interval_s // step_s
    out: list[float | None] = []
    for start in starts:
        sub = [start + timedelta(seconds=k * step_s) for k in range(parts)]
        values = values_at(series, sub)
        out.append(None if values is None else float(values.mean()))
    return out


def achieved_reduction(
    baseline: BaselineResult,
    metered: LoadInput,
    *,
    target_reduction_kw: float | None = None,
    event_id: str | None = None,
) -> PerformanceReport:
    """Per-interval and average achieved reduction against ``baseline``, and the % of target."""
    metered_kw = _metered_kw(metered, baseline.interval_starts, baseline.interval_s)
    intervals = tuple(
        IntervalPerformance(
            interval_start=start,
            baseline_kw=base,
            metered_kw=kw,
            achieved_reduction_kw=None if kw is None else base - kw,
        )
        for start, base, kw in zip(baseline.interval_starts, baseline.baseline_kw, metered_kw,
                                   strict=True)
    )
    achieved = np.array(
        [i.achieved_reduction_kw for i in intervals if i.achieved_reduction_kw is not None]
    )
    if achieved.size == 0:
        raise InsufficientMeterDataError("no complete metered interval inside the event")
    average = float(achieved.mean())
    percent = None
    meeting = None
    if target_reduction_kw is not None:
        percent = average / target_reduction_kw * 100.0 if target_reduction_kw > 0 else None
        meeting = int(np.sum(achieved >= target_reduction_kw - 1e-9))
    return PerformanceReport(
        event_id=event_id,
        baseline_method=baseline.method,
        interval_s=baseline.interval_s,
        intervals=intervals,
        average_achieved_reduction_kw=average,
        min_achieved_reduction_kw=float(achieved.min()),
        energy_reduction_kwh=float(achieved.sum()) * baseline.interval_s / 3600.0,
        coverage=achieved.size / len(intervals),
        target_reduction_kw=target_reduction_kw,
        percent_of_target=percent,
        intervals_meeting_target=meeting,
    )
