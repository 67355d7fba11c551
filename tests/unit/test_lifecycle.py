"""A process's parts start in order and stop in reverse, also when a start fails."""

from __future__ import annotations

import pytest

from streams.lifecycle import Lifecycle
from streams.shutdown import Step

pytestmark = pytest.mark.unit


class Part:
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False,
                 fail_stop: bool = False) -> None:
        self.name, self.log = name, log
        self.fail_start, self.fail_stop = fail_start, fail_stop

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


async def test_parts_stop_in_the_reverse_order_of_their_start() -> None:
    log: list[str] = []
    async with Lifecycle() as life:
        for name in ("store", "weather", "agents"):
            part = Part(name, log)
            await life.start(f"{name} stop", part.start, part.stop)
    assert log == ["start store", "start weather", "start agents",
                   "stop agents", "stop weather", "stop store"]


async def test_a_failed_start_stops_what_started_before_it_and_raises() -> None:
    log: list[str] = []
    life = Lifecycle()
    store, bms = Part("store", log), Part("bms", log, fail_start=True)
    await life.start("store stop", store.start, store.stop)
    with pytest.raises(RuntimeError, match="bms cannot start"):
        await life.start("bms stop", bms.start, bms.stop)
    assert log == ["start store", "start bms", "stop store"]
    assert life.stop_steps() == []  # nothing is stopped twice


async def test_the_steps_are_named_in_stop_order_and_taken_once() -> None:
    """What streams.shutdown runs under its deadline: one step per pushed stop, and a part's
    several steps in the order it gives them, computed when the stop begins."""
    log: list[str] = []
    life = Lifecycle()
    a, b = Part("a", log), Part("b", log)
    await life.start("a stop", a.start, a.stop)
    started = {"flush": False}

    def b_steps() -> list[Step]:
        steps: list[Step] = [("b drain", b.stop)]
        return [*steps, ("b flush", b.stop)] if started["flush"] else steps

    life.push_steps(b_steps)
    started["flush"] = True
    assert [name for name, _ in life.stop_steps()] == ["b drain", "b flush", "a stop"]
    assert life.stop_steps() == []


async def test_a_failing_stop_step_does_not_keep_the_others_from_running(
        caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    life = Lifecycle()
    for part in (Part("store", log), Part("bms", log, fail_stop=True), Part("api", log)):
        await life.start(f"{part.name} stop", part.start, part.stop)
    await life.aclose()
    assert log[-3:] == ["stop api", "stop bms", "stop store"]
    assert "stop step 'bms stop' failed" in caplog.text
