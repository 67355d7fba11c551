"""The DR agent's baseline choice on the embedded store: the forecast when one covers the
event, CAISO 10-in-10 with ten weekdays of history, meter-before otherwise; a fixed method
fails with its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agents.dr_baseline_source import BaselineSource, NoBaseline
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.dr import DrEvent
from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.timeseries import CommitBatch

pytestmark = pytest.mark.integration

FAC = Facility(facility_id="fac-001", name="NY", timezone="America/New_York",
               contract_demand_kw=600, country="US")
START = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)  # 14:00 local, a Wednesday
END = START + timedelta(hours=1)


def rollups(start: datetime, end: datetime, window: WindowName, kw: float) -> list[Rollup]:
    step = timedelta(seconds=60 if window is WindowName.MIN_1 else 900)
    out, t = [], start
    while t < end:
        out.append(Rollup(scope=Scope.FACILITY, facility_id=FAC.facility_id, window=window,
                          window_start=t, window_end=t + step, avg_power_kw=kw,
                          max_power_kw=kw, min_power_kw=kw, total_energy_kwh=0.0,
                          sample_count=1, covered_s=step.total_seconds(), coverage=1.0))
        t += step
    return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([FAC])
    yield s
    await s.close()


async def test_the_forecast_first_with_its_band(store: SqliteStore) -> None:
    points = [LoadForecastPoint(timestamp=START + timedelta(minutes=15 * i),
                                predicted_load_kw=400.0, confidence_lower=380.0,
                                confidence_upper=420.0, lower_95=370.0, upper_95=440.0)
              for i in range(-4, 8)]
    await store.upsert_forecast(LoadForecast(facility_id=FAC.facility_id, made_at=START,
                                             model="fourier_ols", weather_used=True,
                                             step_s=900, points=points))
    source = BaselineSource(store, store)
    result = await source.baseline(FAC, event_start=START, event_end=END, now=START)
    assert (result.method, result.interval_s, result.baseline_kw) == ("forecast", 900,
                                                                      (400.0,) * 4)
    # the 80 % band's excess over the forecast (+20 kW) on top of the baseline
    assert await source.upper_band(FAC.facility_id, result) == [420.0] * 4


async def test_ten_in_ten_with_ten_weekdays_of_history(store: SqliteStore) -> None:
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(days=21), START,
                                                   WindowName.MIN_15, 300.0)))
    result = await BaselineSource(store, store).baseline(FAC, event_start=START, event_end=END,
                                                         now=START)
    assert result.method == "caiso_10_in_10" and len(result.days_used) == 10
    assert result.baseline_kw == pytest.approx((300.0,) * 4)


async def test_meter_before_for_a_short_event_off_the_quarter_grid(store: SqliteStore) -> None:
    start = START + timedelta(minutes=7)
    await store.commit(CommitBatch(rollups=rollups(start - timedelta(minutes=20), start,
                                                   WindowName.MIN_1, 250.0)))
    result = await BaselineSource(store, store).baseline(
        FAC, event_start=start, event_end=start + timedelta(minutes=5), now=start)
    assert (result.method, result.interval_s, result.baseline_kw) == ("meter_before", 60,
                                                                      (250.0,) * 5)


async def test_a_fixed_method_fails_with_its_reason(store: SqliteStore) -> None:
    with pytest.raises(NoBaseline, match="forecast: no stored forecast covers the event"):
        await BaselineSource(store, store, method="forecast").baseline(
            FAC, event_start=START, event_end=END, now=START)
    with pytest.raises(NoBaseline) as refused:
        await BaselineSource(store, store).baseline(FAC, event_start=START, event_end=END,
                                                    now=START)
    assert [r.split(":")[0] for r in str(refused.value).split("; ")] == [
        "forecast", "caiso_10_in_10", "meter_before"]


async def test_ten_in_ten_leaves_out_the_facilitys_past_event_days(store: SqliteStore) -> None:
    """A day the facility shed for an earlier event is not a normal day: with it, the
    baseline would be too low and every later event would look like it shed less."""
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(days=21), START,
                                                   WindowName.MIN_15, 300.0)))
    shed_start = START - timedelta(days=2)  # Monday, 14:00 local
    await store.commit(CommitBatch(rollups=rollups(shed_start, shed_start + timedelta(hours=1),
                                                   WindowName.MIN_15, 200.0)))
    await store.insert_dr_event(DrEvent(
        id="0b5c2f0e-6c43-4a57-9f0a-8d3a1c2e4f5a", facility_id=FAC.facility_id,
        source="api", event_start=shed_start, event_end=shed_start + timedelta(hours=1),
        target_reduction_kw=100.0, status="completed", created_at=shed_start,
        updated_at=shed_start))
    knowing = BaselineSource(store, store, method="caiso_10_in_10", events=store)
    result = await knowing.baseline(FAC, event_start=START, event_end=END, now=START)
    assert date(2026, 7, 13) not in result.days_used and len(result.days_used) == 10
    assert result.baseline_kw == pytest.approx((300.0,) * 4)
    unaware = await BaselineSource(store, store, method="caiso_10_in_10").baseline(
        FAC, event_start=START, event_end=END, now=START)
    assert date(2026, 7, 13) in unaware.days_used and unaware.baseline_kw[0] < 300.0


async def test_a_day_ahead_baseline_is_provisional_until_its_adjustment_window_is_metered(
    store: SqliteStore,
) -> None:
    """Notified a day ahead, 10-in-10 has its days but not the event morning that the day-of
    adjustment scales by: the baseline is provisional (unadjusted) and the DR agent plans
    again at the start and settles with the adjusted one."""
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(days=21), START,
                                                   WindowName.MIN_15, 300.0)))
    source = BaselineSource(store, store, method="caiso_10_in_10", events=store)
    ahead = await source.baseline(FAC, event_start=START, event_end=END,
                                  now=START - timedelta(days=1))
    assert ahead.provisional and ahead.adjustment is None
    assert ahead.baseline_kw == pytest.approx((300.0,) * 4)
    # The event morning runs 10 % high: the 3 hours ending an hour before the start.
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(hours=4),
                                                   START - timedelta(hours=1),
                                                   WindowName.MIN_15, 330.0)))
    at_start = await source.baseline(FAC, event_start=START, event_end=END, now=START)
    assert not at_start.provisional and at_start.adjustment is not None
    assert at_start.baseline_kw == pytest.approx((330.0,) * 4)


async def test_a_facility_settles_with_its_own_baseline_method(store: SqliteStore) -> None:
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(days=21), START,
                                                   WindowName.MIN_15, 300.0)))
    pjm_site = FAC.model_copy(update={"dr_baseline": "pjm_high_4_of_5"})
    await store.upsert_facilities([pjm_site])
    [stored] = await store.facilities()
    result = await BaselineSource(store, store).baseline(stored, event_start=START,
                                                         event_end=END, now=START)
    assert result.method == "pjm_high_4_of_5" and len(result.days_used) == 4
