"""Started in order, stopped in reverse, also when a start fails: the lifecycle of a process's
parts.

``contextlib.AsyncExitStack`` semantics, with names: each part that starts pushes the named
steps that stop it, and the stop runs every step in the reverse order of the pushes (what was
opened last is closed first). The names are what ``streams.shutdown`` needs: it runs the
steps under one deadline and logs the one it abandons. A part whose start raises stops what
started before it, then the error goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from streams.shutdown import Step

log = logging.getLogger(__name__)

Steps = Callable[[], list[Step]]


class Lifecycle:
    def __init__(self) -> None:
        self._pushed: list[Step | Steps] = []

    def push(self, name: str, stop: Callable[[], Awaitable[object]]) -> None:
        """``stop`` runs at the stop, as the step ``name``."""
        self._pushed.append((name, stop))

    def push_steps(self, steps: Steps) -> None:
        """Several steps, in the order ``steps()`` gives them when the stop begins (a part
        whose stop depends on how far its start got)."""
        self._pushed.append(steps)

    async def start(self, name: str, start: Callable[[], Awaitable[object]],
                    stop: Callable[[], Awaitable[object]] | None = None) -> None:
        """Start a part and, once it has started, push its stop (``name``). A failed start
        stops everything started before it, and raises."""
        try:
            await start()
        except BaseException:
            await self.aclose()
            raise
        if stop is not None:
            self.push(name, stop)

    def stop_steps(self) -> list[Step]:
        """Every pushed step, last pushed first; taken: a second call returns nothing."""
        steps: list[Step] = []
        for pushed in reversed(self._pushed):
            steps += pushed() if callable(pushed) else [pushed]
        self._pushed = []
        return steps

    async def aclose(self) -> None:
        """Run the stop steps one after another, without a deadline (tests, benchmarks, a
        failed start); a step that fails is logged and the others still run."""
        for name, stop in self.stop_steps():
            try:
                await stop()
            except Exception:
                log.exception("stop step %r failed", name)

    async def __aenter__(self) -> Lifecycle:
        return self

    async def __aexit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                        _tb: TracebackType | None) -> None:
        await self.aclose()
