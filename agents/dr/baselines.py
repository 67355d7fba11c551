"""Customer baseline load (CBL): what the facility would have used without the event.

Three methods, each a pure function of interval load history (see docs/demand-response.md for
the published definitions they follow and where we chose a parameter):

- ``caiso_10_in_10``: CAISO / California IOU "10-in-10". The 10 most recent eligible weekdays
  (no past events, no holidays, complete data) within a 45-day lookback, averaged per interval,
  times a day-of adjustment ratio: event-day load over baseline load in the 3 hours ending one
  hour before the event start ("first three of the four hours prior to the event"), capped at
  +-20 % (CAISO PDR/RDRR; some IOU programs use +-40 %: ``adjustment_cap``).
- ``pjm_high_4_of_5``: PJM Manual 11 "High 4 of 5" weekday CBL. The 5 most recent eligible
  weekdays in a 45-day lookback (a day whose event-hours average is below 25 % of the five's
  average is replaced by the next one), keep the 4 with the highest event-hours average, average
  them per interval, plus a symmetric additive adjustment: event-day minus CBL average kW over
  the 3 hours ending one hour before the event start, added to every interval (up or down).
- ``forecast_baseline``: the load forecast's ``predicted_load_kw`` over the event.

Days are matched on the facility's local wall clock; weekend and holiday events have their own
CBL rules in both programs and are refused here (``UnsupportedEventDayError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from agents.dr.baseline_result import (
    BaselineConfig,
    BaselineMethod,
    BaselineResult,
    DayOfAdjustment,
    HighFourOfFiveParams,
    TenInTenParams,
    UnsupportedEventDayError,
)
from agents.dr.meter_before import meter_before
from agents.dr.series import (
    BaselineInputError,
    InsufficientHistoryError,
    LoadInput,
    check_interval_s,
    eligible_weekdays,
    event_intervals,
    holiday_dates,
    infer_interval_s,
    local_date,
    same_wall_clock,
    to_series,
    values_at,
    window_intervals,
)


@dataclass(frozen=True, slots=True, eq=False)
class _Day:
    day: date
    event_kw: np.ndarray
    window_kw: np.ndarray | None


@dataclass(frozen=True, slots=True)
class _Setup:
    series: pd.Series
    interval_s: int
    event: list[datetime]
    window: list[datetime]
    tz: ZoneInfo
    event_date: date


def _setup(
    load: LoadInput,
    *,
    event_start: datetime,
    event_end: datetime,
    timezone: str,
    interval_s: int | None,
    window_hours: int,
    gap_hours: int,
) -> _Setup:
    series = to_series(load)
    step_s = infer_interval_s(series) if interval_s is None else interval_s
    check_interval_s(step_s)
    event = event_intervals(event_start, event_end, interval_s=step_s)
    window_end = event_start - timedelta(hours=gap_hours)
    window = window_intervals(window_end, duration_s=window_hours * 3600, interval_s=step_s)
    tz = ZoneInfo(timezone)
    event_date = local_date(event_start, tz)
    if event_date.weekday() >= 5:
        raise UnsupportedEventDayError(f"{event_date} is a weekend day: no weekday CBL")
    return _Setup(series, step_s, event, window, tz, event_date)


def _complete_days(
    setup: _Setup,
    *,
    lookback_days: int,
    excluded_dates: Iterable[date],
    holiday_country: str | None,
    holiday_subdiv: str | None,
    need_window: bool,
) -> list[_Day]:
    """Eligible weekdays, most recent first, with complete event (and window) data."""
    first = setup.event_date - timedelta(days=lookback_days)
    years = range(first.year, setup.event_date.year + 1)
    holidays = holiday_dates(holiday_country, subdiv=holiday_subdiv, years=years)
    if setup.event_date in holidays:
        raise UnsupportedEventDayError(f"{setup.event_date} is a holiday: no weekday CBL")
    excluded = set(excluded_dates) | holidays
    days: list[_Day] = []
    for day in eligible_weekdays(setup.event_date, lookback_days=lookback_days, excluded=excluded):
        kw = _on(setup, setup.event, day)
        window_kw = _on(setup, setup.window, day) if need_window else None
        if kw is not None and (window_kw is not None or not need_window):
            days.append(_Day(day, kw, window_kw))
    return days


def _on(setup: _Setup, stamps: Sequence[datetime], day: date) -> np.ndarray | None:
    mapped = same_wall_clock(stamps, event_date=setup.event_date, day=day, tz=setup.tz)
    return values_at(setup.series, mapped)


def _event_day_window_kw(setup: _Setup) -> float:
    observed = values_at(setup.series, setup.window)
    if observed is None:
        raise InsufficientHistoryError(
            f"no complete event-day load from {setup.window[0].isoformat()} for the day-of "
            "adjustment (or turn day_of_adjustment off)"
        )
    return float(observed.mean())


def _result(
    method: BaselineMethod, setup: _Setup, days: Sequence[_Day], baseline: np.ndarray,
    unadjusted: np.ndarray, adjustment: DayOfAdjustment | None,
) -> BaselineResult:
    return BaselineResult(
        method=method,
        interval_s=setup.interval_s,
        interval_starts=tuple(setup.event),
        baseline_kw=tuple(float(v) for v in baseline),
        unadjusted_kw=tuple(float(v) for v in unadjusted),
        days_used=tuple(d.day for d in days),
        adjustment=adjustment,
    )


def caiso_10_in_10(
    load: LoadInput,
    *,
    event_start: datetime,
    event_end: datetime,
    timezone: str,
    excluded_dates: Iterable[date] = (),
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
    interval_s: int | None = None,
    params: TenInTenParams | None = None,
) -> BaselineResult:
    """CAISO / CA IOU 10-in-10 with the capped day-of adjustment ratio (see module docstring)."""
    p = params or TenInTenParams()
    setup = _setup(load, event_start=event_start, event_end=event_end, timezone=timezone,
                   interval_s=interval_s, window_hours=p.adjustment_hours,
                   gap_hours=p.adjustment_gap_hours)
    complete = _complete_days(setup, lookback_days=p.lookback_days, excluded_dates=excluded_dates,
                              holiday_country=holiday_country, holiday_subdiv=holiday_subdiv,
                              need_window=p.day_of_adjustment)
    days = complete[: p.days]
    if len(days) < p.min_days:
        raise InsufficientHistoryError(
            f"10-in-10 needs {p.min_days} eligible complete weekdays in {p.lookback_days} days "
            f"before {setup.event_date}, found {len(days)}"
        )
    unadjusted = np.mean([d.event_kw for d in days], axis=0)
    if not p.day_of_adjustment:
        return _result("caiso_10_in_10", setup, days, unadjusted, unadjusted, None)
    observed = _event_day_window_kw(setup)
    expected = float(np.mean([d.window_kw for d in days if d.window_kw is not None]))
    raw = observed / expected if expected > 0 else 1.0  # no load to scale: leave it
    applied = raw
    if p.adjustment_cap is not None:
        applied = min(1.0 + p.adjustment_cap, max(1.0 - p.adjustment_cap, raw))
    adjustment = DayOfAdjustment(
        kind="ratio", window_start=setup.window[0],
        window_end=setup.window[-1] + timedelta(seconds=setup.interval_s),
        observed_kw=observed, baseline_kw=expected, raw=raw, applied=applied,
        capped=applied != raw,
    )
    return _result("caiso_10_in_10", setup, days, unadjusted * applied, unadjusted, adjustment)


def _high_usage_days(complete: list[_Day], p: HighFourOfFiveParams, event_date: date) -> list[_Day]:
    """The 5 most recent days after the low-usage rule, then the 4 highest (ties: most recent)."""
    window = complete[: p.candidate_days]
    rest = complete[p.candidate_days :]
    while True:
        if len(window) < p.candidate_days:
            raise InsufficientHistoryError(
                f"High {p.selected_days} of {p.candidate_days} needs {p.candidate_days} eligible "
                f"complete weekdays in {p.lookback_days} days before {event_date}, "
                f"found {len(window)}"
            )
        average = float(np.mean([d.event_kw.mean() for d in window]))
        low = [d for d in window if d.event_kw.mean() < p.low_usage_fraction * average]
        if not low:
            break
        low_days = {d.day for d in low}
        window = [d for d in window if d.day not in low_days]
        window += rest[: len(low)]
        rest = rest[len(low) :]
    ranked = sorted(enumerate(window), key=lambda iw: (-iw[1].event_kw.mean(), iw[0]))
    return [d for _, d in sorted(ranked[: p.selected_days], key=lambda iw: iw[0])]


def pjm_high_4_of_5(
    load: LoadInput,
    *,
    event_start: datetime,
    event_end: datetime,
    timezone: str,
    excluded_dates: Iterable[date] = (),
    holiday_country: str | None = None,
    holiday_subdiv: str | None = None,
    interval_s: int | None = None,
    params: HighFourOfFiveParams | None = None,
) -> BaselineResult:
    """PJM weekday High 4 of 5 CBL with the symmetric additive adjustment (module docstring)."""
    p = params or HighFourOfFiveParams()
    setup = _setup(load, event_start=event_start, event_end=event_end, timezone=timezone,
                   interval_s=interval_s, window_hours=p.adjustment_hours,
                   gap_hours=p.adjustment_gap_hours)
    complete = _complete_days(setup, lookback_days=p.lookback_days, excluded_dates=excluded_dates,
                              holiday_country=holiday_country, holiday_subdiv=holiday_subdiv,
                              need_window=p.day_of_adjustment)
    days = _high_usage_days(complete, p, setup.event_date)
    unadjusted = np.mean([d.event_kw for d in days], axis=0)
    if not p.day_of_adjustment:
        return _result("pjm_high_4_of_5", setup, days, unadjusted, unadjusted, None)
    observed = _event_day_window_kw(setup)
    expected = float(np.mean([d.window_kw for d in days if d.window_kw is not None]))
    raw = observed - expected
    applied = raw
    if p.adjustment_cap_kw is not None:
        applied = min(p.adjustment_cap_kw, max(-p.adjustment_cap_kw, raw))
    adjustment = DayOfAdjustment(
        kind="additive", window_start=setup.window[0],
        window_end=setup.window[-1] + timedelta(seconds=setup.interval_s),
        observed_kw=observed, baseline_kw=expected, raw=raw, applied=applied,
        capped=applied != raw,
    )
    return _result("pjm_high_4_of_5", setup, days, unadjusted + applied, unadjusted, adjustment)


def forecast_baseline(
    forecast: LoadInput,
    *,
    event_start: datetime,
    event_end: datetime,
    interval_s: int | None = None,
) -> BaselineResult:
    """The forecast's ``predicted_load_kw`` over the event, interval by interval."""
    series = to_series(forecast)
    step_s = infer_interval_s(series) if interval_s is None else interval_s
    check_interval_s(step_s)
    event = event_intervals(event_start, event_end, interval_s=step_s)
    values = values_at(series, event)
    if values is None:
        raise InsufficientHistoryError("the forecast does not cover every event interval")
    kw = tuple(float(v) for v in values)
    return BaselineResult(method="forecast", interval_s=step_s, interval_starts=tuple(event),
                          baseline_kw=kw, unadjusted_kw=kw)


