"""Calendar and weather features on a regular UTC grid.

Everything calendar-like is computed from the facility's *local* wall clock (its IANA time
zone), so a DST day of 92 or 100 quarter hours still puts 08:00 at 08:00: the daily Fourier
terms follow the clock occupants live by, not UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import holidays
import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.errors import ForecastInputError

FloatArray = npt.NDArray[np.float64]

HEATING_BASE_C = 15.0
COOLING_BASE_C = 20.0
HOT_BASE_C = 26.0
TEMPERATURE_FILL_LIMIT = timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class Context:
    """What a model may know besides the load itself."""

    timezone: str
    country: str | None
    step: timedelta
    temperature_c: pd.Series | None = None  # on the step grid (temperature_grid), NaN = unknown

    @property
    def step_s(self) -> int:
        return int(self.step.total_seconds())


def check_utc_index(series: pd.Series, name: str) -> None:
    index = series.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ForecastInputError(f"{name} needs a timezone-aware (UTC) DatetimeIndex")


def to_grid(series: pd.Series, *, step: timedelta, end: pd.Timestamp | None = None) -> pd.Series:
    """``series`` on the regular ``step`` grid of interval-start labels, gaps as NaN.

    Finer data is averaged per step (mean kW); coarser data (e.g. hourly) holds its value over
    the steps its interval covers, never further, so a gap stays a gap.
    """
    check_utc_index(series, "series")
    s = series.astype("float64").dropna()
    s.index = pd.DatetimeIndex(s.index).tz_convert("UTC")
    s = s[~s.index.duplicated(keep="last")].sort_index()
    if end is not None:
        s = s[s.index < end]
    if s.empty:
        return s
    freq = pd.Timedelta(step)
    start = s.index[0].floor(freq)
    last = s.index[-1].floor(freq)
    grid = pd.date_range(start, last, freq=freq, tz="UTC")
    native = infer_interval(s)
    if native is not None and native > freq:
        limit = int(native / freq) - 1
        return s.reindex(grid).ffill(limit=limit) if limit > 0 else s.reindex(grid)
    return s.groupby(pd.DatetimeIndex(s.index).floor(freq)).mean().reindex(grid)


def infer_interval(series: pd.Series) -> pd.Timedelta | None:
    """The most common spacing of the index (the meter's native interval; the smallest on a
    tie), robust to gaps; None for fewer than 2 points."""
    if len(series) < 2:
        return None
    index = pd.DatetimeIndex(series.index)
    return pd.Timedelta(pd.Series(index[1:] - index[:-1]).mode().iloc[0])


def temperature_grid(temperature_c: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """Temperature on the grid ``index``, interpolated in time over gaps of at most 3 h and
    NaN beyond (hourly weather onto a 15-min grid, or a short outage of the weather feed)."""
    check_utc_index(temperature_c, "temperature_c")
    t = temperature_c.astype("float64").dropna()
    t.index = pd.DatetimeIndex(t.index).tz_convert("UTC")
    t = t[~t.index.duplicated(keep="last")].sort_index()
    if t.empty or len(index) == 0:
        return pd.Series(np.nan, index=index, dtype="float64")
    union = t.index.union(index)
    filled = t.reindex(union).interpolate(method="time", limit_area="inside")
    # Interpolated values are kept only inside gaps of at most the fill limit.
    known = pd.Series(t.index, index=t.index).reindex(union)
    gap = pd.DatetimeIndex(known.bfill()) - pd.DatetimeIndex(known.ffill())
    filled[~np.asarray(gap <= pd.Timedelta(TEMPERATURE_FILL_LIMIT), dtype=bool)] = np.nan
    return filled.reindex(index)


def temperature_on(index: pd.DatetimeIndex, temperature_c: pd.Series | None) -> FloatArray | None:
    """Temperature at each of ``index`` from the gridded series; None if any is unknown."""
    if temperature_c is None or len(index) == 0:
        return None
    values = temperature_c.reindex(index).to_numpy(dtype="float64")
    return None if np.isnan(values).any() else values


@lru_cache(maxsize=256)
def _holiday_dates(country: str, years: tuple[int, ...]) -> frozenset[object]:
    try:
        calendar = holidays.country_holidays(country, years=list(years))
    except NotImplementedError as exc:
        raise ForecastInputError(f"no public holidays known for country {country!r}") from exc
    return frozenset(calendar.keys())


@dataclass(frozen=True, slots=True)
class Calendar:
    """Local-clock facts for each grid point."""

    hour_of_day: FloatArray  # local, 0 <= h < 24
    day_of_week: FloatArray  # local, Monday 0
    day_off: npt.NDArray[np.bool_]  # Saturday, Sunday or a public holiday


def calendar(index: pd.DatetimeIndex, *, timezone: str, country: str | None) -> Calendar:
    try:
        local = index.tz_convert(timezone)
    except Exception as exc:  # pytz/zoneinfo raise different types for an unknown zone
        raise ForecastInputError(f"unknown time zone {timezone!r}") from exc
    hour = (local.hour + local.minute / 60.0 + local.second / 3600.0).to_numpy(dtype="float64")
    dow = local.day_of_week.to_numpy(dtype="float64")
    day_off = dow >= 5
    if country:
        dates = local.date
        years = tuple(sorted({d.year for d in dates}))
        known = _holiday_dates(country, years)
        day_off = day_off | np.fromiter((d in known for d in dates), dtype=bool, count=len(dates))
    return Calendar(hour, dow, np.asarray(day_off, dtype=bool))


def fourier(phase: FloatArray, harmonics: int) -> list[FloatArray]:
    """sin/cos pairs of ``phase`` (0..1 over one period) for k = 1..harmonics."""
    cols: list[FloatArray] = []
    for k in range(1, harmonics + 1):
        angle = 2.0 * np.pi * k * phase
        cols.append(np.sin(angle))
        cols.append(np.cos(angle))
    return cols


def design(
    cal: Calendar,
    temperature_c: FloatArray | None,
    *,
    daily_harmonics: int,
    weekly_harmonics: int,
    split_day_off: bool,
) -> FloatArray:
    """The regression's design matrix.

    Workdays and days off (weekends, holidays) get their own intercept and daily shape; the
    weekly terms carry day-to-day level differences; temperature enters as heating and cooling
    degree hinges (bases 15, 20 and 26 °C), the shape of CalTRACK's change-point models.
    """
    n = len(cal.hour_of_day)
    daily = fourier(cal.hour_of_day / 24.0, daily_harmonics)
    cols: list[FloatArray] = []
    if split_day_off:
        off = cal.day_off.astype("float64")
        work = 1.0 - off
        cols.append(work)
        cols.append(off)
        cols.extend(c * work for c in daily)
        cols.extend(c * off for c in daily)
    else:
        cols.append(np.ones(n))
        cols.extend(daily)
    if weekly_harmonics:
        cols.extend(fourier((cal.day_of_week + cal.hour_of_day / 24.0) / 7.0, weekly_harmonics))
    if temperature_c is not None:
        cols.append(np.maximum(0.0, HEATING_BASE_C - temperature_c))
        cols.append(np.maximum(0.0, temperature_c - COOLING_BASE_C))
        cols.append(np.maximum(0.0, temperature_c - HOT_BASE_C))
    return np.column_stack(cols)


def horizon_index(now: pd.Timestamp, *, horizon: timedelta, step: timedelta) -> pd.DatetimeIndex:
    """The intervals to forecast, labelled by their start: the first that starts at or after
    ``now``, then one per step for ``horizon`` (96 quarter hours for 24 h)."""
    freq = pd.Timedelta(step)
    first = now.ceil(freq)
    count = int(pd.Timedelta(horizon) / freq)
    return pd.date_range(first, periods=count, freq=freq, tz="UTC")
