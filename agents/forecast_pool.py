"""The forecast agent's CPU work in worker processes, off the API's event loop and its GIL.

Model choice (a backtest: seconds of pandas/statsmodels per facility) on a thread of the API's
process holds the GIL, and every API answer waits for it (issue 13, finding 9). A spawned
worker process has its own interpreter: the event loop only pickles the inputs (plain data: a
Series, a Choice) and awaits the result.

A call that runs past ``timeout_s`` fails that item alone: the worker running it is killed
(a process cannot be cancelled otherwise) and a fresh pool is started for the next call.
``close`` never waits: queued calls are cancelled and the workers killed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing.connection import wait
from multiprocessing.queues import SimpleQueue
from typing import Literal, TypeVar

log = logging.getLogger(__name__)
R = TypeVar("R")

StartMethod = Literal["spawn", "forkserver"]


class WorkTimeout(TimeoutError):
    """A call ran past its timeout; its worker was killed."""


class WorkerLost(RuntimeError):
    """The worker process died during the call (killed, out of memory, a crash in C code)."""


def _worker_init(pids: SimpleQueue[int]) -> None:
    """Pool initializer: tell the parent which process to kill if a call hangs, and end this
    worker when the parent ends, however it ends (a SIGKILL of ``sems run`` leaves no
    workers behind; a pool worker otherwise waits on its call queue forever)."""
    pids.put(os.getpid())
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True,
                         name="parent-watch").start()


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


class ProcessRunner:
    """A bounded pool of worker processes (``workers``, 1 by default), started on first use."""

    def __init__(self, *, workers: int = 1, timeout_s: float = 120.0,
                 start_method: StartMethod = "spawn") -> None:
        if workers < 1 or timeout_s <= 0:
            raise ValueError("workers must be >= 1 and timeout_s > 0")
        self.workers = workers
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context(start_method)
        self._pool: ProcessPoolExecutor | None = None
        self._pids: SimpleQueue[int] | None = None
        self._known_pids: set[int] = set()
        self._closed = False
        self._slots = asyncio.Semaphore(workers)
        """Calls wait here, not in the pool's queue, so that a refit waiting behind a
        backtest is not timed out (and does not kill the backtest's worker) for the wait."""

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the forecast worker pool is closed")
        if self._pool is None:
            self._pids = self._ctx.SimpleQueue()
            self._known_pids = set()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx,
                                             initializer=_worker_init, initargs=(self._pids,))
        return self._pool

    async def run(self, fn: Callable[..., R], /, *args: object,
                  timeout_s: float | None = None, **kwargs: object) -> R:
        """``fn(*args, **kwargs)`` in a worker; ``fn`` and its arguments must pickle."""
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        async with self._slots:  # submitted when a worker is free: the timeout is run time
            return await self._submit(partial(fn, *args, **kwargs), fn, limit_s)

    async def _submit(self, call: Callable[[], R], fn: object, limit_s: float) -> R:
        future = self._executor().submit(call)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit_s)
        except TimeoutError:
            self._restart()
            raise WorkTimeout(f"{getattr(fn, '__name__', fn)} ran past {limit_s:g} s; "
                              "its worker was killed") from None
        except BrokenProcessPool as exc:
            self._restart()
            raise WorkerLost(f"the forecast worker died: {exc}") from None
        except asyncio.CancelledError:
            if not future.cancel():  # running: nobody wants it, and the next call would wait
                self._restart()
            raise

    def worker_pids(self) -> set[int]:
        """The live workers of the current pool."""
        if self._pids is not None:
            while not self._pids.empty():
                self._known_pids.add(self._pids.get())
        live = {p.pid for p in multiprocessing.active_children()}
        return self._known_pids & live

    def _kill_workers(self) -> None:
        """Kill the current pool's workers (only children the pool started: their pids came
        from the pool's initializer and are still unreaped children, so never reused)."""
        mine = self.worker_pids()
        for child in multiprocessing.active_children():
            if child.pid in mine:
                child.kill()

    def _restart(self) -> None:
        """Drop the pool whose worker hangs or died; the next call starts a fresh one."""
        pool, self._pool = self._pool, None
        self._kill_workers()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if self._pids is not None:
            self._pids.close()
            self._pids = None

    def close(self) -> None:
        """Stop now: queued calls are cancelled, running ones abandoned and their workers
        killed, so neither shutdown nor the interpreter's exit waits for a fit."""
        self._closed = True
        if self._pool is not None:
            log.debug("forecast workers: killing %s", sorted(self.worker_pids()))
        self._restart()
