"""Seasonal naive, DST, gaps, the fallback chain and the forecast entry point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from agents.forecasting import ForecastInputError, InsufficientHistory, forecast
from agents.forecasting.features import Context, calendar, horizon_index, to_grid
from agents.forecasting.models import SeasonalNaive
from agents.forecasting.select import supported

pytestmark = pytest.mark.unit

Q = timedelta(minutes=15)
BERLIN = "Europe/Berlin"


def quarter_hours(start: str, days: float) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start), periods=int(days * 96), freq="15min", tz="UTC")


@pytest.mark.parametrize(
    ("local_day", "expected"),
    [
        ("2026-03-29", 92),  # spring forward: 02:00-03:00 does not exist, 23 h
        ("2026-10-25", 100),  # fall back: 02:00-03:00 happens twice, 25 h
        ("2026-06-01", 96),
    ],
)
def test_dst_days_have_92_or_100_quarter_hours(local_day: str, expected: int) -> None:
    start = pd.Timestamp(local_day, tz=BERLIN).tz_convert("UTC")
    end = (pd.Timestamp(local_day, tz=BERLIN) + pd.DateOffset(days=1)).tz_convert("UTC")
    index = pd.date_range(start, end, freq="15min", inclusive="left")
    assert len(index) == expected
    cal = calendar(index, timezone=BERLIN, country=None)
    # local hour of day runs 0 .. 23.75 whatever the length of the day
    assert cal.hour_of_day[0] == 0.0
    assert cal.hour_of_day[-1] == 23.75


def test_seasonal_naive_is_the_same_local_time_a_week_earlier_across_dst() -> None:
    # Load = the local hour of day, so a lag by local wall clock reproduces it exactly;
    # a 168-hour UTC lag would be one hour off the week after the change to summer time.
    index = quarter_hours("2026-03-20T00:00Z", 14)
    local = index.tz_convert(BERLIN)
    load = pd.Series((local.hour + local.minute / 60.0).to_numpy(dtype="float64"), index=index)
    now = pd.Timestamp("2026-04-01T06:00Z")  # 08:00 summer time, after the 29 March change
    history = load[load.index < now]
    targets = horizon_index(now, horizon=timedelta(hours=6), step=Q)
    ctx = Context(timezone=BERLIN, country=None, step=Q)
    predicted = SeasonalNaive().fit(history, ctx).predict(targets)
    expected = (targets.tz_convert(BERLIN).hour + targets.tz_convert(BERLIN).minute / 60.0)
    np.testing.assert_allclose(predicted, expected.to_numpy(dtype="float64"))


def test_seasonal_naive_fills_a_missing_week_from_two_weeks_earlier() -> None:
    index = quarter_hours("2026-05-04T00:00Z", 21)  # a Monday, three weeks
    load = pd.Series(np.where(index.day_of_week < 5, 100.0, 20.0), index=index)
    now = pd.Timestamp("2026-05-25T00:00Z")
    gap = (load.index >= now - timedelta(days=7)) & (load.index < now - timedelta(days=6))
    history = to_grid(load[~gap & (load.index < now)], step=Q)
    ctx = Context(timezone="UTC", country=None, step=Q)
    predicted = SeasonalNaive().fit(history, ctx).predict(
        horizon_index(now, horizon=timedelta(hours=24), step=Q))
    # Monday a week ago is missing; Monday two weeks ago had 100 kW
    assert predicted.tolist() == [100.0] * 96


def test_horizon_index_starts_at_or_after_now() -> None:
    on_grid = horizon_index(pd.Timestamp("2026-01-01T12:00Z"), horizon=timedelta(hours=24),
                            step=Q)
    assert len(on_grid) == 96
    assert on_grid[0] == pd.Timestamp("2026-01-01T12:00Z")
    off_grid = horizon_index(pd.Timestamp("2026-01-01T12:03Z"), horizon=timedelta(hours=1),
                             step=Q)
    assert off_grid[0] == pd.Timestamp("2026-01-01T12:15Z")


def test_to_grid_keeps_gaps_and_holds_hourly_values_only_over_their_hour() -> None:
    hourly = pd.Series([1.0, 2.0, 4.0], index=pd.DatetimeIndex(
        ["2026-01-01T00:00Z", "2026-01-01T01:00Z", "2026-01-01T03:00Z"]))
    grid = to_grid(hourly, step=Q)
    assert len(grid) == 13  # 00:00 .. 03:00
    assert grid.iloc[:4].tolist() == [1.0] * 4
    assert grid.iloc[4:8].tolist() == [2.0] * 4
    assert grid.iloc[8:12].isna().all()  # 02:00-03:00 was never metered
    assert grid.iloc[12] == 4.0


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (timedelta(days=60), ["fourier_ols", "mstl_ets", "seasonal_naive"]),
        # 15 days: a week of origins fits for the naive baseline only, the daily profile joins
        (timedelta(days=15), ["seasonal_naive", "daily_profile"]),
        (timedelta(days=3), ["daily_profile"]),  # under two weeks
        (timedelta(hours=20), ["persistence"]),  # under a day
    ],
)
def test_fallback_chain(span: timedelta, expected: list[str]) -> None:
    assert supported(["fourier_ols", "mstl_ets", "seasonal_naive"], span) == expected


def _office(index: pd.DatetimeIndex, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    local = index.tz_convert(BERLIN)
    hour = local.hour + local.minute / 60.0
    occupied = (hour >= 7) & (hour < 18) & (local.day_of_week < 5)
    return pd.Series(50.0 + 100.0 * occupied + rng.normal(0, 5, len(index)), index=index)


@pytest.mark.parametrize(
    ("days", "model", "expected_model"),
    [
        (30, "fourier_ols", "fourier_ols"),
        (3, "fourier_ols", "daily_profile"),  # too short for the weekly model
        (0.25, "fourier_ols", "persistence"),  # six hours
    ],
)
def test_forecast_falls_back_on_short_history(days: float, model: str,
                                              expected_model: str) -> None:
    index = quarter_hours("2026-05-01T00:00Z", days)
    now = index[-1] + Q
    result = forecast(_office(index), now=now.to_pydatetime(), timezone=BERLIN, country="DE",
                      model=model)
    assert result.model == expected_model
    assert result.weather_used is False
    assert len(result.points) == 96
    assert result.points[0].timestamp == now.to_pydatetime()
    for p in result.points:
        assert p.lower_95_kw <= p.lower_80_kw <= p.upper_80_kw <= p.upper_95_kw


def test_forecast_with_gaps_and_temperature() -> None:
    index = quarter_hours("2026-05-01T00:00Z", 30)
    load = _office(index)
    load = load[(load.index < "2026-05-20") | (load.index >= "2026-05-21T06:00Z")]  # 30 h gap
    hours = pd.date_range("2026-05-01T00:00Z", "2026-06-02T00:00Z", freq="1h", tz="UTC")
    temperature = pd.Series(15.0 + 5.0 * np.sin(np.arange(len(hours)) / 24 * 2 * np.pi),
                            index=hours)
    now = datetime(2026, 5, 31, 0, 0, tzinfo=UTC)
    result = forecast(load, now=now, timezone=BERLIN, country="DE", temperature_c=temperature,
                      model="fourier_ols")
    assert result.weather_used is True
    occupied = [p.predicted_load_kw for p in result.points
                if p.timestamp.hour == 10]  # 12:00 Berlin summer time, a Sunday
    assert all(40 < v < 70 for v in occupied)  # 31 May 2026 is a Sunday: unoccupied
    # without temperature for the horizon the same call runs without weather
    short = temperature[temperature.index < "2026-05-30T12:00Z"]
    assert forecast(load, now=now, timezone=BERLIN, country="DE", temperature_c=short,
                    model="fourier_ols").weather_used is False


def test_bad_input_is_refused() -> None:
    naive_index = pd.Series([1.0], index=pd.DatetimeIndex(["2026-01-01T00:00"]))
    with pytest.raises(ForecastInputError):
        forecast(naive_index, now=datetime(2026, 1, 2, tzinfo=UTC), timezone="UTC")
    later = pd.Series([1.0], index=pd.DatetimeIndex(["2026-01-03T00:00Z"]))
    with pytest.raises(InsufficientHistory):
        forecast(later, now=datetime(2026, 1, 2, tzinfo=UTC), timezone="UTC", model="persistence")


@pytest.mark.parametrize(
    ("country", "low"),
    [
        ("DE", True),  # Ascension Day: a public holiday in Germany, forecast like a Sunday
        (None, False),  # no holiday calendar: an ordinary Thursday, occupied
    ],
)
def test_public_holiday_takes_the_day_off_shape(country: str | None, low: bool) -> None:
    # Offices closed on weekends and on Good Friday, Easter Monday and 1 May (in the history)
    index = quarter_hours("2026-03-31T22:00Z", 43)
    local = index.tz_convert(BERLIN)
    closed_days = {"2026-04-03", "2026-04-06", "2026-05-01"}
    closed = np.isin(local.strftime("%Y-%m-%d"), list(closed_days))
    hour = local.hour + local.minute / 60.0
    occupied = (hour >= 7) & (hour < 18) & (local.day_of_week < 5) & ~closed
    load = pd.Series(50.0 + 100.0 * occupied, index=index)
    now = datetime(2026, 5, 13, 22, 0, tzinfo=UTC)  # midnight starting 14 May in Berlin
    result = forecast(load[load.index < now], now=now, timezone=BERLIN, country=country,
                      model="fourier_ols")
    at_10_local = [p.predicted_load_kw for p in result.points if p.timestamp.hour == 8]
    # 50 kW closed, 150 kW open; without the calendar the model expects a working Thursday
    assert all((v < 80) if low else (v > 120) for v in at_10_local)
