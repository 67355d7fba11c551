"""Meter-before baseline: the facility's average load just before the event, held flat.

The "Meter Before / Meter After" baseline type of the NAESB wholesale DR M&V standards (used
for short events by fast-response programs such as ERCOT's ERS): what the facility drew in a
short window before the event is what it would have drawn during it. Right for events of
minutes to an hour, when load has no time to drift; for longer events the day-matching or
forecast baselines are better (docs/demand-response.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from agents.dr.baseline_result import BaselineResult, MeterBeforeParams
from agents.dr.series import (
    InsufficientHistoryError,
    LoadInput,
    check_interval_s,
    event_intervals,
    require_aware,
    to_series,
)


def meter_before(
    load: LoadInput,
    *,
    event_start: datetime,
    event_end: datetime,
    interval_s: int,
    window_end: datetime | None = None,
    params: MeterBeforeParams | None = None,
) -> BaselineResult:
    """Mean kW of ``load`` over the ``window_minutes`` ending at ``window_end`` (default: the
    event start; earlier when the baseline is computed before the window is over), for every
    event interval. At least ``min_coverage`` of the window's minutes must be metered."""
    p = params or MeterBeforeParams()
    check_interval_s(interval_s)
    end = event_start if window_end is None else min(window_end, event_start)
    require_aware(end, name="window_end")
    start = end - timedelta(minutes=p.window_minutes)
    series = to_series(load)
    inside = series[(series.index >= start) & (series.index < end)]
    expected = p.window_minutes * 60 / _step_s(series)
    if inside.empty or len(inside) < p.min_coverage * expected:
        raise InsufficientHistoryError(
            f"meter-before needs {p.min_coverage:.0%} of the {p.window_minutes} min before "
            f"{end.isoformat()} metered, found {len(inside)} of {expected:.0f} intervals")
    kw = float(np.mean(inside.to_numpy(dtype=float)))
    starts = event_intervals(event_start, event_end, interval_s=interval_s)
    values = tuple(kw for _ in starts)
    return BaselineResult(method="meter_before", interval_s=interval_s,
                          interval_starts=tuple(starts), baseline_kw=values,
                          unadjusted_kw=values)


def _step_s(series: pd.Series) -> float:
    """The load's interval: the median spacing, 60 s (1-minute rollups) for a single value."""
    if len(series) < 2:
        return 60.0
    spacing = pd.Timedelta(series.index.to_series().diff().median())
    return float(spacing.total_seconds()) or 60.0
