"""``sems api --workers 2``: two processes answer on one port (SO_REUSEPORT), a SIGTERM stops
them all, and when one dies the group stops for its supervisor to restart it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from streams.cli import main
from tests.servers import free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SITE = {"facilities": [{"facility_id": "plant-1", "name": "Plant 1",
                        "contract_demand_kw": 100}],
        "meters": [{"meter_id": "plant-1-main", "facility_id": "plant-1",
                    "meter_type": "main"}]}


class Group:
    def __init__(self, process: subprocess.Popen[bytes], port: int, token: str,
                 log: Path) -> None:
        self.process, self.port, self.token, self.log = process, port, token, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        found = re.search(rb"pids ([\d, ]+)\)", self.log.read_bytes())
        return [] if found is None else [int(p) for p in found[1].split(b", ")]


def listening_pids(port: int) -> set[int]:
    """The processes holding a listening TCP socket on ``port`` (/proc, as ``ss -ltnp``)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(proc.name))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Group]:
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(SITE))
    data = tmp_path / "data"
    assert main(["facilities", "import", str(site), "--data-dir", str(data)]) == 0
    capsys.readouterr()
    assert main(["token", "create", "--role", "admin", "--data-dir", str(data)]) == 0
    token = capsys.readouterr().out.strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = spawn([sys.executable, "-m", "streams.cli", "api", "--workers", "2",
                         "--data-dir", str(data), "--port", str(port)], cwd=REPO, env=env,
                        stdout=out, stderr=subprocess.STDOUT)
    g = Group(process, port, token, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"sems api exited: {log.read_text()}")
        try:
            return requests.get(f"{g.base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, timeout_s=60, what="sems api --workers 2")
    wait_until(lambda: len(listening_pids(port)) == 2, timeout_s=30,
               what="both processes listening")
    try:
        yield g
    finally:
        pids = g.worker_pids()
        stop_process(process, timeout_s=40)
        wait_until(lambda: not any(alive(p) for p in pids), timeout_s=10,
                   what="the group's processes to exit")


def test_two_processes_answer_on_one_port(group: Group) -> None:
    workers = group.worker_pids()
    assert len(workers) == 2
    assert listening_pids(group.port) == set(workers)  # one socket each, the same port
    headers = {"Authorization": f"Bearer {group.token}", "Connection": "close"}
    for _ in range(40):  # a new connection each: the kernel spreads them over the two
        resp = requests.get(f"{group.base}/api/facilities/plant-1/current", headers=headers,
                            timeout=5)
        assert resp.status_code == 200, resp.text
        assert resp.json()["contract_demand_kw"] == 100.0
    refused = requests.get(f"{group.base}/api/facilities/plant-1/current", timeout=5)
    assert refused.status_code == 401  # each process authenticates as one would


def test_a_sigterm_stops_every_process(group: Group) -> None:
    workers = group.worker_pids()
    group.process.send_signal(signal.SIGTERM)
    assert group.process.wait(timeout=40) == 0
    wait_until(lambda: not any(alive(p) for p in workers), timeout_s=10,
               what="both processes to exit")


def test_when_one_process_dies_the_group_stops_for_its_supervisor(group: Group) -> None:
    first, second = group.worker_pids()
    os.kill(first, signal.SIGKILL)
    assert group.process.wait(timeout=40) == 70  # EXIT_FAILED: restart me
    wait_until(lambda: not alive(second), timeout_s=10, what="the other process to exit")
    assert "exited with status -9" in group.log.read_text()
