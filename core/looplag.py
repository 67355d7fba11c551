"""The event-loop lag probe: how late a periodic sleep wakes up is how long any callback (an
API request included) waited behind whatever held the loop.

``sems_event_loop_lag_seconds`` is the worst delay of the last ``window_s`` (a sliding
maximum), so a one-second stall stays visible to a scrape or a benchmark that polls less often
than the probe ticks; the alert SemsEventLoopLagHigh fires on it.

What keeps it low in ``sems run``, which serves the API from the loop that also backfills,
ingests and folds: CPU loops give way every few ms (:class:`Yielder`), and the start-up's
heap is frozen out of the garbage collector's full passes (:func:`freeze_startup_heap`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque

from prometheus_client import Gauge

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.1
WINDOW_S = 10.0
LOG_ABOVE_S = 0.25
"""A stall this long is logged (at most once per window), with how long it was."""


async def probe_loop_lag(gauge: Gauge, *, interval_s: float = PROBE_INTERVAL_S,
                         window_s: float = WINDOW_S, log_above_s: float = LOG_ABOVE_S) -> None:
    """Sleep ``interval_s`` forever; set ``gauge`` to the longest overshoot of the last
    ``window_s``."""
    loop = asyncio.get_running_loop()
    recent: deque[tuple[float, float]] = deque()  # (woke at, lag), lags decreasing
    logged_at = -window_s
    while True:
        before = loop.time()
        await asyncio.sleep(interval_s)
        now = loop.time()
        lag_s = max(0.0, now - before - interval_s)
        # A monotonic deque: drop older entries the new lag dominates, then expired ones.
        while recent and recent[-1][1] <= lag_s:
            recent.pop()
        recent.append((now, lag_s))
        while recent[0][0] < now - window_s:
            recent.popleft()
        gauge.set(recent[0][1])
        if lag_s > log_above_s and now - logged_at >= window_s:
            logged_at = now
            log.warning("event loop held for %.0f ms (a callback ran that long without "
                        "yielding; API answers waited)", lag_s * 1000)


YIELD_EVERY_S = 0.005
"""CPU work on the event loop hands it back after about this long (see :class:`Yielder`)."""


class Yielder:
    """Lets a long loop of CPU work on the event loop give way to other callbacks (API
    requests) every ``budget_s``: ``await yielder()`` inside the loop costs a clock read
    until the budget is spent, then one turn of the event loop."""

    __slots__ = ("_budget_s", "_since")

    def __init__(self, budget_s: float = YIELD_EVERY_S) -> None:
        self._budget_s = budget_s
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        now = time.perf_counter()
        if now - self._since >= self._budget_s:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now into the collector's permanent
    generation. A long-running process holds a few hundred thousand objects from its imports
    (pandas, statsmodels, pydantic schemas) that never die; without this every full
    collection walks them all, and during a backfill those pauses held the event loop for up
    to 570 ms (bench/startup.py, docs/performance.md). Call at the end of the start-up, before
    the API listens: the collection itself takes a few hundred ms."""
    gc.collect()
    gc.freeze()
