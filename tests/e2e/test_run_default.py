"""`make run`: the embedded default with nothing else installed shows live data and 1-minute
rollups within 90 s, and answers every request within 1 s meanwhile (start-up, backfill and
the first forecasts included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.e2e


def test_embedded_default_serves_live_data_and_minute_rollups(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
    # What the banner tells a newcomer to do: a token from the local issuer, here a
    # viewer of two of the three demo facilities.
    token = subprocess.run(
        [sys.executable, "-m", "streams.cli", "token", "create", "--role", "viewer",
         "--facility", "fac-001", "--facility", "fac-002", "--data-dir",
         str(tmp_path / "data")], env=env, check=True, capture_output=True,
        text=True).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    log_path = tmp_path / "sems.log"
    with log_path.open("wb") as log:
        proc = spawn([sys.executable, "-m", "streams.cli", "run", "--port", str(port),
                      "--data-dir", str(tmp_path / "data")],
                     env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    returncode: int | None = None
    try:
        def current_is_live() -> bool:
            try:
                r = requests.get(f"{base}/api/facilities/fac-001/current", headers=auth,
                                 timeout=1)
            except requests.ConnectionError:
                return False
            body = r.json()
            return r.status_code == 200 and body["total_power_kw"] is not None and \
                body["data_age_s"] < 60

        wait_until(current_is_live, timeout_s=90, what="/current with live data")
        # Short timeouts throughout: the product answers fast even while it starts up
        # (a ReadTimeout fails the test; docs/performance.md, "Start-up").
        facilities = requests.get(f"{base}/api/facilities", headers=auth,
                                  timeout=1).json()["facilities"]
        assert [f["facility_id"] for f in facilities] == ["fac-001", "fac-002"]  # its scope
        assert all(len(f["meters"]) == 4 for f in facilities)
        other = requests.get(f"{base}/api/facilities/fac-003/current", headers=auth, timeout=1)
        assert other.status_code == 403, other.text
        anonymous = requests.get(f"{base}/api/facilities", timeout=1)
        assert anonymous.status_code == 401, anonymous.text
        rollups = requests.get(f"{base}/api/facilities/fac-002/rollups", headers=auth,
                               params={"window": "1m"}, timeout=1).json()["rollups"]
        assert rollups, "1-minute rollups exist"
        newest = datetime.fromisoformat(rollups[-1]["window_end"])
        assert datetime.now(UTC) - newest < timedelta(minutes=2)
        assert all(r["coverage"] == 1.0 for r in rollups[1:])  # backfill: no gaps

        def forecast() -> dict[str, Any] | None:
            body = requests.get(f"{base}/api/facilities/fac-001/forecast", headers=auth,
                                timeout=1).json()
            return body if len(body["points"]) >= 95 else None

        # The 3 h of backfill are enough for the short-history models of the fallback chain.
        wait_until(lambda: forecast() is not None, timeout_s=150, what="fac-001's forecast")
        served = forecast()
        # 3 h of history: a model of the fallback chain, which needs no weather
        assert served is not None and served["model"] in ("persistence", "daily_profile")
        proc.send_signal(signal.SIGINT)  # Ctrl+C, as a user stops it
        returncode = proc.wait(timeout=35)  # within the shutdown grace (30 s)
    finally:
        stop_process(proc, timeout_s=5)  # whatever failed: the process group goes
    text = log_path.read_text(errors="replace")
    assert f"{base}/api/facilities/fac-001/current" in text  # it printed the URLs
    assert "sems token create --role admin" in text  # and how to get a token
    assert returncode == 0, text
