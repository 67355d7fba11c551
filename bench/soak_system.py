"""The soak's system under test (``bench/soak.py``): ``sems run`` as its own process over a real
Mosquitto, ``sems simulate --live --log`` as another, the simulated BMS in the soak's process;
and the checks made at the end against the simulator's log, the SQLite store and the BMS."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from simulators.building import BuildingModel
from tests.servers import spawn, stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]
VALID_KINDS = frozenset({"reading", "duplicate", "delayed"})
"""Log kinds that are valid readings SEMS must store (late and malformed ones are refused)."""


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB, from /proc (psutil is not a dependency)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def cli(args: list[str], env: Mapping[str, str], *, repo: Path = REPO) -> str:
    """A ``sems`` subcommand's stdout (token, utility, key), raising on failure."""
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=dict(env),
                          cwd=repo, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sems {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class SemsProcess:
    """``sems run --mqtt URL --no-simulate`` on a fixed data dir and port (restartable)."""

    workdir: Path
    port: int
    mqtt_url: str
    env: dict[str, str]
    repo: Path = REPO
    """The checkout whose SEMS runs (``python -m`` takes the working directory first)."""
    profile: str = "embedded"
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stop_s: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    rss_lives: list[tuple[int, list[tuple[float, float]]]] = field(default_factory=list)
    """Per process life: its pid and its (monotonic time, RSS MB) samples (:meth:`sample_rss`,
    and one when it became healthy and one just before it was stopped)."""

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / f"sems-{self.starts}.log").open("ab")
        self.process = spawn(
            [sys.executable, "-m", "streams.cli", "run", "--profile", self.profile,
             "--runtime", "local",  # make run's; the production profile defaults to kafka
             "--mqtt", self.mqtt_url, "--no-simulate", "--data-dir", str(self.data_dir),
             "--port", str(self.port)],
            env=self.env, cwd=self.repo, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
        wait_until(self.healthy, timeout_s=90, what=f"sems run on {self.base}")
        self.rss_lives.append((self.process.pid, []))
        self.sample_rss()

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"sems run exited; see {self.workdir}/sems-{self.starts}.log")
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self, *, grace_s: float) -> float:
        """SIGTERM; SIGKILL after ``grace_s`` (recorded as a hang). Returns seconds taken."""
        self.sample_rss()
        started = time.monotonic()
        if self.process is not None:
            stop_process(self.process, timeout_s=grace_s)
            self.exit_codes.append(self.process.returncode)
        took = time.monotonic() - started
        self.stop_s.append(round(took, 2))
        self.process = None
        return took

    def sample_rss(self) -> None:
        """Add the running process's RSS to its life (nothing while it is restarting)."""
        process = self.process
        if process is None or not self.rss_lives or self.rss_lives[-1][0] != process.pid:
            return
        mb = rss_mb(process.pid)
        if mb is not None:
            self.rss_lives[-1][1].append((time.monotonic(), mb))


@dataclass
class SimulatorProcess:
    """``sems simulate --live --log FILE``; stopped with SIGINT so it flushes and closes its
    log, restarted from the next 15 s step so that nothing is skipped."""

    workdir: Path
    mqtt_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "simulator.jsonl"

    def start(self, *, start: datetime, duration_s: float, faults: list[str]) -> None:
        self.runs += 1
        out = (self.workdir / f"simulator-{self.runs}.out").open("ab")
        self.process = spawn(
            [sys.executable, "-m", "streams.cli", "simulate", "--mqtt", self.mqtt_url,
             "--start", start.isoformat(), "--duration-s", f"{duration_s:.0f}", "--live",
             "--log", str(self.log_path), *faults],
            env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)

    def backfilled(self) -> bool:
        out = self.workdir / f"simulator-{self.runs}.out"
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sems simulate exited; see {out}")
        return out.exists() and b"published" in out.read_bytes()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=15, sig=signal.SIGINT)
        self.process = None


def expected_readings(log_path: Path) -> set[tuple[str, int]]:
    """Distinct valid (meter_id, ts_ms) the simulator published, from its log."""
    expected: set[tuple[str, int]] = set()
    with log_path.open("rb") as f:
        for line in f:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, ValueError):
                row = orjson.loads(line)
                if row["kind"] not in VALID_KINDS:
                    continue
                doc = orjson.loads(row["payload"])
                ts = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
                expected.add((doc["meter_id"], round(ts.timestamp() * 1000)))
    return expected


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def stored_readings(db: Path) -> set[tuple[str, int]]:
    with read_only(db) as conn:
        return {(str(m), int(t)) for m, t in conn.execute("SELECT meter_id, ts_ms FROM readings")}


def dead_letter_reasons(db: Path, missing: set[tuple[str, int]]) -> dict[str, int]:
    """Why the missing readings were refused, where the store says (late, ...)."""
    reasons: dict[str, int] = {}
    with read_only(db) as conn:
        for reason, record in conn.execute("SELECT reason, record FROM dead_letters"):
            with contextlib.suppress(Exception):
                doc = orjson.loads(orjson.loads(record)["raw_payload"])
                ts = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
                if (doc["meter_id"], round(ts.timestamp() * 1000)) in missing:
                    reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return reasons


def shed_loads(models: Mapping[str, BuildingModel]) -> dict[str, list[str]]:
    """Each facility's loads not at their normal state (setpoint offset 0, lighting 100 %)."""
    shed: dict[str, list[str]] = {}
    for fid, model in models.items():
        loads = [f"hvac:{z.zone_id}={z.setpoint_offset_c:g}C" for z in model.zones
                 if z.setpoint_offset_c != 0]
        loads += [f"lighting:{g.group_id}={g.level_pct:g}%" for g in model.lighting_groups
                  if g.level_pct < 100]
        if loads:
            shed[fid] = loads
    return shed


_NOISE = re.compile(r"\[[0-9a-f-]{16,}\]|[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?")


def log_summary(workdir: Path) -> dict[str, Any]:
    """ERROR and WARNING lines of every ``sems run`` log, grouped by message shape (ids and
    numbers blanked): count and first example, most frequent first; and traceback count."""
    groups: dict[str, list[Any]] = {}
    tracebacks = 0
    for path in sorted(workdir.glob("sems-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            tracebacks += line.startswith("Traceback")
            parts = line.split(" ", 3)
            if len(parts) < 4 or parts[2] not in ("ERROR", "WARNING", "CRITICAL"):
                continue
            key = f"{parts[2]} " + _NOISE.sub("#", parts[3])[:120]
            groups.setdefault(key, [0, line[:400]])[0] += 1
    top = sorted(groups.items(), key=lambda kv: -kv[1][0])
    return {"tracebacks": tracebacks,
            "lines": [{"count": n, "shape": k, "first": first} for k, (n, first) in top[:12]]}


def base_env(extra: Mapping[str, str], *, repo: Path = REPO) -> tuple[dict[str, str], list[str]]:
    """The environment for SEMS processes, and the ``extra`` settings dropped because the
    checkout in ``repo`` does not know them (SEMS refuses unknown ``SEMS_*`` variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
    known = subprocess.run(
        [sys.executable, "-c", "from streams.settings import Settings; "
         "print(' '.join(Settings.model_fields))"],
        env=env, cwd=repo, check=True, capture_output=True, text=True).stdout.split()
    dropped = [k for k in extra if k.removeprefix("SEMS_").lower() not in known]
    env.update({k: v for k, v in extra.items() if k not in dropped})
    return env, dropped
