"""Where the agents' CPU-heavy calls run: on one thread of their own, off the event loop.

DR plans (HiGHS, which solves without the GIL), DR reports and settlement baselines (pandas
over weeks of 1-minute history) would hold the API's loop for up to half a second each
(docs/performance.md, "DR planning and the event loop"). They ran on ``asyncio.to_thread``:
the loop's default executor hands consecutive calls to different threads (up to
``cpu_count + 4``), and glibc gives each thread a malloc arena of its own that keeps what a
solve freed. Under the soak's DR schedule a SEMS process grew by 60 MB in a minute that way
and kept it; with every such call on one thread it grew by what one solve needs (9 MB for
the demo and campus plans of bench/dr_stall.py, against 30 MB on the pool). The DR agent
takes its events one at a time, so one thread costs it no parallelism; the API's own calls
(a new event's baseline) have a second thread, so that they never wait behind a solve.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME = "sems-cpu"
Lane = Literal["agent", "request"]
LANE: contextvars.ContextVar[Lane] = contextvars.ContextVar("sems_offload_lane",
                                                           default="agent")
"""Which thread a call goes to: the agents' (one DR event after another), or, set by an API
handler for its own task, the requests' (the baseline of a ``POST /api/dr-events``), so that
an answer never waits behind an agent's solve. Two threads: two arenas at most."""
_pools: dict[Lane, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _executor(lane: Lane) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(lane)
        if pool is None:
            pool = _pools[lane] = ThreadPoolExecutor(
                1, thread_name_prefix=f"{THREAD_NAME}-{lane}")
        return pool


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the CPU thread of the caller's lane (``LANE``), with the
    caller's context variables (its trace id), as ``asyncio.to_thread`` would; its exception
    is raised here."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(LANE.get()), call)
