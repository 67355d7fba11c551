"""Where the agents' CPU-heavy calls run: on one thread of their own, off the event loop.

DR plans (HiGHS, which solves without the GIL), DR reports and settlement baselines (pandas
over weeks of 1-minute history) would hold the API's loop for up to half a second each
(docs/performance.md, "DR planning and the event loop"). They ran on ``asyncio.to_thread``:
the loop's default executor hands consecutive calls to different threads (up to
``cpu_count + 4``), and glibc gives each thread a malloc arena of its own that keeps what a
solve freed. Under the soak's DR schedule a SEMS process grew by 60 MB in a minute that way
and kept it; with every such call on one thread it grows by what one solve needs
(docs/reliability.md). The DR agent takes its events one at a time, so one thread costs it
no parallelism.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME = "sems-cpu"
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        return _pool


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the CPU thread, with the caller's context variables (its
    trace id), as ``asyncio.to_thread`` would; its exception is raised here."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)
