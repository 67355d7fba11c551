"""The load forecast over an event: the forecast baseline and the upper band the planner uses.

The forecast agent publishes ``LoadForecast`` records (``schemas/forecast.py``); points are
interval starts in UTC every ``step_s``. The event's intervals may be coarser (an hourly
baseline from 15-min points): each is then the mean of its points, all of which must be there.
The mean of the points' upper bounds is at least the upper bound of their mean, so folding
keeps the band conservative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from agents.dr.baseline_result import BaselineResult
from agents.dr.series import BaselineInputError, InsufficientHistoryError, event_intervals
from schemas.forecast import LoadForecast, LoadForecastPoint

Band = Literal["80", "95"]


@dataclass(frozen=True, slots=True)
class EventForecast:
    interval_s: int
    interval_starts: tuple[datetime, ...]
    predicted_kw: tuple[float, ...]
    upper_kw: tuple[float, ...]
    band: Band

    def as_baseline(self) -> BaselineResult:
        """The forecast-based baseline (method ``forecast``): ``predicted_load_kw``."""
        return BaselineResult(method="forecast", interval_s=self.interval_s,
                              interval_starts=self.interval_starts,
                              baseline_kw=self.predicted_kw, unadjusted_kw=self.predicted_kw)


def _upper(point: LoadForecastPoint, band: Band) -> float:
    return point.confidence_upper if band == "80" else point.upper_95


def event_forecast(
    forecast: LoadForecast,
    *,
    event_start: datetime,
    event_end: datetime,
    band: Band = "95",
    interval_s: int | None = None,
) -> EventForecast:
    """Predicted kW and the 80 % or 95 % upper band for each event interval."""
    step_s = forecast.step_s if interval_s is None else interval_s
    if step_s % forecast.step_s:
        raise BaselineInputError(
            f"{forecast.step_s} s forecast points cannot be folded into {step_s} s intervals"
        )
    by_time = {p.timestamp: p for p in forecast.points}
    starts = event_intervals(event_start, event_end, interval_s=step_s)
    predicted: list[float] = []
    upper: list[float] = []
    for start in starts:
        subs = [start + timedelta(seconds=k * forecast.step_s)
                for k in range(step_s // forecast.step_s)]
        points = [by_time.get(ts) for ts in subs]
        present = [p for p in points if p is not None]
        if len(present) != len(points):
            raise InsufficientHistoryError(
                f"forecast made at {forecast.made_at.isoformat()} misses part of the interval "
                f"from {start.isoformat()}"
            )
        predicted.append(float(np.mean([p.predicted_load_kw for p in present])))
        upper.append(float(np.mean([_upper(p, band) for p in present])))
    return EventForecast(interval_s=step_s, interval_starts=tuple(starts),
                         predicted_kw=tuple(predicted), upper_kw=tuple(upper), band=band)
