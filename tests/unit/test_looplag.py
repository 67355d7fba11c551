"""The event-loop lag probe reports a stall, and CPU loops that give way let others run.

The tests wait on the probe's own ticks (a gauge that counts its updates), never on a fixed
sleep: the stall is the thing under test, the waits around it are conditions with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Gauge

from core.looplag import Yielder, probe_loop_lag

pytestmark = pytest.mark.unit


class TickingGauge(Gauge):
    """A gauge that counts its updates: one per probe tick."""

    ticks = 0

    def set(self, value: float) -> None:
        self.ticks += 1
        super().set(value)


def _gauge() -> TickingGauge:
    return TickingGauge("lag_seconds", "test", registry=CollectorRegistry())


def _value(gauge: Gauge) -> float:
    return float(gauge._value.get())


async def _until(condition: Callable[[], bool], *, what: str, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the loop (a blocking wait would stall the probe under test)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def _ticked(gauge: TickingGauge, *, times: int = 1) -> None:
    """Wait until the probe has updated the gauge ``times`` more times."""
    target = gauge.ticks + times
    await _until(lambda: gauge.ticks >= target, what=f"{times} probe tick(s)")


async def _busy(seconds: float, give_way: Yielder | None = None) -> None:
    """CPU work on the loop, as a fold or a backfill does it."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        sum(range(200))
        if give_way is not None:
            await give_way()


async def test_a_held_loop_shows_as_lag_for_the_window() -> None:
    window_s = 0.5
    gauge = _gauge()
    probe = asyncio.create_task(probe_loop_lag(gauge, interval_s=0.01, window_s=window_s))
    try:
        await _ticked(gauge, times=3)
        assert _value(gauge) < 0.1  # idle: a few ms at most
        await _busy(0.3)  # holds the loop 300 ms without yielding
        await _ticked(gauge)  # the probe's first wake after the stall
        seen_at = time.monotonic()
        assert _value(gauge) >= 0.25  # it woke ~300 ms late
        await _until(lambda: _value(gauge) < 0.1, what="the stall to leave the window")
        # The sliding maximum holds the stall for the window, not only until the next tick
        # (fails if the gauge showed the last lag alone, or if expired lags were never dropped).
        assert time.monotonic() - seen_at >= window_s * 0.8
    finally:
        probe.cancel()


@pytest.mark.parametrize(("give_way", "max_lag_s"), [
    (None, None),  # holds the loop for the whole 300 ms
    (Yielder(0.005), 0.15),  # gives way every 5 ms: the probe is a few slices late at most
])
async def test_a_cpu_loop_that_gives_way_leaves_the_loop_responsive(
        give_way: Yielder | None, max_lag_s: float | None) -> None:
    gauge = _gauge()
    probe = asyncio.create_task(probe_loop_lag(gauge, interval_s=0.01, window_s=10))
    try:
        await _ticked(gauge, times=2)  # the probe runs
        await _busy(0.3, give_way)
        await _ticked(gauge)  # its first wake after the work: the window holds all of it
        if max_lag_s is None:
            assert _value(gauge) >= 0.25
        else:
            assert _value(gauge) < max_lag_s
    finally:
        probe.cancel()
