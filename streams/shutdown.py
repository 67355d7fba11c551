"""Stopping a long-running command (``sems run``, ``worker``, ``ingest``) within a bounded
grace, whatever its servers do.

A SIGTERM or SIGINT asks for an orderly stop: the start-up still under way is cancelled, then
the named stop steps (drain, commit, flush, close) run one after another under one deadline,
``shutdown_grace_s``. A step still running at the deadline is cancelled, the steps after it
are not run, and every task still pending is cancelled; whatever did not finish is logged by
name, counted in ``sems_shutdown_abandoned_total``, and the process exits non-zero without
waiting for it (``os._exit``: a client blocked on a stopped broker, in a thread of its own,
would otherwise hold the interpreter's exit). Abandoning is safe by design: readings are
acknowledged upstream only once stored, so what was in flight is delivered again.

A second SIGTERM/SIGINT exits at once. It is handled by a plain ``signal`` handler rather than
the event loop's, so it works even while the loop is held.

What the loop cannot bound, a thread does: a step that holds the event loop (a blocking call
in a coroutine), or the interpreter's exit waiting for executor threads stuck in a call. When
the stop begins, a daemon timer is armed for the grace plus ``HARD_EXIT_SLACK_S``; if the
process is still there then, it writes what it knows to stderr and leaves with
``os._exit``. A stop is therefore bounded by ``shutdown_grace_s + 1 s`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

from core.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Step = tuple[str, Callable[[], Awaitable[object]]]
"""A stop step: what it is (logged if it is abandoned), and the call that does it."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)
CANCEL_WAIT_S = 1.0
"""How long cancelled work may take to unwind once the grace is up (within the grace)."""
EXIT_ABANDONED = 1
EXIT_FAILED = 70
"""A part the process cannot run without failed (``EX_SOFTWARE``): restart it."""
HARD_EXIT_SLACK_S = 1.0
"""After the grace, how long the orderly path may take to report and exit before the timer
thread exits for it."""


def _exit_now(signum: int, _frame: FrameType | None) -> None:
    """The second signal: no more waiting."""
    with contextlib.suppress(OSError):
        os.write(2, f"sems: {signal.Signals(signum).name} again, exiting now\n".encode())
    os._exit(128 + signum)


def exit_abandoned(code: int = EXIT_ABANDONED) -> None:
    """Leave the process at once, after writing out what is buffered for the log."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _hard_exit(shutdown: Shutdown) -> None:
    """The timer thread's exit: the loop could not end the stop (it is held, or the exit is
    waiting for a thread)."""
    with contextlib.suppress(OSError):
        os.write(2, f"sems: the stop did not end within the grace of {shutdown.grace_s:g} s "
                    "(SEMS_SHUTDOWN_GRACE_S); the event loop or a thread is stuck: exiting "
                    "now\n".encode())
    os._exit(shutdown.exit_code(abandoned=True))


def _task_label(task: asyncio.Task[Any]) -> str:
    """A task's name, or for an unnamed one (``Task-123``) what it runs."""
    name = task.get_name()
    if name.startswith("Task-") or name.startswith("<coroutine object"):
        coro = task.get_coro()
        return str(getattr(coro, "__qualname__", None) or name)
    return name


