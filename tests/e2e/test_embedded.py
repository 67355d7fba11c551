"""The system as a user runs it: ``sems run`` consuming a real Mosquitto broker, ``sems
simulate`` publishing two hours of a fleet with duplicates, out-of-order, late and malformed
messages, and a ``kill -9`` of SEMS in the middle. The rollups served by the API must equal an
independent recomputation from exactly what the simulator published.

It runs three ways: the embedded default (local runtime, SQLite), the kafka runtime with
SQLite, and the production profile (kafka runtime, InfluxDB, PostgreSQL, Redis)."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from simulators.fleet import build_fleet
from tests.integration.kafka_helpers import kcat
from tests.oracle import expected_rollups
from tests.servers import (
    INFLUX_ORG,
    INFLUX_TOKEN,
    InfluxDB,
    Kafka,
    Mosquitto,
    Redis,
    free_port,
    kill_group,
    spawn,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.e2e

FACILITIES, METERS, SEED = 3, 6, 11  # 6 meters: two main meters per facility
HALF_S = 3600 + 60
SEMS = [sys.executable, "-m", "streams.cli"]


class SqliteCounts:
    """What the embedded store holds, read with a connection of our own."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def _one(self, sql: str) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return int(conn.execute(sql).fetchone()[0] or 0)

    def readings(self) -> int:
        return self._one("SELECT COUNT(*) FROM readings")

    def closed_until_ms(self) -> int:
        return self._one("SELECT MIN(closed_until_ms) FROM window_checkpoints")

    def dead_letters(self) -> int:
        return self._one("SELECT COUNT(*) FROM dead_letters")


