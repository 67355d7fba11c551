"""Interval load series and the facility calendar that the baselines share.

Load history is interval-mean kW labelled by interval start (hourly or 15-min facility rollups).
Baseline days are matched on the facility's local wall clock, so an event at 14:00 local is
compared with 14:00 local on earlier days, across daylight-saving changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

LoadInput: TypeAlias = "pd.Series[float] | Sequence[tuple[datetime, float]]"
"""Interval-mean kW: a Series with a tz-aware index, or (timestamp, kW) pairs."""

SECONDS_PER_HOUR = 3600


class BaselineError(ValueError):
    """Base of the baseline errors."""


class BaselineInputError(BaselineError):
    """Inputs that cannot describe an event or a load history (naive times, bad grid...)."""


class InsufficientHistoryError(BaselineError):
    """Not enough eligible, complete days (or event-day data) for the chosen method."""


def require_aware(ts: datetime, *, name: str) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise BaselineInputError(f"{name} must be timezone-aware, got {ts!r}")


def to_series(load: LoadInput) -> pd.Series:
    """Float kW indexed by UTC interval start, sorted; missing (NaN) intervals dropped."""
    if isinstance(load, pd.Series):
        series = load.astype(float)
    else:
        pairs: list[tuple[datetime, float]] = list(load)
        for ts, _ in pairs:
            require_aware(ts, name="load timestamp")
        series = pd.Series(
            [float(kw) for _, kw in pairs],
            index=pd.DatetimeIndex([ts for ts, _ in pairs]) if pairs else pd.DatetimeIndex(
                [], tz=UTC),
            dtype=float,
        )
    index = series.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise BaselineInputError("load history needs a timezone-aware DatetimeIndex")
    series = pd.Series(series.to_numpy(dtype=float), index=index.tz_convert(UTC))
    if series.index.has_duplicates:
        raise BaselineInputError("load history has duplicate timestamps")
    return series.sort_index().dropna()


def infer_interval_s(series: pd.Series) -> int:
    """The grid step: the smallest gap between consecutive intervals."""
    if len(series) < 2:
        raise InsufficientHistoryError("need at least two intervals to infer the interval")
    index = pd.DatetimeIndex(series.index)
    step_s = int((index[1:] - index[:-1]).total_seconds().min())
    check_interval_s(step_s)
    return step_s


def check_interval_s(interval_s: int) -> None:
    if interval_s <= 0 or SECONDS_PER_HOUR % interval_s:
        raise BaselineInputError(f"interval must divide an hour, got {interval_s} s")


def event_intervals(
    event_start: datetime, event_end: datetime, *, interval_s: int
) -> list[datetime]:
    """UTC starts of the intervals covering [event_start, event_end), on the interval grid."""
    require_aware(event_start, name="event_start")
    require_aware(event_end, name="event_end")
    if not event_end > event_start:
        raise BaselineInputError("event_end must be after event_start")
    start = event_start.astimezone(UTC)
    duration_s = (event_end - event_start).total_seconds()
    if start.timestamp() % interval_s or duration_s % interval_s:
        raise BaselineInputError(f"event window is not on the {interval_s} s interval grid")
    step = timedelta(seconds=interval_s)
    return [start + i * step for i in range(int(duration_s // interval_s))]


def window_intervals(
    end: datetime, *, duration_s: int, interval_s: int
) -> list[datetime]:
    """UTC interval starts of the ``duration_s`` ending at ``end``."""
    return event_intervals(end - timedelta(seconds=duration_s), end, interval_s=interval_s)


def local_date(ts: datetime, tz: ZoneInfo) -> date:
    return ts.astimezone(tz).date()


def same_wall_clock(
    stamps: Sequence[datetime], *, event_date: date, day: date, tz: ZoneInfo
) -> list[datetime]:
    """The same local wall-clock times as ``stamps`` (which lie around ``event_date``) on ``day``.

    A stamp on the day before the event date (a pre-event window after midnight's edge) maps to
    the day before ``day``; on a daylight-saving change the local time is resolved by zoneinfo.
    """
    out: list[datetime] = []
    for ts in stamps:
        local = ts.astimezone(tz)
        shift = local.date() - event_date
        naive = datetime.combine(day + shift, local.time())
        out.append(naive.replace(tzinfo=tz).astimezone(UTC))
    return out


def values_at(series: pd.Series, stamps: Sequence[datetime]) -> np.ndarray | None:
    """kW at each stamp, or None if any interval is missing (a gap is not zero load)."""
    values = series.reindex(pd.DatetimeIndex(list(stamps))).to_numpy(dtype=float)
    if np.isnan(values).any():
        return None
    return values


def holiday_dates(
    country: str | None, *, subdiv: str | None, years: Iterable[int]
) -> frozenset[date]:
    """Public holidays of ``country`` (``holidays`` package); none without a country."""
    if country is None:
        return frozenset()
    import holidays  # deferred: only facilities with a country pay for the calendar

    return frozenset(holidays.country_holidays(country, subdiv=subdiv, years=sorted(set(years))))


def eligible_weekdays(
    event_date: date, *, lookback_days: int, excluded: Iterable[date]
) -> list[date]:
    """Weekdays in the lookback before ``event_date``, most recent first, minus ``excluded``."""
    skip = set(excluded)
    days = (event_date - timedelta(days=n) for n in range(1, lookback_days + 1))
    return [d for d in days if d.weekday() < 5 and d not in skip]
