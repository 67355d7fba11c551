"""Load forecasts: one row per facility and time, the newest run's, in SQLite and PostgreSQL
(alone and in the production store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def run(made_at: datetime, first: datetime, kws: list[float], *, model: str = "fourier_ols",
        weather: bool = True, facility_id: str = "plant-a") -> LoadForecast:
    return LoadForecast(
        facility_id=facility_id, made_at=made_at, model=model, weather_used=weather, step_s=900,
        points=[LoadForecastPoint(timestamp=first + i * Q, predicted_load_kw=kw,
                                  confidence_lower=kw - 5, confidence_upper=kw + 5,
                                  lower_95=kw - 9, upper_95=kw + 9)
                for i, kw in enumerate(kws)])


async def test_a_newer_run_replaces_and_a_replayed_older_one_changes_nothing(
    store: RelationalStore,
) -> None:
    await store.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                   for f in ("plant-a", "plant-b")])
    # 12:00 run: 12:00..12:45; 12:15 run: 12:15..13:00, another model, no weather.
    await store.upsert_forecast(run(T0, T0, [10, 11, 12, 13]))
    await store.upsert_forecast(run(T0 + Q, T0 + Q, [21, 22, 23, 24], model="daily_profile",
                                    weather=False))
    await store.upsert_forecast(run(T0 - Q, T0, [90, 91, 92, 93]))  # an 11:45 run, late: old
    await store.upsert_forecast(run(T0, T0, [1, 1], facility_id="plant-b"))

    rows = await store.forecast_rows("plant-a", start=T0, end=T0 + 5 * Q)
    assert [(r.point.timestamp, r.point.predicted_load_kw, r.model, r.made_at, r.weather_used)
            for r in rows] == [
        (T0, 10.0, "fourier_ols", T0, True),  # only the first run covers 12:00
        (T0 + Q, 21.0, "daily_profile", T0 + Q, False),
        (T0 + 2 * Q, 22.0, "daily_profile", T0 + Q, False),
        (T0 + 3 * Q, 23.0, "daily_profile", T0 + Q, False),
        (T0 + 4 * Q, 24.0, "daily_profile", T0 + Q, False),
    ]
    assert rows[1].point.lower_95 == 12.0 and rows[1].point.confidence_upper == 26.0
    # start inclusive, end exclusive
    window = await store.forecast_rows("plant-a", start=T0 + Q, end=T0 + 3 * Q)
    assert [r.point.timestamp for r in window] == [T0 + Q, T0 + 2 * Q]
    assert await store.forecast_rows("plant-c", start=T0, end=T0 + Q) == []
