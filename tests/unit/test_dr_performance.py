"""Achieved reduction = baseline - metered, worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.dr.baselines import BaselineResult
from agents.dr.performance import InsufficientMeterDataError, achieved_reduction

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 21, tzinfo=UTC)
QUARTERS = tuple(T0 + timedelta(minutes=15 * i) for i in range(4))


def baseline(kw: tuple[float, ...], interval_s: int) -> BaselineResult:
    starts = tuple(T0 + timedelta(seconds=interval_s * i) for i in range(len(kw)))
    return BaselineResult(method="caiso_10_in_10", interval_s=interval_s, interval_starts=starts,
                          baseline_kw=kw, unadjusted_kw=kw)


@pytest.mark.parametrize(
    ("metered", "achieved", "average", "coverage", "kwh", "percent", "meeting"),
    [
        # 100-70, 100-75, 120-95, 120-100 = 30, 25, 25, 20: average 25 = 100 % of 25 kW;
        # 3 intervals at or above target; energy (30+25+25+20) x 0.25 h = 25 kWh.
        ([70.0, 75.0, 95.0, 100.0], [30.0, 25.0, 25.0, 20.0], 25.0, 1.0, 25.0, 100.0, 3),
        # Third quarter not metered: left out, not counted as zero load. (30+25+20)/3 = 25,
        # coverage 3/4, energy 75 x 0.25 = 18.75 kWh.
        ([70.0, 75.0, None, 100.0], [30.0, 25.0, None, 20.0], 25.0, 0.75, 18.75, 100.0, 2),
        # Load went up: a negative reduction, -10 / 25 = -40 %.
        ([110.0, 110.0, 130.0, 130.0], [-10.0, -10.0, -10.0, -10.0], -10.0, 1.0, -10.0, -40.0, 0),
    ],
)
def test_achieved_reduction(
    metered: list[float | None], achieved: list[float | None], average: float,
    coverage: float, kwh: float, percent: float, meeting: int,
) -> None:
    readings = [(ts, kw) for ts, kw in zip(QUARTERS, metered, strict=True) if kw is not None]
    report = achieved_reduction(baseline((100.0, 100.0, 120.0, 120.0), 900), readings,
                                target_reduction_kw=25.0, event_id="evt-1")
    assert [i.achieved_reduction_kw for i in report.intervals] == achieved
    assert report.average_achieved_reduction_kw == pytest.approx(average)
    assert (report.coverage, report.energy_reduction_kwh) == pytest.approx((coverage, kwh))
    assert report.percent_of_target == pytest.approx(percent)
    assert report.intervals_meeting_target == meeting
    assert report.to_dict()["event_id"] == "evt-1"


def test_quarter_hours_fold_into_an_hourly_baseline() -> None:
    # Hour 1: (80+80+90+90)/4 = 85 -> 100 - 85 = 15. Hour 2 misses a quarter: no value.
    quarters = [(T0 + timedelta(minutes=15 * i), kw)
                for i, kw in enumerate([80.0, 80.0, 90.0, 90.0, 100.0, 100.0, 100.0])]
    report = achieved_reduction(baseline((100.0, 120.0), 3600), quarters)
    assert [i.metered_kw for i in report.intervals] == [85.0, None]
    assert report.average_achieved_reduction_kw == pytest.approx(15.0)
    assert report.coverage == 0.5
    assert report.percent_of_target is None


@pytest.mark.parametrize(
    "readings",
    [
        [],  # nothing metered
        [(T0 - timedelta(hours=1), 50.0)],  # only before the event
        [(T0, 50.0), (T0 + timedelta(hours=2), 50.0)],  # 2 h metering, 15-min baseline
    ],
)
def test_unusable_metering(readings: list[tuple[datetime, float]]) -> None:
    with pytest.raises(InsufficientMeterDataError):
        achieved_reduction(baseline((100.0,) * 4, 900), readings)
