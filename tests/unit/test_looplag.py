"""The event-loop lag probe reports a stall, and CPU loops that give way let others run."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from streams.looplag import Yielder, probe_loop_lag

pytestmark = pytest.mark.unit


def _gauge() -> Gauge:
    return Gauge("lag_seconds", "test", registry=CollectorRegistry())


def _value(gauge: Gauge) -> float:
    return float(gauge._value.get())


async def _busy(seconds: float, give_way: Yielder | None = None) -> None:
    """CPU work on the loop, as a fold or a backfill does it."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        sum(range(200))
        if give_way is not None:
            await give_way()


async def test_a_held_loop_shows_as_lag_for_the_window() -> None:
    gauge = _gauge()
    probe = asyncio.create_task(probe_loop_lag(gauge, interval_s=0.01, window_s=0.5))
    try:
        await asyncio.sleep(0.05)
        assert _value(gauge) < 0.1  # idle: a few ms at most
        await _busy(0.3)  # holds the loop 300 ms without yielding
        await asyncio.sleep(0.05)
        assert _value(gauge) >= 0.25  # the probe woke ~300 ms late
        await asyncio.sleep(0.7)  # the stall leaves the window
        assert _value(gauge) < 0.1
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
        await asyncio.sleep(0.03)
        await _busy(0.3, give_way)
        await asyncio.sleep(0.03)
        if max_lag_s is None:
            assert _value(gauge) >= 0.25
        else:
            assert _value(gauge) < max_lag_s
    finally:
        probe.cancel()
