"""The production profile against its real servers going away and coming back.

* PostgreSQL stopped: the API answers 503 with the standard error body, and answers again by
  itself once the server is back.
* InfluxDB stopped for a minute while readings keep flowing through Kafka: the worker stops
  taking readings (they wait in Kafka), its memory stays bounded, and once InfluxDB is back
  every reading and every rollup arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import ApiDeps, create_app
from connectors import kafka as topics
from connectors.postgres.migrate import upgrade
from connectors.production import ProductionStore
from core.metrics import Metrics
from schemas.metadata import Facility
from schemas.rollup import Rollup, Scope, WindowName
from simulators.fleet import build_fleet
from simulators.publish import Simulation
from streams.stores import build_store
from tables.ports.store import Store, StoreUnavailable
from tests.auth_helpers import authenticator, bearer
from tests.integration.helpers import eventually, production_settings
from tests.integration.kafka_helpers import (
    IDLE_TIMEOUT_S,
    PARTITIONS,
    Outcome,
    Recorded,
    Worker,
    committed_offsets,
    ingested,
    local_baseline,
    produce,
    rounded,
)
from tests.servers import InfluxDB, Kafka, Postgres

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
ERROR_KEYS = {"error_code", "message", "details"}


@pytest.fixture
async def api_on_own_postgres(tmp_path: Path, influxdb: InfluxDB,
                              own_postgres: Postgres) -> AsyncIterator[tuple[Client, Store]]:
    upgrade(own_postgres.dsn)
    store = build_store(production_settings(tmp_path, influxdb, own_postgres.dsn,
                                            postgres_timeout_s=1.0), Metrics())
    await store.open()
    await store.upsert_facilities([Facility(facility_id="plant-1", name="Plant 1",
                                            contract_demand_kw=300)])
    app = create_app(ApiDeps(timeseries=store, metadata=store, metrics=Metrics(),
                             auth=authenticator(store)))
    async with TestClient(TestServer(app), headers=bearer()) as client:
        yield client, store
    await store.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


async def status_and_body(client: Client, path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def test_postgres_down_gives_503_with_the_error_body_then_recovers_by_itself(
    api_on_own_postgres: tuple[Client, Store], own_postgres: Postgres,
) -> None:
    client, _ = api_on_own_postgres
    status, body = await status_and_body(client, "/api/facilities")
    assert status == 200 and [f["facility_id"] for f in body["facilities"]] == ["plant-1"]

    own_postgres.stop()
    started = time.monotonic()
    for path in ("/api/facilities", "/api/facilities/plant-1/current", "/healthz"):
        status, body = await status_and_body(client, path)
        assert status == 503, (path, body)
        if path != "/healthz":
            assert set(body) == ERROR_KEYS and body["error_code"] == "store_unavailable"
            assert "postgres" not in body["message"].lower()  # no internals
    assert time.monotonic() - started < 15, "each 503 should come within the pool timeout"

    own_postgres.start()

    async def answers_again() -> bool:
        status, _ = await status_and_body(client, "/api/facilities")
        return status == 200

    await eventually(answers_again, timeout_s=30, what="the API answering after PostgreSQL")
    status, body = await status_and_body(client, "/healthz")
    assert status == 200, body


# -- InfluxDB away for a minute while readings flow -------------------------------------------

OUTAGE_S = 60.0
FACILITIES, METERS = 20, 5
BEFORE_MIN, DURING_MIN = 10, 240  # 4,000 readings first, then 96,000 during the outage
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def influx_readings(store: ProductionStore) -> int:
    """Readings InfluxDB holds, counted by a Flux query of our own."""
    bucket = store.influx.buckets.raw
    flux = (f'from(bucket: "{bucket}") |> range(start: 0) '
            '|> filter(fn: (r) => r._measurement == "energy_readings" and '
            'r._field == "active_power_kw") |> group() |> count()')
    try:
        tables = await store.influx.query(flux)
    except StoreUnavailable:
        return -1
    return sum(int(rec.values["_value"]) for table in tables for rec in table.records)


async def test_influxdb_away_for_a_minute_loses_nothing_and_memory_stays_bounded(
    tmp_path: Path, own_kafka: Kafka, own_influxdb: InfluxDB, pg_database: str,
    workers: list[Worker],
) -> None:
    fleet = build_fleet(facilities=FACILITIES, meters_per_facility=METERS, seed=11)
    recorded: Recorded = []

    async def keep(topic: str, payload: bytes) -> None:
        recorded.append((topic, payload))

    await Simulation(fleet, keep, seed=3).run_range(
        START, START + timedelta(minutes=BEFORE_MIN + DURING_MIN))
    records = ingested(fleet, recorded)
    first = (FACILITIES * METERS) * BEFORE_MIN * 4
    baseline = await local_baseline(tmp_path / "baseline", fleet, recorded,
                                    expected_readings=len(records))

    cfg = production_settings(tmp_path, own_influxdb, pg_database,
                              kafka_bootstrap=own_kafka.bootstrap,
                     kafka_partitions=PARTITIONS, kafka_app_id=f"sems-{uuid.uuid4().hex[:6]}",
                     idle_timeout_s=IDLE_TIMEOUT_S)
    store = build_store(cfg, Metrics())
    assert isinstance(store, ProductionStore)
    await store.open()
    try:
        await store.upsert_facilities(list(fleet.facilities))
        await store.upsert_meters(list(fleet.meters))
        await topics.ensure_topics(own_kafka.bootstrap,
                                   topics.topic_specs(partitions=PARTITIONS))
        env = {"SEMS_PROFILE": "production", "SEMS_INFLUX_URL": cfg.influx_url,
               "SEMS_INFLUX_BUCKET_PREFIX": cfg.influx_bucket_prefix,
               "SEMS_POSTGRES_DSN": pg_database, "SEMS_INFLUX_TIMEOUT_S": "2"}
        worker = Worker(own_kafka.bootstrap, cfg.data_dir, cfg.kafka_app_id,
                        tmp_path / "worker.log", env=env).start()
        workers.append(worker)
        assert worker.process is not None
        await produce(own_kafka.bootstrap, records[:first])

        async def first_stored() -> bool:
            return await influx_readings(store) == first

        # Counting 100,000 readings is a query InfluxDB works at: once a second, not every
        # 50 ms, or the test's own polling slows the recovery it waits for.
        await eventually(first_stored, timeout_s=60, what="the first readings in InfluxDB",
                         poll_s=1.0)
        rss_before = rss_mb(worker.process.pid)
        committed_before = sum((await committed_offsets(own_kafka.bootstrap,
                                                        cfg.kafka_app_id)).values())

        own_influxdb.stop()
        outage_started = time.monotonic()
        peak = rss_before
        pending = records[first:]
        chunk = len(pending) // 40
        for i in range(0, len(pending), chunk):
            await produce(own_kafka.bootstrap, pending[i:i + chunk])
            peak = max(peak, rss_mb(worker.process.pid))
            await asyncio.sleep(max(0.0, outage_started + (i / len(pending)) * OUTAGE_S * 0.8
                                    - time.monotonic()))
        while time.monotonic() - outage_started < OUTAGE_S:
            peak = max(peak, rss_mb(worker.process.pid))
            assert worker.alive, worker.log()[-3000:]
            await asyncio.sleep(0.5)
        committed_during = sum((await committed_offsets(own_kafka.bootstrap,
                                                        cfg.kafka_app_id)).values())
        own_influxdb.start()

        # The readings of the outage waited in Kafka, not in the worker's memory.
        assert committed_during - committed_before < 10_000, "the worker kept consuming"
        # What the worker holds is bounded by batches (a fetch being delivered, two queued, one
        # folded, two waiting for the store, one being retried: 20-24 MB measured), not by the
        # outage: taking in all 96,000 readings grew it by 76-81 MB.
        assert peak - rss_before < 50, f"worker RSS grew {peak - rss_before:.0f} MB"

        async def all_stored() -> bool:
            return await influx_readings(store) == len(records)

        await eventually(all_stored, timeout_s=150, what="every reading in InfluxDB",
                         poll_s=1.0)
        for f in fleet.facilities:
            for window in WindowName:
                expected = baseline_rollups(baseline, f.facility_id, window)
                got = await store.rollups(scope=Scope.FACILITY, scope_id=f.facility_id,
                                          window=window, start=START - timedelta(days=1),
                                          end=START + timedelta(days=1), limit=10_000)
                assert [rollup_row(r) for r in got] == expected, (f.facility_id, window)
        log = worker.log()
        assert "Traceback" not in log, log[max(0, log.find("Traceback") - 400):][:4000]
    finally:
        await store.close()


def rollup_row(r: Rollup) -> tuple[Any, ...]:
    """A rollup as the baseline's SQLite rows show it (epoch ms)."""
    return rounded((r.scope.value, r.meter_id or r.facility_id, r.window.value,
                    round(r.window_start.timestamp() * 1000), r.sample_count,
                    r.total_energy_kwh, r.avg_power_kw, r.max_power_kw, r.min_power_kw,
                    r.coverage))


def baseline_rollups(baseline: Outcome, facility_id: str,
                     window: WindowName) -> list[tuple[Any, ...]]:
    return [row for row in baseline.rollups
            if row[0] == Scope.FACILITY.value and row[1] == facility_id
            and row[2] == window.value]
