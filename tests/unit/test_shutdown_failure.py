"""A part the process cannot run without fails for good (a Faust worker whose consumer
crashed): the process stops as on a signal and exits non-zero, rather than running on with
the part dead and its health check green."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from streams.shutdown import EXIT_FAILED, Shutdown


@pytest.fixture
def shutdown() -> Iterator[Shutdown]:
    stopping = Shutdown(grace_s=5)
    yield stopping
    stopping.disarm()  # the hard-exit timer would end pytest


async def test_a_failed_part_stops_the_process_with_its_reason(
    shutdown: Shutdown, caplog: pytest.LogCaptureFixture,
) -> None:
    crashed = asyncio.Event()

    async def worker_failed() -> str:
        await crashed.wait()
        return "Consumer crashed: AssertionError()"

    shutdown.stop_when("faust worker", worker_failed())
    await asyncio.sleep(0)
    assert not shutdown.requested.is_set()
    with caplog.at_level(logging.CRITICAL, logger="streams.shutdown"):
        crashed.set()
        await asyncio.wait_for(shutdown.requested.wait(), timeout=5)
    assert shutdown.failure == "faust worker: Consumer crashed: AssertionError()"
    assert "exiting with status 70" in caplog.text and EXIT_FAILED == 70
    assert await shutdown.stop() == []  # the watch is a stop step of its own, and ends


async def test_a_watch_that_raises_fails_the_process_too(shutdown: Shutdown) -> None:

    async def broken() -> str:
        raise RuntimeError("no consumer")

    shutdown.stop_when("faust worker", broken())
    await asyncio.wait_for(shutdown.requested.wait(), timeout=5)
    assert shutdown.failure is not None and "no consumer" in shutdown.failure
    assert await shutdown.stop() == []


async def test_a_signal_first_is_an_orderly_stop_not_a_failure(shutdown: Shutdown) -> None:
    never = asyncio.Event()

    async def worker_failed() -> str:
        await never.wait()
        return "unreachable"

    shutdown.stop_when("faust worker", worker_failed())
    shutdown.request()
    assert await shutdown.stop() == []
    assert shutdown.failure is None


async def test_a_failed_process_exits_70_even_when_its_stop_abandons_work(
    shutdown: Shutdown,
) -> None:
    assert shutdown.exit_code(abandoned=True) == 1 and shutdown.exit_code(abandoned=False) == 0
    shutdown.fail("faust worker: Consumer crashed")
    assert shutdown.exit_code(abandoned=True) == EXIT_FAILED
    assert shutdown.exit_code(abandoned=False) == EXIT_FAILED


async def test_the_stop_clock_starts_once(shutdown: Shutdown) -> None:
    """A failure reported after the stop began neither moves its deadline nor arms a second
    hard-exit timer (which disarm would miss)."""
    shutdown.request()
    deadline, timer = shutdown._deadline, shutdown._timer
    shutdown.fail("late")
    assert shutdown.failure is None  # a stop was already under way: not a failure
    assert shutdown._begin() == deadline and shutdown._timer is timer