def compute_baseline(
    config: BaselineConfig,
    *,
    event_start: datetime,
    event_end: datetime,
    timezone: str,
    load: LoadInput | None = None,
    forecast: LoadInput | None = None,
    excluded_dates: Iterable[date] = (),
    interval_s: int | None = None,
) -> BaselineResult:
    """The facility's configured baseline; ``excluded_dates`` are its past event days."""
    if config.method == "forecast":
        if forecast is None:
            raise BaselineInputError("the forecast baseline needs a forecast")
        return forecast_baseline(forecast, event_start=event_start, event_end=event_end,
                                 interval_s=interval_s)
    if load is None:
        raise BaselineInputError(f"the {config.method} baseline needs load history")
    if config.method == "meter_before":
        return meter_before(load, event_start=event_start, event_end=event_end,
                            interval_s=interval_s or 60, params=config.meter_before)
    if config.method == "caiso_10_in_10":
        return caiso_10_in_10(load, event_start=event_start, event_end=event_end,
                              timezone=timezone, excluded_dates=excluded_dates,
                              holiday_country=config.holiday_country,
                              holiday_subdiv=config.holiday_subdiv, interval_s=interval_s,
                              params=config.ten_in_ten)
    return pjm_high_4_of_5(load, event_start=event_start, event_end=event_end,
                           timezone=timezone, excluded_dates=excluded_dates,
                           holiday_country=config.holiday_country,
                           holiday_subdiv=config.holiday_subdiv, interval_s=interval_s,
                           params=config.high_four_of_five)


__all__ = [
    "BaselineConfig",
    "BaselineInputError",
    "BaselineMethod",
    "BaselineResult",
    "DayOfAdjustment",
    "HighFourOfFiveParams",
    "InsufficientHistoryError",
    "TenInTenParams",
    "UnsupportedEventDayError",
    "caiso_10_in_10",
    "compute_baseline",
    "forecast_baseline",
    "pjm_high_4_of_5",
]
