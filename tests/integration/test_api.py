"""The dashboard API over a real SQLite store: facilities, live status, rollups, errors, health
and metrics. The clock is fixed so that ages are exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from api import ApiDeps, create_app
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.metadata import Facility, Meter, MeterType
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tests.auth_helpers import authenticator, bearer

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ERROR_KEYS = {"error_code", "message", "details"}


def fixed_clock() -> datetime:
    return NOW


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 1, 1, hh, mm, ss, tzinfo=UTC)


FACILITIES = [
    Facility(facility_id="plant-1", name="Plant 1", timezone="Europe/Paris",
             contract_demand_kw=300),
    Facility(facility_id="plant-2", name="Plant 2", contract_demand_kw=100),
]
METERS = [
    Meter(meter_id="p1-main-a", facility_id="plant-1", meter_type=MeterType.MAIN,
          sample_interval_s=15.0),
    Meter(meter_id="p1-main-b", facility_id="plant-1", meter_type=MeterType.MAIN,
          sample_interval_s=15.0),
    Meter(meter_id="p1-hvac", facility_id="plant-1", meter_type=MeterType.HVAC,
          sample_interval_s=30.0),
    Meter(meter_id="p2-main", facility_id="plant-2", meter_type=MeterType.MAIN,
          sample_interval_s=15.0),
]
METER_TYPES = {m.meter_id: m.meter_type for m in METERS}


def reading(meter_id: str, ts: datetime, kw: float) -> SensorReading:
    facility_id = "plant-2" if meter_id.startswith("p2") else "plant-1"
    return SensorReading(facility_id=facility_id, meter_id=meter_id,
                         meter_type=METER_TYPES[meter_id], timestamp=ts, active_power_kw=kw,
                         reactive_power_kvar=kw / 10, voltage_v=400.0, frequency_hz=50.0)


READINGS = [
    reading("p1-main-a", at(11, 58, 30), 100.0),  # older: must not count
    reading("p1-main-a", at(11, 59, 45), 121.0),  # latest of main-a
    reading("p1-main-b", at(11, 59, 0), 80.0),  # older: must not count
    reading("p1-main-b", at(11, 59, 30), 90.0),  # latest of main-b, the oldest main
    reading("p1-hvac", at(11, 59, 50), 40.0),  # a submeter: not in the total
    reading("p2-main", at(11, 59, 55), 999.0),  # another facility
]


def rollup(start: datetime, *, window: WindowName = WindowName.MIN_1,
           meter_id: str | None = None, kw: float) -> Rollup:
    size_s = {WindowName.MIN_1: 60, WindowName.MIN_15: 900, WindowName.HOUR_1: 3600}[window]
    return Rollup(
        scope=Scope.METER if meter_id else Scope.FACILITY,
        facility_id="plant-1",
        meter_id=meter_id,
        window=window,
        window_start=start,
        window_end=start + timedelta(seconds=size_s),
        avg_power_kw=kw,
        max_power_kw=kw + 5,
        min_power_kw=None if meter_id is None and kw < 150 else kw - 5,
        total_energy_kwh=kw * size_s / 3600,
        sample_count=size_s // 15 * (1 if meter_id else 2),
        covered_s=float(size_s),
        coverage=1.0,
    )


# 1-min facility and meter rollups for 11:50..11:57, and two quarter hours.
FACILITY_MINUTES = [rollup(at(11, m), kw=200.0 + m) for m in range(50, 58)]
MAIN_A_MINUTES = [rollup(at(11, m), meter_id="p1-main-a", kw=100.0 + m) for m in range(50, 58)]
QUARTERS = [rollup(at(11, m), window=WindowName.MIN_15, kw=140.0 + m) for m in (30, 45)]


def dumped(rollups: list[Rollup]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in rollups]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities(FACILITIES)
    await s.upsert_meters(METERS)
    # Stored out of order: the API must sort.
    await s.commit(CommitBatch(
        readings=READINGS,
        rollups=[*reversed(FACILITY_MINUTES), *MAIN_A_MINUTES, *reversed(QUARTERS)],
    ))
    yield s
    await s.close()


@pytest.fixture
async def client(store: SqliteStore) -> AsyncIterator[Client]:
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                             clock=fixed_clock, auth=authenticator(store)))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        yield c


async def get_json(client: Client, path: str, *, status: int = 200,
                   params: dict[str, str] | None = None) -> Any:
    resp = await client.get(path, params=params)
    body = await resp.json()
    assert resp.status == status, body
    assert resp.content_type == "application/json"
    return body


# -- facilities ----------------------------------------------------------------------------


async def test_facilities_lists_each_facility_with_its_meters(client: Client) -> None:
    body = await get_json(client, "/api/facilities")
    assert body == {"facilities": [
        {
            "facility_id": "plant-1", "name": "Plant 1", "timezone": "Europe/Paris",
            "contract_demand_kw": 300.0, "latitude": None, "longitude": None, "country": None,
            "dr_baseline": None,
            "meters": [  # ordered by meter id
                {"meter_id": "p1-hvac", "meter_type": "hvac", "sample_interval_s": 30.0},
                {"meter_id": "p1-main-a", "meter_type": "main", "sample_interval_s": 15.0},
                {"meter_id": "p1-main-b", "meter_type": "main", "sample_interval_s": 15.0},
            ],
        },
        {
            "facility_id": "plant-2", "name": "Plant 2", "timezone": "UTC",
            "contract_demand_kw": 100.0, "latitude": None, "longitude": None, "country": None,
            "dr_baseline": None,
            "meters": [
                {"meter_id": "p2-main", "meter_type": "main", "sample_interval_s": 15.0},
            ],
        },
    ]}


# -- current -------------------------------------------------------------------------------


async def test_current_sums_the_latest_reading_of_each_main_meter(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/current")
    # Latest mains only: 121 (main-a at 11:59:45) + 90 (main-b at 11:59:30) = 211 kW; the
    # hvac submeter (40), the older readings (100, 80) and plant-2 (999) are left out.
    assert body["total_power_kw"] == 211.0
    assert body["contract_demand_kw"] == 300.0
    # 100 * 211 / 300 = 70.333... -> 70.33
    assert body["contract_utilization_pct"] == 70.33
    # The oldest of the mains' latest readings is main-b at 11:59:30: 30 s before 12:00:00.
    assert body["data_timestamp"] == "2026-01-01T11:59:30+00:00"
    assert body["data_age_s"] == 30.0
    assert body["as_of"] == "2026-01-01T12:00:00+00:00"
    assert body["facility_id"] == "plant-1"
    # Every meter's latest reading, submeters included, with its age.
    assert [(m["meter_id"], m["meter_type"], m["active_power_kw"], m["age_s"])
            for m in body["meters"]] == [
        ("p1-hvac", "hvac", 40.0, 10.0),
        ("p1-main-a", "main", 121.0, 15.0),
        ("p1-main-b", "main", 90.0, 30.0),
    ]
    assert body["meters"][1] == {
        "meter_id": "p1-main-a", "meter_type": "main", "timestamp": "2026-01-01T11:59:45Z",
        "active_power_kw": 121.0, "reactive_power_kvar": 12.1, "voltage_v": 400.0,
        "frequency_hz": 50.0, "age_s": 15.0,
    }


async def test_current_without_readings_has_no_total(store: SqliteStore) -> None:
    await store.upsert_facilities([Facility(facility_id="plant-3", name="New",
                                            contract_demand_kw=50)])
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=store.metrics,
                             clock=fixed_clock, auth=authenticator(store)))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        body = await get_json(c, "/api/facilities/plant-3/current")
    assert (body["total_power_kw"], body["contract_utilization_pct"], body["data_age_s"],
            body["meters"]) == (None, None, None, [])


# -- rollups -------------------------------------------------------------------------------


async def test_rollups_in_range_start_inclusive_end_exclusive(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/rollups", params={
        "window": "1m", "start": "2026-01-01T11:52:00Z", "end": "2026-01-01T11:55:00Z",
    })
    # 11:52 (= start) is in, 11:55 (= end) is out: 11:52, 11:53, 11:54, sorted by time.
    assert body["rollups"] == dumped(FACILITY_MINUTES[2:5])
    assert [r["window_start"] for r in body["rollups"]] == [
        "2026-01-01T11:52:00Z", "2026-01-01T11:53:00Z", "2026-01-01T11:54:00Z",
    ]
    assert {k: v for k, v in body.items() if k != "rollups"} == {
        "facility_id": "plant-1", "scope": "facility", "meter_id": None, "window": "1m",
        "start": "2026-01-01T11:52:00+00:00", "end": "2026-01-01T11:55:00+00:00",
        "truncated": False,
    }


async def test_rollups_accept_an_offset(client: Client) -> None:
    # 12:52+01:00 is 11:52Z; the "+" must be percent-encoded in a URL (params= does it).
    body = await get_json(client, "/api/facilities/plant-1/rollups", params={
        "window": "1m", "start": "2026-01-01T12:52:00+01:00", "end": "2026-01-01T11:54:00Z",
    })
    assert body["rollups"] == dumped(FACILITY_MINUTES[2:4])


async def test_rollups_of_one_meter(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/rollups", params={
        "window": "1m", "meter_id": "p1-main-a",
        "start": "2026-01-01T11:52:00Z", "end": "2026-01-01T11:55:00Z",
    })
    assert (body["scope"], body["meter_id"]) == ("meter", "p1-main-a")
    assert body["rollups"] == dumped(MAIN_A_MINUTES[2:5])


async def test_rollups_default_to_15m_over_the_last_day(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/rollups")
    assert (body["window"], body["start"], body["end"]) == (
        "15m", "2025-12-31T12:00:00+00:00", "2026-01-01T12:00:00+00:00",
    )
    assert body["rollups"] == dumped(QUARTERS)


async def test_rollups_limit_truncates(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/rollups", params={
        "window": "1m", "limit": "2",
        "start": "2026-01-01T11:52:00Z", "end": "2026-01-01T11:55:00Z",
    })
    assert body["truncated"] is True
    assert body["rollups"] == dumped(FACILITY_MINUTES[2:4])


async def test_rollups_of_an_empty_range(client: Client) -> None:
    body = await get_json(client, "/api/facilities/plant-1/rollups", params={
        "window": "1h", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T12:00:00Z",
    })
    assert (body["rollups"], body["truncated"]) == ([], False)


# -- errors --------------------------------------------------------------------------------

ROLLUPS = "/api/facilities/plant-1/rollups"
T1 = "2026-01-01T11:00:00Z"
T2 = "2026-01-01T11:30:00Z"


@pytest.mark.parametrize(
    ("path", "params", "status", "error_code", "details"),
    [
        pytest.param("/api/facilities/nope/current", {}, 404, "facility_not_found",
                     {"facility_id": "nope"}, id="unknown-facility-current"),
        pytest.param("/api/facilities/nope/rollups", {"window": "1m"}, 404,
                     "facility_not_found", {"facility_id": "nope"}, id="unknown-facility-rollups"),
        pytest.param(ROLLUPS, {"window": "5m"}, 400, "invalid_parameter",
                     {"parameter": "window", "value": "5m"}, id="bad-window"),
        pytest.param(ROLLUPS, {"start": "2026-01-01T11:00:00", "end": T2}, 400,
                     "invalid_parameter", {"parameter": "start", "value": "2026-01-01T11:00:00"},
                     id="naive-start"),
        pytest.param(ROLLUPS, {"end": "2026-01-01T11:30:00"}, 400, "invalid_parameter",
                     {"parameter": "end", "value": "2026-01-01T11:30:00"}, id="naive-end"),
        pytest.param(ROLLUPS, {"start": "yesterday"}, 400, "invalid_parameter",
                     {"parameter": "start", "value": "yesterday"}, id="unparseable-start"),
        pytest.param(ROLLUPS, {"start": T1, "end": T1}, 400, "invalid_parameter",
                     {"parameter": "start", "start": "2026-01-01T11:00:00+00:00",
                      "end": "2026-01-01T11:00:00+00:00"}, id="start-equals-end"),
        pytest.param(ROLLUPS, {"start": T2, "end": T1}, 400, "invalid_parameter",
                     {"parameter": "start", "start": "2026-01-01T11:30:00+00:00",
                      "end": "2026-01-01T11:00:00+00:00"}, id="start-after-end"),
        pytest.param(ROLLUPS, {"meter_id": "nope"}, 404, "meter_not_found",
                     {"meter_id": "nope"}, id="unknown-meter"),
        # A real meter, but of another facility.
        pytest.param(ROLLUPS, {"meter_id": "p2-main"}, 404, "meter_not_found",
                     {"meter_id": "p2-main"}, id="meter-of-another-facility"),
        pytest.param(ROLLUPS, {"limit": "0"}, 400, "invalid_parameter",
                     {"parameter": "limit", "value": 0}, id="limit-zero"),
        pytest.param(ROLLUPS, {"limit": "ten"}, 400, "invalid_parameter",
                     {"parameter": "limit", "value": "ten"}, id="limit-not-integer"),
        pytest.param("/api/nothing", {}, 404, "not_found", {"path": "/api/nothing"},
                     id="unknown-route"),
        pytest.param("/api/facilities/plant-1", {}, 404, "not_found",
                     {"path": "/api/facilities/plant-1"}, id="facility-without-subresource"),
    ],
)
async def test_errors_have_the_standard_body(client: Client, path: str, params: dict[str, str],
                                             status: int, error_code: str,
                                             details: dict[str, Any]) -> None:
    body = await get_json(client, path, status=status, params=params)
    assert set(body) == ERROR_KEYS
    assert body["error_code"] == error_code
    assert isinstance(body["message"], str) and body["message"]
    assert body["details"] == details


async def test_wrong_method_has_the_standard_body(client: Client) -> None:
    resp = await client.post("/api/facilities")
    body = await resp.json()
    assert resp.status == 405
    assert set(body) == ERROR_KEYS
    assert body["error_code"] == "method_not_allowed"


# -- health and metrics --------------------------------------------------------------------


async def test_healthz_ok(client: Client) -> None:
    body = await get_json(client, "/healthz")
    assert body == {"status": "ok", "checks": {"store": {"ok": True}}}


async def test_metrics_count_requests_by_route(client: Client) -> None:
    await get_json(client, "/api/facilities")
    await get_json(client, "/api/facilities/plant-1/current")
    await get_json(client, "/api/facilities/plant-1/current")
    await get_json(client, "/api/facilities/nope/current", status=404)
    await get_json(client, "/api/nothing", status=404)

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "sems_api_requests_total" in text
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "sems_api_requests_total"
    }
    # Routes are labelled by their pattern, not the concrete path, so cardinality is bounded.
    assert requests == {
        ("/api/facilities", "GET", "200"): 1.0,
        ("/api/facilities/{facility_id}/current", "GET", "200"): 2.0,
        ("/api/facilities/{facility_id}/current", "GET", "404"): 1.0,
        ("unmatched", "GET", "404"): 1.0,
    }


# -- store unavailable ---------------------------------------------------------------------


class UnavailableMetadata:
    """A metadata store whose backend is down."""

    async def facilities(self) -> list[Facility]:
        raise StoreUnavailable("connection refused")

    async def facility(self, facility_id: str) -> Facility | None:
        raise StoreUnavailable("connection refused")

    async def meters(self) -> list[Meter]:
        raise StoreUnavailable("connection refused")

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        raise StoreUnavailable("connection refused")

    async def upsert_meters(self, meters: list[Meter]) -> None:
        raise StoreUnavailable("connection refused")

    async def ping(self) -> None:
        raise StoreUnavailable("connection refused")


async def test_unavailable_store_answers_503(store: SqliteStore) -> None:
    app = create_app(ApiDeps(timeseries=store, metadata=UnavailableMetadata(),
                             metrics=store.metrics, clock=fixed_clock,
                             auth=authenticator(store)))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        body = await get_json(c, "/api/facilities", status=503)
        assert set(body) == ERROR_KEYS
        assert body["error_code"] == "store_unavailable"
        body = await get_json(c, "/api/facilities/plant-1/current", status=503)
        assert body["error_code"] == "store_unavailable"
        health = await get_json(c, "/healthz", status=503)
    # Public, so no internals: the detail goes to the log.
    assert health == {"status": "degraded", "checks": {"store": {"ok": False}}}


@pytest.mark.parametrize("path", ["/healthz", "/api/facilities"])
async def test_closed_store_answers_503(tmp_path: Path, path: str) -> None:
    metrics = Metrics()
    closed = SqliteStore(tmp_path / "closed.db", metrics=metrics)
    await closed.open()
    await closed.close()
    app = create_app(ApiDeps(timeseries=closed, metadata=closed, metrics=metrics,
                             clock=fixed_clock, auth=authenticator(closed)))
    async with TestClient(TestServer(app), headers=bearer()) as c:
        resp = await c.get(path)
        body = await resp.json()
    assert resp.status == 503, (
        f"a closed SqliteStore should raise StoreUnavailable (503), got {resp.status} {body}"
    )


async def test_every_answer_names_its_trace_id(client: Client) -> None:
    """On-call finds a user's failing request in the logs by the id the caller sent (W3C
    ``traceparent``, or ``X-Request-ID``), or by the one SEMS made and answered."""
    w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = await client.get("/api/facilities", headers={"traceparent": w3c})
    assert resp.headers["X-Trace-Id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = await client.get("/api/facilities/nope/current", headers={"X-Request-ID": "req-42"})
    assert resp.status == 404 and resp.headers["X-Trace-Id"] == "req-42"
    resp = await client.get("/no/such/route")
    assert resp.status == 404 and len(resp.headers["X-Trace-Id"]) == 32