class ProductionCounts:
    """What InfluxDB and PostgreSQL hold, read with clients of our own."""

    def __init__(self, influx: InfluxDB, bucket_prefix: str, dsn: str) -> None:
        self.influx = influx
        self.bucket = f"{bucket_prefix}_raw"
        self.dsn = dsn

    def readings(self) -> int:
        flux = (f'from(bucket: "{self.bucket}") |> range(start: 0) '
                '|> filter(fn: (r) => r._measurement == "energy_readings" and '
                'r._field == "active_power_kw") |> group() |> count()')
        with InfluxDBClient(url=self.influx.url, token=INFLUX_TOKEN, org=INFLUX_ORG) as client:
            try:
                tables = client.query_api().query(flux)
            except ApiException:  # the bucket does not exist yet
                return 0
        return sum(int(rec.values["_value"]) for t in tables for rec in t.records)

    def _one(self, sql: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0

    def closed_until_ms(self) -> int:
        return self._one("SELECT MIN(closed_until_ms) FROM window_checkpoints")

    def dead_letters(self) -> int:
        return self._one("SELECT COUNT(*) FROM dead_letters")


class Sems:
    def __init__(self, workdir: Path, broker: Mosquitto, kafka: Kafka | None = None,
                 production: dict[str, str] | None = None,
                 counts: SqliteCounts | ProductionCounts | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.counts = counts or SqliteCounts(workdir / "data" / "sems.db")
        self.args = [*SEMS, "run", "--mqtt", broker.url, "--no-simulate",
                     "--facilities", str(FACILITIES), "--meters", str(METERS),
                     "--seed", str(SEED), "--port", str(self.port),
                     "--data-dir", str(workdir / "data")]
        self.env = {**os.environ, "SEMS_ALLOWED_LATENESS_S": "30",
                    "SEMS_IDLE_TIMEOUT_S": "3600", "SEMS_MQTT_CLIENT_ID": "sems-e2e"}
        if kafka is not None:
            self.args += ["--runtime", "kafka", "--kafka", kafka.bootstrap]
            self.env.update(SEMS_KAFKA_PARTITIONS="4",
                            SEMS_KAFKA_APP_ID=f"sems-e2e-{uuid.uuid4().hex[:8]}")
        if production is not None:
            self.args += ["--profile", "production"]
            self.env.update(production)
        self.kafka = kafka
        self.log = (workdir / "sems.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: list[subprocess.Popen[bytes]] = []
        """Everything the test started (SEMS, simulators), each in a process group of its
        own, stopped at teardown whatever failed."""
        # What an operator does: an admin token from the local issuer of this data dir.
        self.headers = {"Authorization": "Bearer " + subprocess.run(
            [*SEMS, "token", "create", "--role", "admin", "--data-dir", str(workdir / "data")],
            env=self.env, check=True, capture_output=True, text=True).stdout.strip()}

    def start(self) -> None:
        self.proc = spawn(self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
                          stderr=subprocess.STDOUT)
        self.children.append(self.proc)
        wait_until(self.ready, timeout_s=60, what="sems /healthz with MQTT connected")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"sems exited with {self.proc.returncode}")
        try:
            return requests.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        # A short timeout: the API answers fast while SEMS ingests, folds and forecasts.
        response = requests.get(f"{self.base}{path}", params=params, headers=self.headers,
                                timeout=1)
        assert response.status_code == 200, response.text
        return response.json()

    def kill(self) -> None:
        assert self.proc is not None
        kill_group(self.proc)

    def stop(self) -> int:
        """SIGTERM: SEMS stops within its shutdown grace (30 s)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=35)

    def simulate(self, broker: Mosquitto, start: datetime, duration_s: int,
                 log: Path) -> subprocess.Popen[bytes]:
        process = simulate(broker, start, duration_s, log)
        self.children.append(process)
        return process

    def teardown(self) -> None:
        for process in self.children:
            stop_process(process, timeout_s=5)
        self.log.close()


@pytest.fixture(params=["local", "kafka", "production"])
def sems(request: pytest.FixtureRequest, tmp_path: Path,
         own_mosquitto: Mosquitto) -> Iterator[Sems]:
    """SEMS on the embedded runtime, on the kafka runtime (ingest + worker in one process, on
    a broker of its own so that no other test's readings are on its topics), or in the
    production profile (the kafka runtime on InfluxDB, PostgreSQL and Redis)."""
    kafka = request.getfixturevalue("own_kafka") if request.param != "local" else None
    production: dict[str, str] | None = None
    counts: ProductionCounts | None = None
    if request.param == "production":
        influx: InfluxDB = request.getfixturevalue("influxdb")
        dsn: str = request.getfixturevalue("pg_database")
        redis: Redis = request.getfixturevalue("redis_server")
        prefix = f"e2e{uuid.uuid4().hex[:8]}"
        production = {"SEMS_INFLUX_URL": influx.url, "SEMS_INFLUX_BUCKET_PREFIX": prefix,
                      "SEMS_POSTGRES_DSN": dsn, "SEMS_REDIS_URL": redis.url}
        counts = ProductionCounts(influx, prefix, dsn)
    s = Sems(tmp_path, own_mosquitto, kafka, production, counts)
    try:
        yield s
    finally:
        s.teardown()


def simulate(broker: Mosquitto, start: datetime, duration_s: int,
             log: Path) -> subprocess.Popen[bytes]:
    return spawn(
        [*SEMS, "simulate", "--mqtt", broker.url, "--facilities", str(FACILITIES),
         "--meters", str(METERS), "--seed", str(SEED), "--start", start.isoformat(),
         "--duration-s", str(duration_s), "--duplicate-rate", "0.02", "--delay-rate", "0.02",
         "--late", "5", "--malformed", "8", "--log", str(log)],
        stdout=subprocess.DEVNULL,
    )


def test_rollups_equal_an_independent_recomputation_across_a_crash(
    sems: Sems, own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    published_log = tmp_path / "published.jsonl"
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    sems.start()

    # First half, with SEMS killed -9 while it is consuming, then restarted.
    first = sems.simulate(own_mosquitto, start, HALF_S, published_log)
    wait_until(lambda: sems.counts.readings() > 2000, timeout_s=60,
               what="SEMS consuming the first half")
    sems.kill()
    killed_with = sems.counts.readings()
    assert killed_with < FACILITIES * METERS * HALF_S // 15, "kill -9 must land mid-stream"
    assert first.wait(timeout=120) == 0
    sems.start()
    # Second half, published while SEMS runs.
    second_start = start + timedelta(seconds=HALF_S)
    second = sems.simulate(own_mosquitto, second_start, 2 * 3600 + 120 - HALF_S,
                           published_log)
    assert second.wait(timeout=120) == 0

    messages = [orjson.loads(line) for line in published_log.read_bytes().splitlines()]
    kinds = Counter(m["kind"] for m in messages)
    assert kinds["duplicate"] > 0 and kinds["delayed"] > 0
    assert (kinds["late"], kinds["malformed"]) == (10, 16)
    accepted = [orjson.loads(m["payload"]) for m in messages
                if m["kind"] in ("reading", "delayed", "duplicate")]
    distinct = {(r["meter_id"], r["timestamp"]) for r in accepted}

    wait_until(lambda: sems.counts.readings() == len(distinct),
               timeout_s=180, what=f"{len(distinct)} distinct readings stored")
    # The data ends 2 min past the second hour: every window up to then must close.
    final_boundary_ms = int((start + timedelta(hours=2, minutes=1)).timestamp() * 1000)
    wait_until(lambda: sems.counts.closed_until_ms() >= final_boundary_ms, timeout_s=60,
               what="every facility's windows closed")
    # A dead letter is kept once per distinct (topic, payload): MQTT redelivers unacknowledged
    # messages after the crash, and the two halves send some identical garbage.
    refused = {(m["topic"], m["payload"]) for m in messages if m["kind"] in ("late", "malformed")}
    try:
        wait_until(lambda: sems.counts.dead_letters() == len(refused),
                   timeout_s=30, what=f"{len(refused)} distinct dead letters")
    except TimeoutError:
        # Name the difference, as the simulator logs payloads.
        kept = {(base64.b64decode(d["raw_payload"]).decode("utf-8", "backslashreplace")
                 if d["payload_encoding"] == "base64" else d["raw_payload"]): d["reason"]
                for d in sems.get("/api/dead-letters", limit=100)["dead_letters"]}
        published = {payload for _, payload in refused}
        raise AssertionError(
            f"dead letters not kept: {published - set(kept)}; kept but not refused by the "
            f"simulator: { {p: r for p, r in kept.items() if p not in published} }") from None

    fleet = build_fleet(facilities=FACILITIES, meters_per_facility=METERS, seed=SEED)
    expected = expected_rollups(accepted, fleet.registry)
    end = start + timedelta(hours=2)
    served: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    for f in fleet.facilities:
        scopes = [None, *[m.meter_id for m in fleet.meters if m.facility_id == f.facility_id]]
        for window in ("1m", "15m", "1h"):
            for meter_id in scopes:
                params = {"window": window, "start": start.isoformat(), "end": end.isoformat()}
                if meter_id:
                    params["meter_id"] = meter_id
                body = sems.get(f"/api/facilities/{f.facility_id}/rollups", **params)
                for r in body["rollups"]:
                    w0 = datetime.fromisoformat(r["window_start"]).timestamp()
                    served[(r["scope"], r["meter_id"] or r["facility_id"], window, w0)] = r

    in_range = {k: v for k, v in expected.items()
                if start.timestamp() <= k[3] and k[3] + {"1m": 60, "15m": 900, "1h": 3600}[k[2]]
                <= end.timestamp()}
    assert set(served) == set(in_range)
    assert len(served) == FACILITIES * (METERS + 1) * (120 + 8 + 2)
    for key, want in in_range.items():
        got = served[key]
        assert got["sample_count"] == want.sample_count, key
        assert got["total_energy_kwh"] == pytest.approx(want.total_energy_kwh, rel=1e-9), key
        assert got["avg_power_kw"] == pytest.approx(want.avg_power_kw, rel=1e-9), key
        assert got["coverage"] == pytest.approx(want.coverage, rel=1e-9), key
        for field in ("max_power_kw", "min_power_kw"):
            assert got[field] == pytest.approx(getattr(want, field), rel=1e-9), (key, field)

    dead = sems.get("/api/dead-letters", limit=100)["dead_letters"]
    reasons = Counter(d["reason"] for d in dead)
    assert reasons["late"] == 10
    assert sum(reasons.values()) == len(refused)
    metrics = requests.get(f"{sems.base}/metrics", headers=sems.headers, timeout=1).text
    assert 'sems_readings_rejected_total{reason="late"} ' in metrics

    # Every facility's next 24 h is forecast from the history it now has, stored and served,
    # and in the kafka runtime published on load-forecasts for data engineers.
    def forecast_points(facility_id: str) -> int:
        return len(sems.get(f"/api/facilities/{facility_id}/forecast")["points"])

    wait_until(lambda: all(forecast_points(f.facility_id) >= 95 for f in fleet.facilities),
               timeout_s=180, what="a 24 h forecast of every facility")
    if sems.kafka is not None:
        keys = subprocess.run(
            [kcat(), "-C", "-b", sems.kafka.bootstrap, "-t", "load-forecasts", "-o", "beginning",
             "-e", "-q", "-f", "%k\n"], capture_output=True, text=True, timeout=60,
            check=True).stdout.split()
        assert set(keys) == {f.facility_id for f in fleet.facilities}
    assert sems.stop() == 0
