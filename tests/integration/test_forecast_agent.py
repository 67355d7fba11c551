"""The forecast agent over a real SQLite store: what it reads, stores, publishes and counts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from agents.forecast import ForecastService, forecast_agent
from connectors.sqlite import SqliteStore
from connectors.weather import ClimatologyWeather
from core.metrics import Metrics
from schemas.forecast import LoadForecast
from schemas.metadata import Facility
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.timeseries import CommitBatch
from tables.ports.weather import Location, WeatherUnavailable
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

NOW = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)  # a Wednesday
Q = timedelta(minutes=15)
SITE = Facility(facility_id="plant-a", name="A", contract_demand_kw=500,
                timezone="America/Chicago", latitude=41.88, longitude=-87.63, country="US")
NEW = Facility(facility_id="plant-new", name="New", contract_demand_kw=100)


def office_kw(ts: datetime) -> float:
    """A weekday office: 100 kW at night, 300 kW from 8 to 18 local (UTC-5 in July)."""
    local_h = (ts.hour - 5) % 24 + ts.minute / 60
    weekday = (ts - timedelta(hours=5)).weekday() < 5
    day = 200.0 * max(0.0, math.sin(math.pi * (local_h - 6) / 14)) if 6 <= local_h <= 20 else 0
    return 100.0 + (day if weekday else day * 0.2)


def quarters(facility_id: str, days: int) -> list[Rollup]:
    first = NOW - timedelta(days=days)
    out = []
    for i in range(days * 96):
        start = first + i * Q
        kw = office_kw(start)
        out.append(Rollup(scope=Scope.FACILITY, facility_id=facility_id, window=WindowName.MIN_15,
                          window_start=start, window_end=start + Q, avg_power_kw=kw,
                          max_power_kw=kw, min_power_kw=kw, total_energy_kwh=kw / 4,
                          sample_count=60, covered_s=900.0, coverage=1.0))
    return out


class FailingWeather:
    source = "weatherapi"

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def hourly_temperature_c(self, location: Location, *, start: datetime,
                                   end: datetime) -> pd.Series:
        raise WeatherUnavailable("503 from the provider, 3 attempts")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([SITE, NEW])
    await s.commit(CommitBatch(rollups=quarters(SITE.facility_id, 21)))
    yield s
    await s.close()


def service(store: SqliteStore, published: list[LoadForecast], *,
            weather: object | None = None) -> ForecastService:
    async def publish(f: LoadForecast) -> None:
        published.append(f)

    return ForecastService(store, weather or ClimatologyWeather(),  # type: ignore[arg-type]
                           publish=publish, metrics=store.metrics, clock=lambda: NOW)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_cycle_forecasts_the_next_24_h_stores_and_publishes_it(store: SqliteStore) -> None:
    published: list[LoadForecast] = []
    svc = service(store, published)
    made = await svc.run_cycle()
    svc.close()

    assert [f.facility_id for f in made] == ["plant-a"]  # plant-new has no history yet
    forecast = made[0]
    assert published == made
    assert forecast.made_at == NOW and forecast.step_s == 900 and forecast.weather_used
    stamps = [p.timestamp for p in forecast.points]
    assert stamps == [NOW + i * Q for i in range(96)]  # 12:00 .. 11:45 tomorrow
    for p in forecast.points:  # the model validates nesting; the level must be plausible
        assert 50 < p.predicted_load_kw < 400
    # Wednesday 14:00 local (19:00 UTC) is office hours, 02:00 local (07:00 UTC) is night.
    by_time = {p.timestamp: p.predicted_load_kw for p in forecast.points}
    assert by_time[datetime(2026, 7, 15, 19, tzinfo=UTC)] > 2 * by_time[
        datetime(2026, 7, 16, 7, tzinfo=UTC)]

    rows = await store.forecast_rows("plant-a", start=NOW, end=NOW + timedelta(days=1))
    assert [r.point for r in rows] == forecast.points
    assert {r.model for r in rows} == {forecast.model}

    m = store.metrics
    assert sample(m, "sems_forecasts_total", result="ok") == 1
    assert sample(m, "sems_forecasts_total", result="no_history") == 1
    assert sample(m, "sems_forecast_last_success_timestamp_seconds",
                  facility_id="plant-a") == NOW.timestamp()
    assert sample(m, "sems_forecast_weather_used", facility_id="plant-a") == 1


async def test_without_weather_the_forecast_is_still_made_and_says_so(
    store: SqliteStore,
) -> None:
    published: list[LoadForecast] = []
    svc = service(store, published, weather=FailingWeather())
    made = await svc.run_cycle([SITE])
    svc.close()
    assert len(made) == 1 and not made[0].weather_used
    assert sample(store.metrics, "sems_forecast_weather_failures_total") == 1
    assert sample(store.metrics, "sems_forecast_weather_used", facility_id="plant-a") == 0


async def test_the_backtest_choice_is_made_in_the_background_and_then_used(
    store: SqliteStore,
) -> None:
    svc = service(store, [])
    first = await svc.run_cycle([SITE])
    assert first[0].model == "fourier_ols"  # the default until a choice is made
    choice = await svc.choose(SITE)
    second = await svc.run_cycle([SITE])
    svc.close()
    assert second[0].model == choice.model
    assert choice.scores  # 21 days are enough for a rolling-origin evaluation


async def test_the_agent_retries_a_facility_once_it_has_history(store: SqliteStore) -> None:
    """A new facility has nothing to forecast from in its first minutes; the agent tries
    again later in the same period instead of waiting for the next one."""
    published: list[LoadForecast] = []
    svc = service(store, published)

    def forecast_of(facility_id: str) -> Callable[[], Awaitable[bool]]:
        async def made() -> bool:
            return any(f.facility_id == facility_id for f in published)
        return made

    task = asyncio.create_task(forecast_agent(svc, interval_s=900, delay_s=60, poll_s=0.01,
                                              retry_s=0.05))
    try:
        await eventually(forecast_of("plant-a"), timeout_s=30, what="plant-a's forecast")
        assert not await forecast_of("plant-new")()
        await store.commit(CommitBatch(rollups=quarters("plant-new", 2)))
        await eventually(forecast_of("plant-new"), timeout_s=30, what="plant-new's forecast")
        # plant-a is forecast once per period, however often the agent looks
        assert sum(f.facility_id == "plant-a" for f in published) == 1
    finally:
        task.cancel()
        svc.close()
