"""Baselines against worked examples built from the programs' published definitions.

Calendar (America/Los_Angeles, 2026): the event is Wednesday 15 July, 14:00-16:00 local. Going
back from Tuesday 14 July the weekdays are 14, 13, 10 (a past event day: excluded), 9, 8, 7, 6,
3 (Independence Day observed: a US holiday), 2, 1, 30 June, 29 June, 26 June...

Every history day is flat at its day's kW, plus 20 kW in the 15:00 hour, so the unadjusted
baseline is (mean of the chosen days, that mean + 20). Days that must never be chosen carry
loud values: weekends 500, the event day 10 July 900, the holiday 700, older weekdays 300.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from agents.dr.baselines import (
    BaselineConfig,
    BaselineInputError,
    HighFourOfFiveParams,
    InsufficientHistoryError,
    TenInTenParams,
    UnsupportedEventDayError,
    caiso_10_in_10,
    compute_baseline,
    forecast_baseline,
    pjm_high_4_of_5,
)

pytestmark = pytest.mark.unit

TZ = "America/Los_Angeles"
LA = ZoneInfo(TZ)
EVENT_DAY = date(2026, 7, 15)
START = datetime(2026, 7, 15, 14, tzinfo=LA)  # 21:00 UTC
END = datetime(2026, 7, 15, 16, tzinfo=LA)
PAST_EVENT = date(2026, 7, 10)


def d(month: int, day: int) -> date:
    return date(2026, month, day)


# The ten eligible weekdays for 10-in-10; their kW average to exactly 100.
TEN = {d(7, 14): 105.0, d(7, 13): 95.0, d(7, 9): 104.0, d(7, 8): 96.0, d(7, 7): 103.0,
       d(7, 6): 97.0, d(7, 2): 102.0, d(7, 1): 98.0, d(6, 30): 101.0, d(6, 29): 99.0}
TEN_DAYS = tuple(TEN)  # most recent first


def loud(day: date) -> float:
    if day == PAST_EVENT:
        return 900.0
    if day == d(7, 3):
        return 700.0
    return 500.0 if day.weekday() >= 5 else 300.0


def history(
    day_kw: dict[date, float], *, window_kw: float, interval_min: int = 60,
    first: date = date(2026, 5, 1), last: date = EVENT_DAY,
) -> pd.Series:
    """Local-time history; on the event day 10:00-13:00 is ``window_kw``, 13:00 (the skipped
    hour) 999, the event hours 60 (the shed: never part of a baseline), other hours 100."""

    def kw(day: date, hour: int) -> float:
        if day == EVENT_DAY:
            return window_kw if 10 <= hour < 13 else 999.0 if hour == 13 else (
                60.0 if hour in (14, 15) else 100.0)
        return day_kw.get(day, loud(day)) + (20.0 if hour == 15 else 0.0)

    return build(kw, first=first, last=last, interval_min=interval_min)


def build(
    kw: Callable[[date, int], float], *, first: date, last: date, interval_min: int = 60
) -> pd.Series:
    index = pd.date_range(
        datetime(first.year, first.month, first.day, tzinfo=LA),
        datetime(last.year, last.month, last.day, tzinfo=LA) + timedelta(days=1),
        freq=f"{interval_min}min", inclusive="left",
    )
    return pd.Series([kw(ts.date(), ts.hour) for ts in index], index=index.tz_convert(UTC))


@pytest.mark.parametrize(
    ("window_kw", "cap", "ratio", "capped", "expected"),
    [
        # Baseline days average 100 kW over 10:00-13:00; event day 110: ratio 1.1.
        (110.0, 0.20, 1.10, False, (110.0, 132.0)),
        # 150 / 100 = 1.5, capped at +20 %: 1.2 x (100, 120).
        (150.0, 0.20, 1.20, True, (120.0, 144.0)),
        # 70 / 100 = 0.7, floored at -20 %: 0.8 x (100, 120).
        (70.0, 0.20, 0.80, True, (80.0, 96.0)),
        # A +-40 % program: 1.5 capped at 1.4; 1.3 passes.
        (150.0, 0.40, 1.40, True, (140.0, 168.0)),
        (130.0, 0.40, 1.30, False, (130.0, 156.0)),
        # Uncapped: the raw ratio.
        (150.0, None, 1.50, False, (150.0, 180.0)),
    ],
)
def test_ten_in_ten_day_of_adjustment(
    window_kw: float, cap: float | None, ratio: float, capped: bool,
    expected: tuple[float, float],
) -> None:
    result = caiso_10_in_10(
        history(TEN, window_kw=window_kw), event_start=START, event_end=END, timezone=TZ,
        excluded_dates={PAST_EVENT}, holiday_country="US",
        params=TenInTenParams(adjustment_cap=cap),
    )
    assert result.days_used == TEN_DAYS
    assert result.unadjusted_kw == pytest.approx((100.0, 120.0))
    assert result.baseline_kw == pytest.approx(expected)
    adj = result.adjustment
    assert adj is not None
    assert (adj.applied, adj.capped, adj.observed_kw, adj.baseline_kw) == pytest.approx(
        (ratio, capped, window_kw, 100.0))
    # The window is the 3 hours ending 1 hour before the start: 10:00-13:00 local = 17-20 UTC.
    assert (adj.window_start, adj.window_end) == (
        datetime(2026, 7, 15, 17, tzinfo=UTC), datetime(2026, 7, 15, 20, tzinfo=UTC))
    assert result.interval_starts == (datetime(2026, 7, 15, 21, tzinfo=UTC),
                                      datetime(2026, 7, 15, 22, tzinfo=UTC))


@pytest.mark.parametrize(
    ("excluded", "country", "dropped", "added", "kw_14"),
    [
        # Event day and holiday excluded, weekends skipped: exactly the ten days, mean 100.
        ({PAST_EVENT}, "US", None, None, 100.0),
        # No holiday calendar: 3 July (700) is in, 29 June (99) drops out: (1000-99+700)/10.
        ({PAST_EVENT}, None, d(6, 29), d(7, 3), 160.1),
        # Past event day not excluded: 10 July (900) in, 29 June out: (1000-99+900)/10.
        (set(), "US", d(6, 29), PAST_EVENT, 180.1),
    ],
)
def test_ten_in_ten_eligible_days(
    excluded: set[date], country: str | None, dropped: date | None, added: date | None,
    kw_14: float,
) -> None:
    result = caiso_10_in_10(
        history(TEN, window_kw=100.0), event_start=START, event_end=END, timezone=TZ,
        excluded_dates=excluded, holiday_country=country,
        params=TenInTenParams(day_of_adjustment=False),
    )
    expected_days = {*TEN_DAYS, *([added] if added else [])} - {dropped}
    assert set(result.days_used) == expected_days
    assert result.adjustment is None
    assert result.baseline_kw == pytest.approx((kw_14, kw_14 + 20.0))


def test_ten_in_ten_skips_a_day_with_a_gap() -> None:
    # 14 July has no 14:00 reading: the day is not eligible (a gap is not zero load), so
    # 26 June (an older weekday, 300 kW) is the tenth day: (1000 - 105 + 300) / 10 = 119.5.
    load = history(TEN, window_kw=100.0)
    load = load.drop(datetime(2026, 7, 14, 21, tzinfo=UTC))
    result = caiso_10_in_10(load, event_start=START, event_end=END, timezone=TZ,
                            excluded_dates={PAST_EVENT}, holiday_country="US")
    assert d(7, 14) not in result.days_used and d(6, 26) in result.days_used
    assert result.unadjusted_kw == pytest.approx((119.5, 139.5))


def test_ten_in_ten_quarter_hours() -> None:
    # The same history at 15-min resolution: 8 intervals, each from the same ten days.
    result = caiso_10_in_10(
        history(TEN, window_kw=110.0, interval_min=15), event_start=START, event_end=END,
        timezone=TZ, excluded_dates={PAST_EVENT}, holiday_country="US",
    )
    assert result.interval_s == 900
    assert result.baseline_kw == pytest.approx((110.0,) * 4 + (132.0,) * 4)


@pytest.mark.parametrize(
    ("lookback_days", "min_days", "found"),
    [
        # 15 days back reach 30 June: 14,13,9,8,7,6,2,1,30 = 9 days < 10.
        (15, 10, 9),
        # The same 9 days are enough for a program that accepts 9.
        (15, 9, None),
    ],
)
def test_ten_in_ten_not_enough_history(
    lookback_days: int, min_days: int, found: int | None
) -> None:
    params = TenInTenParams(lookback_days=lookback_days, min_days=min_days)
    load = history(TEN, window_kw=100.0)

    def run() -> int:
        return len(caiso_10_in_10(load, event_start=START, event_end=END, timezone=TZ,
                                  excluded_dates={PAST_EVENT}, holiday_country="US",
                                  params=params).days_used)

    if found is None:
        assert run() == 9
    else:
        with pytest.raises(InsufficientHistoryError, match=f"found {found}"):
            run()


def test_ten_in_ten_across_daylight_saving() -> None:
    # Event Wed 18 March 2026 14:00 local; DST began 8 March. Baseline days 6, 5, 4 March are
    # PST (UTC-8), the others PDT (UTC-7). Load is 100 kW at 14:00 local and 0 otherwise, so
    # only wall-clock matching finds 100 kW on every day.
    load = build(lambda day, hour: 100.0 if hour == 14 else 0.0,
                 first=d(1, 15), last=d(3, 18))
    start = datetime(2026, 3, 18, 14, tzinfo=LA)
    result = caiso_10_in_10(load, event_start=start, event_end=start + timedelta(hours=1),
                            timezone=TZ, params=TenInTenParams(day_of_adjustment=False))
    assert d(3, 4) in result.days_used
    assert result.baseline_kw == pytest.approx((100.0,))


# High 4 of 5: the five most recent eligible weekdays are 14, 13, 9, 8, 7 July.
FIVE = {d(7, 14): 100.0, d(7, 13): 80.0, d(7, 9): 120.0, d(7, 8): 110.0, d(7, 7): 90.0,
        d(7, 6): 95.0}


@pytest.mark.parametrize(
    ("window_kw", "cap_kw", "saa", "expected"),
    [
        # Highest 4 of (100, 80, 120, 110, 90): drop 13 July (80). CBL = 420/4 = 105, and
        # 125 at 15:00. Event-day window 115 vs CBL-days window 105: +10 kW on every hour.
        (115.0, None, 10.0, (115.0, 135.0)),
        # Symmetric: 95 - 105 = -10 kW.
        (95.0, None, -10.0, (95.0, 115.0)),
        # Same load as the CBL days: no adjustment.
        (105.0, None, 0.0, (105.0, 125.0)),
        # A program cap of 5 kW limits the +10.
        (115.0, 5.0, 5.0, (110.0, 130.0)),
    ],
)
def test_high_4_of_5_with_symmetric_additive_adjustment(
    window_kw: float, cap_kw: float | None, saa: float, expected: tuple[float, float]
) -> None:
    result = pjm_high_4_of_5(
        history(FIVE, window_kw=window_kw), event_start=START, event_end=END, timezone=TZ,
        excluded_dates={PAST_EVENT}, holiday_country="US",
        params=HighFourOfFiveParams(adjustment_cap_kw=cap_kw),
    )
    assert result.days_used == (d(7, 14), d(7, 9), d(7, 8), d(7, 7))
    assert result.unadjusted_kw == pytest.approx((105.0, 125.0))
    assert result.adjustment is not None
    assert result.adjustment.kind == "additive"
    assert result.adjustment.applied == pytest.approx(saa)
    assert result.baseline_kw == pytest.approx(expected)


def test_high_4_of_5_replaces_a_low_usage_day() -> None:
    # Event-hours averages are a day's kW + 10 (the 15:00 hour carries +20). 13 July at 10 kW
    # averages 20; the five average (110+20+130+120+100)/5 = 96 and 20 < 25 % x 96 = 24, so
    # 13 July is replaced by 6 July (105). New five: 110, 130, 120, 100, 105 (none below
    # 25 % x 113); the highest four are 9, 8, 14, 6 July: (120+110+100+95)/4 = 106.25 at 14:00.
    low = {**FIVE, d(7, 13): 10.0}
    result = pjm_high_4_of_5(
        history(low, window_kw=100.0), event_start=START, event_end=END, timezone=TZ,
        excluded_dates={PAST_EVENT}, holiday_country="US",
        params=HighFourOfFiveParams(day_of_adjustment=False),
    )
    assert result.days_used == (d(7, 14), d(7, 9), d(7, 8), d(7, 6))
    assert result.baseline_kw == pytest.approx((106.25, 126.25))


def test_high_4_of_5_not_enough_history() -> None:
    # A 7-day lookback holds 14, 13, 9, 8 July (10 July excluded): four weekdays, not five.
    with pytest.raises(InsufficientHistoryError, match="found 4"):
        pjm_high_4_of_5(history(FIVE, window_kw=100.0), event_start=START, event_end=END,
                        timezone=TZ, excluded_dates={PAST_EVENT},
                        params=HighFourOfFiveParams(lookback_days=7))


def test_day_of_adjustment_needs_event_day_data() -> None:
    # No event-day readings before the event: no adjustment can be computed.
    load = history(TEN, window_kw=100.0, last=d(7, 14))
    with pytest.raises(InsufficientHistoryError, match="day-of"):
        caiso_10_in_10(load, event_start=START, event_end=END, timezone=TZ,
                       excluded_dates={PAST_EVENT}, holiday_country="US")


@pytest.mark.parametrize(
    ("start", "country", "error"),
    [
        (datetime(2026, 7, 18, 14, tzinfo=LA), None, UnsupportedEventDayError),  # Saturday
        (datetime(2026, 7, 3, 14, tzinfo=LA), "US", UnsupportedEventDayError),  # holiday
        (datetime(2026, 7, 15, 14), None, BaselineInputError),  # naive
        (datetime(2026, 7, 15, 14, 30, tzinfo=LA), None, BaselineInputError),  # off the grid
    ],
)
def test_refused_events(start: datetime, country: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        caiso_10_in_10(history(TEN, window_kw=100.0), event_start=start,
                       event_end=start + timedelta(hours=2), timezone=TZ,
                       holiday_country=country)


def test_forecast_baseline_and_configured_method() -> None:
    forecast = [(datetime(2026, 7, 15, h, tzinfo=UTC), 400.0 + h) for h in range(20, 24)]
    result = compute_baseline(BaselineConfig(method="forecast"), event_start=START,
                              event_end=END, timezone=TZ, forecast=forecast)
    # 21:00 and 22:00 UTC are the event hours: 421, 422.
    assert (result.method, result.baseline_kw) == ("forecast", (421.0, 422.0))
    pjm = compute_baseline(
        BaselineConfig(method="pjm_high_4_of_5", holiday_country="US"), event_start=START,
        event_end=END, timezone=TZ, load=history(FIVE, window_kw=105.0),
        excluded_dates={PAST_EVENT},
    )
    assert pjm.method == "pjm_high_4_of_5"
    assert pjm.baseline_kw == pytest.approx((105.0, 125.0))
    with pytest.raises(InsufficientHistoryError):
        forecast_baseline(forecast[:2], event_start=START, event_end=END)  # ends at 22:00


def test_config_from_stored_mapping() -> None:
    # A facility's stored choice: PJM with the US calendar; CAISO cap widened to 40 %.
    config = BaselineConfig.model_validate({
        "method": "pjm_high_4_of_5", "holiday_country": "US",
        "ten_in_ten": {"adjustment_cap": 0.4},
    })
    assert config.method == "pjm_high_4_of_5"
    assert config.ten_in_ten.adjustment_cap == 0.4
    assert config.high_four_of_five == HighFourOfFiveParams()  # the published defaults
    with pytest.raises(ValueError, match="extra"):
        BaselineConfig.model_validate({"method": "caiso_10_in_10", "cap": 0.2})  # a typo
    with pytest.raises(ValueError, match="min_days"):
        TenInTenParams(days=5, min_days=10)
