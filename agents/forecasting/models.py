"""The models behind one small protocol: fit on a load series, predict at future timestamps.

``fit`` takes the load on the regular step grid (NaN where readings are missing) ending at the
forecast origin, and returns a fitted model whose ``predict`` gives kW at grid points after it.
Every model tolerates gaps. ``min_history`` is the observed span a model needs; the fallback
chain in ``select.py`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from agents.forecasting.features import Context, FloatArray, calendar

SEASONAL_NAIVE = "seasonal_naive"
PERSISTENCE = "persistence"


class Fitted(Protocol):
    @property
    def weather_used(self) -> bool: ...

    @property
    def in_sample_residuals_kw(self) -> FloatArray:
        """actual - fitted on the training data: the interval fallback when there are no
        out-of-sample residuals yet (short history)."""
        ...

    def predict(self, index: pd.DatetimeIndex) -> FloatArray: ...


class Model(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def min_history(self) -> timedelta: ...

    def fit(self, load_kw: pd.Series, ctx: Context) -> Fitted: ...


def observed_span(load_kw: pd.Series) -> timedelta:
    """Time from the first to the end of the last observed interval (gaps inside included)."""
    observed = load_kw.dropna()
    if observed.empty:
        return timedelta(0)
    step = load_kw.index[1] - load_kw.index[0] if len(load_kw) > 1 else pd.Timedelta(0)
    span = observed.index[-1] - observed.index[0] + step
    return timedelta(seconds=span.total_seconds())


def local_wall_clock(index: pd.DatetimeIndex, timezone: str) -> pd.DatetimeIndex:
    return index.tz_convert(timezone).tz_localize(None)


def same_local_time(
    load_kw: pd.Series, index: pd.DatetimeIndex, *, timezone: str, days: int
) -> FloatArray:
    """The load at the same local wall-clock time ``days`` earlier, NaN where unknown.

    A week after a DST change "the same time" is 167 or 169 hours back, not 168; where the
    earlier wall-clock time did not exist (the spring-forward hour) the UTC lag is used.
    """
    observed = load_kw.dropna()
    by_local = pd.Series(observed.to_numpy(),
                         index=local_wall_clock(pd.DatetimeIndex(observed.index), timezone))
    by_local = by_local[~by_local.index.duplicated(keep="first")]
    keys = local_wall_clock(index, timezone) - pd.Timedelta(days=days)
    values: FloatArray = np.array(by_local.reindex(keys).to_numpy(), dtype="float64")
    missing = np.isnan(values)
    if missing.any():
        utc_lag = observed.reindex(index - pd.Timedelta(days=days)).to_numpy(dtype="float64")
        values[missing] = utc_lag[missing]
    return values


@dataclass(frozen=True, slots=True)
class _Lookup:
    load_kw: pd.Series
    ctx: Context
    residuals: FloatArray
    weather_used: bool = False

    @property
    def in_sample_residuals_kw(self) -> FloatArray:
        return self.residuals

    def predict(self, index: pd.DatetimeIndex) -> FloatArray:
        tz = self.ctx.timezone
        values = same_local_time(self.load_kw, index, timezone=tz, days=7)
        for days in (14, 1, 2):
            missing = np.isnan(values)
            if not missing.any():
                break
            values[missing] = same_local_time(self.load_kw, index[missing], timezone=tz,
                                              days=days)
        missing = np.isnan(values)
        if missing.any():
            values[missing] = float(np.nanmean(self.load_kw.to_numpy(dtype="float64")))
        return values


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """The baseline: the load at the same local time one week earlier (then two weeks, one
    day, two days earlier where that is missing)."""

    name: str = SEASONAL_NAIVE
    min_history: timedelta = timedelta(days=7)

    def fit(self, load_kw: pd.Series, ctx: Context) -> Fitted:
        lagged = same_local_time(load_kw, pd.DatetimeIndex(load_kw.index), timezone=ctx.timezone,
                                 days=7)
        residuals = load_kw.to_numpy(dtype="float64") - lagged
        return _Lookup(load_kw, ctx, residuals[~np.isnan(residuals)])


@dataclass(frozen=True, slots=True)
class _Flat:
    level_kw: float
    residuals: FloatArray
    weather_used: bool = False

    @property
    def in_sample_residuals_kw(self) -> FloatArray:
        return self.residuals

    def predict(self, index: pd.DatetimeIndex) -> FloatArray:
        return np.full(len(index), self.level_kw)


@dataclass(frozen=True, slots=True)
class Persistence:
    """The last resort (< 1 day of history): the mean of the last hour observed, held flat."""

    name: str = PERSISTENCE
    min_history: timedelta = timedelta(0)
    window: timedelta = field(default=timedelta(hours=1))

    def fit(self, load_kw: pd.Series, ctx: Context) -> Fitted:
        observed = load_kw.dropna()
        recent = observed[observed.index > observed.index[-1] - pd.Timedelta(self.window)]
        level = float(recent.mean())
        residuals = observed.to_numpy(dtype="float64") - level
        return _Flat(level, residuals)


def day_types(load_kw: pd.Series, ctx: Context) -> tuple[int, int]:
    """Observed (workdays, days off) in the history: the daily profile splits only if both."""
    observed = load_kw.dropna()
    cal = calendar(pd.DatetimeIndex(observed.index), timezone=ctx.timezone, country=ctx.country)
    local_days = local_wall_clock(pd.DatetimeIndex(observed.index), ctx.timezone).normalize()
    frame = pd.DataFrame({"day": local_days, "off": cal.day_off}).drop_duplicates("day")
    off = int(frame["off"].sum())
    return len(frame) - off, off
