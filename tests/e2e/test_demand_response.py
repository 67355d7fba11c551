"""Demand response closed loop, as a newcomer runs it: ``sems run`` (meter simulator and the
in-process simulated BMS), ``sems utility add``, a signed webhook asking 20 %, then the BMS
commands in the audit trail, the metered load falling and the event's report in the API.
Runs on the local runtime, the kafka runtime and the production profile."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from agents.dr.planner import plan_reduction
from api.signatures import sign
from schemas.metadata import MeterType
from simulators.fleet import Fleet, build_fleet
from simulators.inventory import inventory_from_building
from tests.servers import InfluxDB, Kafka, Redis, free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.e2e

SEMS = [sys.executable, "-m", "streams.cli"]
FACILITIES, METERS, SEED = 3, 4, 42
EVENT_S = 120
TARGET_PCT = 20.0
MAX_OFFSET_C, MIN_LIGHTING_PCT = 8.0, 0.0


class Live:
    def __init__(self, workdir: Path, kafka: Kafka | None,
                 production: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "data"
        self.runtime = ("local" if kafka is None else "kafka" if production is None
                        else "production")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        # Short releases and lateness keep the test short. The sites accept deep sheds (8 degC,
        # lights down to 0 %): then one of the three buildings can shed 20 % at every hour of
        # the week, night and weekend included (with the defaults, 4 degC and 30 %, only in
        # office hours). The rest is the default product.
        self.env.update(SEMS_DR_RELEASE_GAP_S="5", SEMS_ALLOWED_LATENESS_S="5",
                        SEMS_FORECAST_ENABLED="false",
                        SEMS_DR_MAX_SETPOINT_OFFSET_C=str(MAX_OFFSET_C),
                        SEMS_DR_MIN_LIGHTING_PCT=str(MIN_LIGHTING_PCT))
        args = ["run", "--port", str(self.port), "--data-dir", str(self.data),
                "--backfill-s", "1500", "--facilities", str(FACILITIES),
                "--meters", str(METERS), "--seed", str(SEED)]
        if kafka is not None:
            args += ["--runtime", "kafka", "--kafka", kafka.bootstrap]
            self.env["SEMS_KAFKA_APP_ID"] = f"sems-dr-{self.port}"
        if production is not None:  # every command, utility add included, on PostgreSQL
            self.env.update(production, SEMS_PROFILE="production")
        self.admin = self.cli("token", "create", "--role", "admin")
        self.log = (workdir / "sems.log").open("wb")
        self.proc = spawn([*SEMS, *args], env=self.env, stdout=self.log,
                          stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> str:
        return subprocess.run([*SEMS, *args, "--data-dir", str(self.data)], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def get(self, path: str) -> Any:
        r = requests.get(self.base + path, headers={"Authorization": f"Bearer {self.admin}"},
                         timeout=5)
        r.raise_for_status()
        return r.json()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sems run exited with {self.proc.returncode}")
        try:
            rollups = self.get("/api/facilities/fac-001/rollups?window=1m")["rollups"]
        except (requests.ConnectionError, requests.HTTPError):
            return False
        return len(rollups) >= 20  # the meter-before window (15 min) is covered


@pytest.fixture(params=["local", "kafka", "production"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    """The local runtime on SQLite, the kafka runtime on SQLite, and the production profile
    (the kafka runtime on InfluxDB, PostgreSQL and Redis)."""
    kafka = request.getfixturevalue("own_kafka") if request.param != "local" else None
    production: dict[str, str] | None = None
    if request.param == "production":
        influx: InfluxDB = request.getfixturevalue("influxdb")
        redis: Redis = request.getfixturevalue("redis_server")
        production = {"SEMS_INFLUX_URL": influx.url,
                      "SEMS_INFLUX_BUCKET_PREFIX": f"dr{uuid.uuid4().hex[:8]}",
                      "SEMS_POSTGRES_DSN": request.getfixturevalue("pg_database"),
                      "SEMS_REDIS_URL": redis.url}
    sems = Live(tmp_path, kafka, production)
    try:
        wait_until(sems.ready, timeout_s=120, what="sems run with 20 min of rollups")
        yield sems
    finally:
        stop_process(sems.proc, timeout_s=60, sig=signal.SIGINT)
        sems.log.close()


def mean_main_kw(fleet: Fleet, facility_id: str, start: datetime, end: datetime) -> float:
    """The facility's main-meter kW averaged over the simulator's 15 s samples, no shed."""
    samples = int((end - start).total_seconds() // 15)
    return statistics.fmean(
        sum(r.active_power_kw for r in fleet.readings_at(start + timedelta(seconds=15 * k))
            if r.facility_id == facility_id and r.meter_type is MeterType.MAIN)
        for k in range(samples))


def choose_facility(start: datetime) -> tuple[str, float] | None:
    """The demo facility to ask 20 % of: one whose building can shed it within the test's
    comfort limits, and whose meter-before baseline (the 15 minutes before the start, which
    the event settles with) is the fairest, i.e. its load without a shed moves least from then
    to the event. Returns it with that drift as a share of the target; None if no building can
    shed 20 %."""
    fleet = build_fleet(facilities=FACILITIES, meters_per_facility=METERS, seed=SEED)
    best: tuple[str, float] | None = None
    for fid, model in fleet.models.items():
        baseline_kw = mean_main_kw(fleet, fid, start - timedelta(minutes=15), start)
        target_kw = TARGET_PCT / 100 * baseline_kw
        inventory = inventory_from_building(model, at=start, max_setpoint_offset_c=MAX_OFFSET_C,
                                            min_lighting_level_pct=MIN_LIGHTING_PCT)
        most = plan_reduction(inventory, target_reduction_kw=10 * target_kw,
                              forecast_upper_kw=[baseline_kw], event_start=start,
                              event_end=start + timedelta(seconds=EVENT_S))
        if most.expected_reduction_kw < 1.15 * target_kw:
            continue
        unshed_kw = mean_main_kw(fleet, fid, start, start + timedelta(seconds=EVENT_S))
        drift = abs(baseline_kw - unshed_kw) / target_kw
        if best is None or drift < best[1]:
            best = (fid, drift)
    return best


def test_signed_webhook_sheds_twenty_percent_and_reports_it(live: Live) -> None:
    now = datetime.now(UTC)
    start = (now + timedelta(seconds=80)).replace(second=0, microsecond=0)
    end = start + timedelta(seconds=EVENT_S)
    chosen = choose_facility(start)
    if chosen is None:
        pytest.fail("no demo building can shed 20 % now: revisit MAX_OFFSET_C")
    facility_id, drift = chosen
    out = live.cli("utility", "add", "gridco", "--name", "GridCo", "--facility", facility_id)
    secret = out.splitlines()[-1]

    body = orjson.dumps({"event_id": "GRID-7", "facility_ids": [facility_id],
                         "event_start": start.isoformat(), "event_end": end.isoformat(),
                         "target_reduction_percentage": TARGET_PCT})
    stamp = int(time.time())

    def post(signature: str) -> requests.Response:
        return requests.post(f"{live.base}/webhooks/utility/dr-notification", data=body,
                             timeout=5, headers={
                                 "Content-Type": "application/json", "X-SEMS-Utility": "gridco",
                                 "X-SEMS-Timestamp": str(stamp), "X-SEMS-Signature": signature})

    assert post("v1=" + "0" * 64).status_code == 401
    accepted = post(sign(secret, stamp, body))
    assert accepted.status_code == 200, accepted.text
    [created] = accepted.json()["events"]
    assert created["replayed"] is False
    assert post(sign(secret, stamp, body)).json()["events"][0]["replayed"] is True
    event_path = f"/api/dr-events/{created['id']}"

    def planned() -> bool:
        return live.get(event_path)["plan"] is not None

    wait_until(planned, timeout_s=30, what="the event's plan")
    event = live.get(event_path)
    assert event["baseline"]["method"] == "meter_before"  # no forecast, no 10 weekdays yet
    target_kw = event["target_reduction_kw"]
    assert target_kw == pytest.approx(TARGET_PCT / 100 * event["baseline"]["baseline_kw"][0])

    def status(wanted: str) -> bool:
        got = live.get(event_path)["status"]
        assert got != "failed", live.get(event_path)["failures"]
        return bool(got == wanted)

    wait_until(lambda: status("active"), timeout_s=150, what="the event's start")
    wait_until(lambda: status("completed"), timeout_s=EVENT_S + 120, what="the report")
    event = live.get(event_path)
    report = event["report"]
    achieved = event["achieved_reduction_kw"]
    # Planned again when the commands went out (the 15 minutes before then), settled with
    # the 15 minutes before the start.
    assert event["baseline"]["provisional"] and not report["baseline"]["provisional"]
    target_kw = event["target_reduction_kw"]
    assert target_kw == pytest.approx(TARGET_PCT / 100 * event["baseline"]["baseline_kw"][0])
    print(f"{live.runtime}: target {target_kw:.1f} kW, achieved {achieved:.1f} kW "
          f"({report['percent_of_target']:.1f} %), baseline drift {drift:.1%} of target")
    assert report["coverage"] == 1.0
    # What the buildings shed: the simulator's own load without the event (the true
    # counterfactual, which settlement can only estimate) minus what was metered.
    metered_kw = statistics.fmean(i["metered_kw"] for i in report["intervals"])
    fleet = build_fleet(facilities=FACILITIES, meters_per_facility=METERS, seed=SEED)
    shed_kw = mean_main_kw(fleet, facility_id, start, end) - metered_kw
    assert shed_kw == pytest.approx(target_kw, rel=0.15)
    # What the report settles: the baseline (the 15 minutes before the start) minus metered.
    assert report["baseline"]["method"] == "meter_before"
    assert achieved == pytest.approx(statistics.fmean(report["baseline"]["baseline_kw"])
                                     - metered_kw, rel=1e-9)
    if drift <= 0.07:
        # Most of the week; when every building ramps (weekdays about 07:30 in New York) any
        # meter-before baseline is off by more than the tolerance, whatever SEMS does.
        assert achieved == pytest.approx(target_kw, rel=0.15)
        assert all(i["metered_kw"] < i["baseline_kw"] for i in report["intervals"])
    applies = [c for c in event["commands"] if c["phase"] == "apply"]
    releases = [c for c in event["commands"] if c["phase"] == "release"]
    assert applies and len(releases) == len(applies)
    assert all(c["result"] == "ok" and c["released_at"] for c in applies)
    assert all(c["result"] == "ok" and c["why"].startswith(f"DR event {created['id']}")
               for c in releases)
    assert [e["id"] for e in live.get(f"/api/facilities/{facility_id}/dr-events")["events"]] \
        == [created["id"]]
    metrics = requests.get(f"{live.base}/metrics", timeout=5,
                           headers={"Authorization": f"Bearer {live.admin}"}).text
    assert 'sems_bms_commands_total{kind="zone_setpoint_offset",result="ok"}' in metrics
    assert 'sems_dr_events_total{status="completed"} 1.0' in metrics