class Shutdown:
    """One per process: the signal handlers, the stop steps and the grace they run under."""

    def __init__(self, *, grace_s: float, metrics: Metrics | None = None,
                 cancel_wait_s: float = CANCEL_WAIT_S) -> None:
        self.grace_s = grace_s
        self.metrics = metrics
        self.cancel_wait_s = min(cancel_wait_s, grace_s / 4)
        self.requested = asyncio.Event()
        self.signal: signal.Signals | None = None
        self.failure: str | None = None
        """Why the process stops on its own (a part it cannot run without failed): it then
        exits with ``EXIT_FAILED`` for its supervisor to restart it."""
        self._steps: list[Step | Callable[[], list[Step]]] = []
        self._deadline: float | None = None
        self._bounded: dict[str, float] = {}
        self._timer: threading.Timer | None = None
        self._installed = False

    def install(self) -> None:
        self._installed = True
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request, sig)

    def request(self, sig: signal.Signals | None = None) -> None:
        """Ask for the orderly stop (the first signal); any further signal exits at once."""
        if self.requested.is_set():
            return
        self.signal = sig
        self._begin()
        self.requested.set()
        self._second_signal_exits()
        if sig is not None:
            log.info("%s: stopping within %g s (SEMS_SHUTDOWN_GRACE_S); send it again to exit "
                     "at once", sig.name, self.grace_s)

    def _second_signal_exits(self) -> None:
        """From the stop on, a SIGTERM/SIGINT exits at once (a plain handler: it works while
        the loop is held). Only for a process whose handlers ``install`` set."""
        if not self._installed:
            return
        self._installed = False
        loop = asyncio.get_running_loop()
        for s in SIGNALS:
            loop.remove_signal_handler(s)
            signal.signal(s, _exit_now)

    def exit_code(self, *, abandoned: bool) -> int:
        """What the process exits with: ``EXIT_FAILED`` when a part failed (whatever the stop
        did), ``EXIT_ABANDONED`` when the stop abandoned work, else 0."""
        if self.failure is not None:
            return EXIT_FAILED
        return EXIT_ABANDONED if abandoned else 0

    def stop_when(self, name: str, failed: Coroutine[Any, Any, str]) -> None:
        """Watch ``failed``, which returns (with the reason) once a part the process cannot
        run without has failed for good, such as a Faust worker whose consumer crashed: the
        process then logs the reason, stops as on a signal, and exits with ``EXIT_FAILED``,
        rather than running on with the part dead and its health check still green."""
        watch = asyncio.ensure_future(failed)

        def done(task: asyncio.Future[str]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            reason = task.result() if error is None else f"{name} watch failed: {error!r}"
            self.fail(f"{name}: {reason}")

        watch.add_done_callback(done)

        async def cancel() -> None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

        self.on_stop(f"{name} watch", cancel)

    def fail(self, reason: str) -> None:
        """Stop because a part failed for good (see ``stop_when``)."""
        if self.requested.is_set():
            return
        self.failure = reason
        log.critical("stopping: %s; exiting with status %d for the supervisor to restart "
                     "the process", reason, EXIT_FAILED)
        self.request()

    def _begin(self) -> float:
        """The stop's clock starts (once): its deadline, and the timer that enforces it if the
        loop cannot."""
        if self._deadline is not None:
            return self._deadline
        self._deadline = time.monotonic() + self.grace_s
        self._timer = threading.Timer(self.grace_s + HARD_EXIT_SLACK_S, _hard_exit,
                                      args=(self,))
        self._timer.daemon = True
        self._timer.name = "sems-stop-deadline"
        self._timer.start()
        return self._deadline

    def disarm(self) -> None:
        """Cancel the hard-exit timer: for a caller that goes on after the stop (a test).
        The commands keep it armed until they have exited."""
        if self._timer is not None:
            self._timer.cancel()

    def on_stop(self, name: str, call: Callable[[], Awaitable[object]], *,
                within_s: float | None = None) -> None:
        """Run ``call`` at the stop; steps run in the reverse order of registration, like an
        exit stack (what was opened last is closed first). A step ``within_s`` gets at most
        that long, then it is abandoned and the stop goes on (a flush towards a server that
        may hang, which must not cost the steps after it their turn)."""
        self._steps.append((name, call))
        if within_s is not None:
            self._bounded[name] = within_s

    def on_stop_steps(self, steps: Callable[[], list[Step]]) -> None:
        """Register a component's stop steps, to run in the order ``steps()`` gives them when
        the stop begins (they depend on how far its start got)."""
        self._steps.append(steps)

    async def until_requested(self, work: Coroutine[Any, Any, T]) -> T | None:
        """Run ``work`` (a start-up) unless a stop is requested first: then it is cancelled
        (its stop steps, registered as it went, still run) and None is returned."""
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task}, timeout=self.cancel_wait_s)
        if not task.done():
            log.warning("start-up did not unwind when cancelled; going on with the stop")
        elif not task.cancelled() and task.exception() is not None:
            log.warning("start-up failed while cancelled", exc_info=task.exception())
        return None

    async def stop(self) -> list[str]:
        """Run the stop steps under the grace; returns what was abandoned (empty when the stop
        was orderly). Logs and counts each abandoned item."""
        deadline = self._deadline if self._deadline is not None else self._begin()
        # Cancelled work gets cancel_wait_s to unwind, inside the grace.
        orderly_until = deadline - self.cancel_wait_s
        abandoned: list[str] = []
        steps: list[Step] = []
        for entry in reversed(self._steps):
            steps += entry() if callable(entry) else [entry]
        self._steps = []
        for i, (name, call) in enumerate(steps):
            remaining_s = orderly_until - time.monotonic()
            if remaining_s <= 0:
                abandoned += [f"{n} (not started)" for n, _ in steps[i:]]
                break
            task = asyncio.ensure_future(call())
            bound_s = self._bounded.get(name)
            done, _ = await asyncio.wait({task}, timeout=remaining_s if bound_s is None
                                         else min(remaining_s, bound_s))
            if not done and bound_s is not None and bound_s < remaining_s:
                task.cancel()
                abandoned.append(f"{name} (cancelled after {bound_s:g} s)")
                continue
            if not done:
                task.cancel()
                abandoned.append(f"{name} (cancelled at the grace)")
                abandoned += [f"{n} (not started)" for n, _ in steps[i + 1:]]
                break
            if not task.cancelled() and task.exception() is not None:
                # A step that fails does not stop the others: the store still closes.
                log.error("stop step %r failed", name, exc_info=task.exception())
        if abandoned:
            abandoned += await self._cancel_pending()
            self._report(abandoned)
        return abandoned

    async def _cancel_pending(self) -> list[str]:
        """Cancel every task but this one; name those that have not ended once the grace
        is up."""
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            deadline = self._deadline or time.monotonic()
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        left = Counter(_task_label(t) for t in pending if not t.done())
        return [f"task {label}" + (f" x{n}" if n > 1 else "") for label, n in
                sorted(left.items())]

    def _report(self, abandoned: list[str]) -> None:
        log.error("stopped with work abandoned (it did not finish within its bound or the "
                  "grace of %g s, SEMS_SHUTDOWN_GRACE_S): %s", self.grace_s,
                  "; ".join(abandoned))
        if self.metrics is not None:
            self.metrics.shutdown_abandoned.inc(len(abandoned))
