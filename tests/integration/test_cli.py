"""`sems facilities import`: register a site's facilities and meters from a JSON file; `sems
run` stops within its shutdown grace when its broker hangs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from streams.cli import main
from tests.servers import Kafka, Mosquitto, free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.integration

SITE = {
    "facilities": [{"facility_id": "plant-1", "name": "Plant 1", "timezone": "Europe/Berlin",
                    "contract_demand_kw": 1200}],
    "meters": [
        {"meter_id": "plant-1-main", "facility_id": "plant-1", "meter_type": "main"},
        {"meter_id": "plant-1-chiller", "facility_id": "plant-1", "meter_type": "hvac",
         "sample_interval_s": 60},
    ],
}


def test_import_registers_facilities_and_meters(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(SITE))
    assert main(["facilities", "import", str(site), "--data-dir", str(tmp_path)]) == 0
    assert "imported 1 facilities and 2 meters" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "sems.db") as conn:
        meters = conn.execute("SELECT meter_id, meter_type, sample_interval_s FROM meters "
                              "ORDER BY meter_id").fetchall()
    assert meters == [("plant-1-chiller", "hvac", 60.0), ("plant-1-main", "main", 15.0)]


@pytest.mark.parametrize(("doc", "complaint"), [
    ({"facilities": [{"facility_id": "bad id", "name": "x", "contract_demand_kw": 1}]},
     "facility_id"),
    ({"meters": [{"meter_id": "m", "facility_id": "nowhere", "meter_type": "main"}]},
     "unknown facility nowhere"),
])
def test_bad_import_is_refused_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             doc: dict[str, object], complaint: str) -> None:
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(doc))
    assert main(["facilities", "import", str(site), "--data-dir", str(tmp_path)]) == 2
    assert complaint in capsys.readouterr().err


# --- A long-running command stops within SEMS_SHUTDOWN_GRACE_S, whatever its servers do -----

SEMS = [sys.executable, "-m", "streams.cli"]
REPO = Path(__file__).resolve().parents[2]
GRACE_S = 4.0
EXIT_SLACK_S = 1.5
"""Interpreter exit and the test's own polling, on a busy 2-core machine."""


class Run:
    """``sems run`` in a process group of its own, its output in a file."""

    def __init__(self, workdir: Path, *args: str, grace_s: float) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "sems.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        env.update(SEMS_SHUTDOWN_GRACE_S=str(grace_s), SEMS_FORECAST_ENABLED="false",
                   SEMS_KAFKA_APP_ID=f"sems-stop-{uuid.uuid4().hex[:8]}")
        with self.log_path.open("wb") as log:
            self.process = spawn([*SEMS, "run", "--port", str(self.port), "--data-dir",
                                  str(workdir / "data"), *args], env=env, cwd=REPO,
                                 stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)

    def up(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"sems run exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz",
                                timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exits_within(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sems run still running {timeout_s:g} s after the signal:\n"
                                 f"{self.log()[-3000:]}") from None

    def kill(self) -> None:
        stop_process(self.process, timeout_s=0)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Whatever a test started is killed, with its process group, however the test ends."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def test_kafka_runtime_stops_within_the_grace_when_its_broker_hangs(
        own_kafka: Kafka, tmp_path: Path, runs: list[Run]) -> None:
    kafka_args = ("--runtime", "kafka", "--kafka", own_kafka.bootstrap, "--backfill-s", "60")
    graceful = Run(tmp_path / "a", *kafka_args, grace_s=GRACE_S)
    patient = Run(tmp_path / "b", *kafka_args, grace_s=120)  # only a second signal stops it
    runs += [graceful, patient]
    wait_until(lambda: graceful.up() and patient.up(), timeout_s=90, what="both sems runs up")
    own_kafka.pause()  # the broker hangs: it accepts nothing and answers nothing
    try:
        for run in runs:
            run.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert graceful.exits_within(GRACE_S + EXIT_SLACK_S) != 0  # it abandoned something
        assert time.monotonic() - sent < GRACE_S + EXIT_SLACK_S
        log = graceful.log()
        assert "stopped with work abandoned" in log, log[-3000:]
        assert "kafka producer" in log.split("stopped with work abandoned")[1]
        # The second signal does not wait for the grace.
        assert patient.process.poll() is None
        patient.process.send_signal(signal.SIGTERM)
        assert patient.exits_within(EXIT_SLACK_S) == 128 + signal.SIGTERM
    finally:
        own_kafka.resume()


def test_local_runtime_stops_within_the_grace_when_its_mqtt_broker_hangs(
        own_mosquitto: Mosquitto, tmp_path: Path, runs: list[Run]) -> None:
    # A day of backfill: the simulator is still publishing to the broker when it hangs.
    run = Run(tmp_path, "--mqtt", own_mosquitto.url, "--backfill-s", "86400", grace_s=GRACE_S)
    runs.append(run)
    wait_until(run.up, timeout_s=60, what="sems run up")
    own_mosquitto.pause()
    try:
        run.process.send_signal(signal.SIGTERM)
        assert run.exits_within(GRACE_S + EXIT_SLACK_S) != 0
        log = run.log()
        assert "stopped with work abandoned" in log, log[-3000:]
        assert "MQTT publisher" in log.split("stopped with work abandoned")[1]
        assert "store close" not in log.split("stopped with work abandoned")[1]  # it closed
    finally:
        own_mosquitto.resume()
