"""The loads of ``bench/api.py``: an open loop timed from when each request was due, and wrk,
with the CPU each side used."""

from __future__ import annotations

import asyncio
import os
import random
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


@dataclass(frozen=True, slots=True)
class OpenLoop:
    sent: int
    errors: int
    achieved_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


async def open_loop(base: str, paths: list[str], *, rate: float, duration_s: float,
                    token: str, warm: bool = True) -> OpenLoop:
    """``rate`` requests a second for ``duration_s`` over random ``paths``, each timed from
    when it was *due*, so a server that falls behind shows its queueing (no coordinated
    omission). A non-200 answer, a failed connection and a 10 s timeout are errors."""
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {token}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        loop = asyncio.get_running_loop()

        async def one(url: str, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append((loop.time() - due) * 1000)

        if warm:  # open connections first, so that connects do not count
            await asyncio.gather(*(one(base + paths[0], loop.time()) for _ in range(20)))
            latencies.clear()
            errors = 0
        total = int(rate * duration_s)
        start = loop.time() + 0.01
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(base + rng.choice(paths), due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    ms = sorted(latencies)
    return OpenLoop(len(ms), errors, total / elapsed, percentile(ms, 0.5), percentile(ms, 0.95),
                    percentile(ms, 0.99), ms[-1] if ms else float("nan"))


async def has_data(base: str, path: str, *, token: str, timeout_s: float = 60) -> None:
    """Until ``path`` (a ``/current``) shows a total: the simulator's backfill has arrived."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with s.get(base + path) as resp:
                if resp.status == 200 and (await resp.json())["total_power_kw"] is not None:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{path} has no data after {timeout_s:g} s")
            await asyncio.sleep(0.2)


WRK_LUA = """
wrk.headers["Authorization"] = "Bearer %s"
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


@dataclass(frozen=True, slots=True)
class Wrk:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    wrk_cpu_s: float
    """CPU wrk itself used (user + system): on a small machine, what the API could not."""
    api_cpu_s: float
    """CPU the API processes used meanwhile."""
    duration_s: float


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (/proc/PID/stat)."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def wrk(base: str, paths: list[str], *, connections: int, duration_s: float, workdir: Path,
        token: str, api_pids: list[int]) -> Wrk:
    """``wrk -t1 --latency`` over ``paths`` in turn; refuses a run with error answers."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is missing: apt-get install wrk")
    script = workdir / "paths.lua"
    script.write_text(WRK_LUA % (token, ", ".join(f'"{p}"' for p in paths)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    api_before = cpu_s(api_pids)
    out = subprocess.run([binary, "-t1", f"-c{connections}", f"-d{duration_s:g}s",
                          "--latency", "-s", str(script), base], capture_output=True,
                         text=True, check=True, timeout=duration_s + 60).stdout
    api_used = cpu_s(api_pids) - api_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} error responses:\n{out}")
    wrk_used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Wrk(rps, pct("50"), pct("99"), wrk_used, api_used, duration_s)
