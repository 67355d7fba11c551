"""``GET /api/facilities/{id}/forecast`` over a real SQLite store, with a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import ApiDeps, create_app
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility
from tests.auth_helpers import authenticator, bearer

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
NOW = datetime(2026, 7, 1, 12, 7, 30, tzinfo=UTC)  # within the 12:00 quarter hour
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def run(made_at: datetime, first: datetime, kws: list[float], model: str) -> LoadForecast:
    return LoadForecast(
        facility_id="plant-a", made_at=made_at, model=model, weather_used=True, step_s=900,
        points=[LoadForecastPoint(timestamp=first + i * Q, predicted_load_kw=kw,
                                  confidence_lower=kw - 10, confidence_upper=kw + 10,
                                  lower_95=kw - 20, upper_95=kw + 20)
                for i, kw in enumerate(kws)])


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    await store.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                   for f in ("plant-a", "plant-b")])
    # An 11:45 run for 12:00-13:00, then a 12:00 run from 12:15 on: 7 quarters in all.
    await store.upsert_forecast(run(T0 - Q, T0, [100, 110, 120, 130], "daily_profile"))
    await store.upsert_forecast(run(T0, T0 + Q, [210, 220, 230, 240, 250, 260], "fourier_ols"))
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                             auth=authenticator(store), clock=lambda: NOW, forecasts=store))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        yield c
    await store.close()


async def get(client: Client, path: str, status: int = 200, **params: str) -> Any:
    resp = await client.get(path, params=params)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_quarter_hours_from_the_current_one_newest_run_wins(client: Client) -> None:
    body = await get(client, "/api/facilities/plant-a/forecast")
    assert body["start_time"] == "2026-07-01T12:00:00+00:00"  # 12:07:30 rounded down
    assert body["end_time"] == "2026-07-02T12:00:00+00:00"
    assert (body["model"], body["made_at"], body["weather_used"]) == (
        "fourier_ols", "2026-07-01T12:00:00+00:00", True)  # the newest run among the points
    # 12:00 from the 11:45 run (100); 12:15.. from the 12:00 run (210..260)
    assert [p["predicted_load_kw"] for p in body["points"]] == [100, 210, 220, 230, 240, 250,
                                                                  260]
    assert body["points"][1] == {"timestamp": "2026-07-01T12:15:00Z", "predicted_load_kw": 210.0,
                                 "confidence_lower": 200.0, "confidence_upper": 220.0,
                                 "lower_95": 190.0, "upper_95": 230.0}


async def test_hourly_means_of_complete_hours(client: Client) -> None:
    body = await get(client, "/api/facilities/plant-a/forecast", granularity="1hour",
                     start_time="2026-07-01T12:30:00Z")
    assert body["start_time"] == "2026-07-01T12:00:00+00:00"  # rounded down to the hour
    # 12:00 hour: (100 + 210 + 220 + 230) / 4 = 190; 13:00 has 240, 250, 260 only: left out.
    assert body["points"] == [{"timestamp": "2026-07-01T12:00:00Z", "predicted_load_kw": 190.0,
                               "confidence_lower": 180.0, "confidence_upper": 200.0,
                               "lower_95": 170.0, "upper_95": 210.0}]


async def test_no_forecast_yet_and_bad_parameters(client: Client) -> None:
    body = await get(client, "/api/facilities/plant-b/forecast")
    assert (body["points"], body["model"], body["made_at"]) == ([], None, None)
    bad = await get(client, "/api/facilities/plant-a/forecast", 400, granularity="5min")
    assert bad["details"] == {"parameter": "granularity", "value": "5min"}
    bad = await get(client, "/api/facilities/plant-a/forecast", 400, start_time="noon")
    assert bad["error_code"] == "invalid_parameter"
    await get(client, "/api/facilities/plant-x/forecast", 404)
