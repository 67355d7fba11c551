"""The hourly UTC grid every weather provider answers on, and putting known values onto it.

Pure functions, no I/O: both providers and their tests share them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

HOUR_S = 3600
# As agents/forecasting/features.py: a gap of up to 3 h is interpolated, longer ones stay NaN.
MAX_GAP_H = 3


def as_utc(moment: datetime, *, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def hourly_index(start: datetime, end: datetime) -> pd.DatetimeIndex:
    """Every whole UTC hour ``h`` with ``floor_hour(start) <= h < end``."""
    start_utc, end_utc = as_utc(start, name="start"), as_utc(end, name="end")
    if start_utc >= end_utc:
        raise ValueError(f"start must be before end: {start_utc} >= {end_utc}")
    first = start_utc.replace(minute=0, second=0, microsecond=0)
    return pd.date_range(first, end_utc, freq="h", inclusive="left")


def epoch_seconds(index: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    seconds = (index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return np.asarray(seconds, dtype=np.int64)


def onto_hours(known: dict[int, float], index: pd.DatetimeIndex, *,
               max_gap_h: int = MAX_GAP_H) -> npt.NDArray[np.float64]:
    """Values at ``index`` from ``known`` (epoch second -> value), interpolated linearly in
    time between known points at most ``max_gap_h`` missing hours apart, held from the nearest
    known point for at most ``max_gap_h`` hours beyond the first or last, NaN elsewhere.

    Known points need not sit on whole UTC hours: WeatherAPI gives local hours, which are at
    :30 UTC in India or :45 in Nepal.
    """
    t = epoch_seconds(index).astype(np.float64)
    if not known:
        return np.full(len(t), np.nan)
    xs = np.array(sorted(known), dtype=np.float64)
    ys = np.array([known[int(x)] for x in xs], dtype=np.float64)
    values = np.interp(t, xs, ys)
    n = len(xs)
    pos = np.searchsorted(xs, t, side="left")
    after = xs[np.minimum(pos, n - 1)]
    before = xs[np.maximum(pos - 1, 0)]
    exact = (pos < n) & (after == t)
    inside = (pos > 0) & (pos < n) & (after - before <= (max_gap_h + 1) * HOUR_S)
    limit_s = max_gap_h * HOUR_S
    edge = ((pos == 0) & (xs[0] - t <= limit_s)) | ((pos == n) & (t - xs[-1] <= limit_s))
    values[~(exact | inside | edge)] = np.nan
    return values


def temperature_series(values: npt.NDArray[np.float64],
                       index: pd.DatetimeIndex) -> pd.Series[float]:
    return pd.Series(values, index=index, dtype="float64", name="temperature_c")
