"""`make run` (issue 16): the demo organisation owns the demo facilities and has one user per
role, whose random passwords are printed once, in the DEMO block at start, and sign in; a
restart prints none and changes none."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.servers import free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.e2e

ROW = re.compile(r"^  (\w+) +(\S+@demo\.example) +(\S+)", re.MULTILINE)
# What each role sees of the demo fleet: its organisation's facilities, or those assigned.
FACILITIES = {"admin": ["fac-001", "fac-002", "fac-003"],
              "energy_manager": ["fac-001", "fac-002", "fac-003"],
              "facility_manager": ["fac-001"], "operator": ["fac-001", "fac-002"],
              "viewer": ["fac-001"]}


@contextmanager
def running(data_dir: Path, port: int, log_path: Path) -> Iterator[str]:
    """``sems run`` (no simulator: the demo fleet is registered all the same) until its
    banner is out: its output so far; then Ctrl+C, as a user stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
    with log_path.open("wb") as log:
        proc = spawn([sys.executable, "-m", "streams.cli", "run", "--port", str(port),
                      "--data-dir", str(data_dir), "--no-simulate"],
                     env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text(errors="replace"))
            return "Press Ctrl+C to stop." in log_path.read_text(errors="replace")

        wait_until(up, timeout_s=60, what="the banner")
        yield log_path.read_text(errors="replace")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=35) == 0, log_path.read_text(errors="replace")
    finally:
        stop_process(proc, timeout_s=5)


def sign_in(base: str, email: str, password: str) -> requests.Response:
    return requests.post(f"{base}/api/auth/login", json={"email": email, "password": password},
                         timeout=5)


def test_demo_users_are_printed_once_and_sign_in(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    with running(data_dir, port, tmp_path / "first.log") as out:
        assert "DEMO ACCOUNTS (passwords shown once)" in out
        block = out[out.index("DEMO ACCOUNTS"):]
        accounts = {role: (email, password) for role, email, password in ROW.findall(block)}
        assert sorted(accounts) == sorted(FACILITIES)
        for role, (email, password) in accounts.items():
            resp = sign_in(base, email, password)
            assert resp.status_code == 200, resp.text
            me = resp.json()
            assert (me["role"], me["facility_ids"]) == (role, FACILITIES[role])
            assert me["organisation"] == {"organisation_id": "demo", "name": "Demo portfolio"}
        assert sign_in(base, accounts["admin"][0], "not the password at all").status_code \
            == 401
    with running(data_dir, port, tmp_path / "second.log") as again:
        assert "DEMO ACCOUNTS" not in again  # nothing printed, nothing changed
        email, password = accounts["admin"]
        assert sign_in(base, email, password).status_code == 200
