"""The DR agent's CPU work runs off the event loop that serves the API (issue 13, property 9):
``plan_reduction`` (HiGHS, which solves without the GIL) and ``achieved_reduction`` on a
thread (``agents.offload``). The plan is the one inline planning gives, and a raise on the
thread fails that event alone. bench/dr_stall.py measures the loop's lag each way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from agents import dr_scheduler, offload
from agents.dr.baseline_result import baseline_of
from agents.dr.performance import achieved_reduction
from agents.dr.planner import plan_reduction
from bench.dr_stall import END as CAMPUS_END
from bench.dr_stall import START as CAMPUS_START
from bench.dr_stall import UPPER_KW, campus, most_kw
from simulators.inventory import SimulatorInventory
from tables.ports.timeseries import CommitBatch
from tests.integration import test_dr_isolation
from tests.integration.test_dr_isolation import END, GAP_S, START, Rig, rollups

pytestmark = pytest.mark.integration

rig = test_dr_isolation.rig  # the fixture: two simulated buildings, 400 kW metered before


@pytest.mark.parametrize(
    ("seed", "share"),
    [
        (0, 0.2),  # a light target: the priority-1 loads cover it, two tiers capped at 0
        (1, 0.7),  # deep: all three tiers shed (two tier solves, then the cost one)
        (2, 0.9),  # near all the campus can shed
    ],
)
async def test_a_campus_plan_on_a_thread_is_the_inline_plan(seed: int, share: float) -> None:
    """200 zones, 100 lighting groups, 40 deferrable loads (bench/dr_stall.py's campus)."""
    inventory = campus(seed)
    plan = partial(plan_reduction, inventory, target_reduction_kw=share * most_kw(inventory),
                   forecast_upper_kw=UPPER_KW, event_start=CAMPUS_START,
                   event_end=CAMPUS_END)
    inline = plan()
    assert inline.solver_status == "optimal" and inline.actions
    assert await asyncio.to_thread(plan) == inline


def watched(fn: Callable[..., Any], threads: dict[str, tuple[int, str]],
            name: str) -> Callable[..., Any]:
    """``fn``, noting the thread it runs on (id and name)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        threads[name] = (threading.get_ident(), threading.current_thread().name)
        return fn(*args, **kwargs)
    return call


async def test_the_agent_plans_and_reports_on_a_thread_with_the_inline_plan(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event planned, applied, released and reported: the solve and the report ran on
    another thread than the loop's, the same one (``agents.offload``: one thread, so one
    malloc arena, keeps a process's memory to what one solve needs), and the stored plan is
    what inline planning gives for the same baseline and inventory."""
    threads: dict[str, tuple[int, str]] = {}
    monkeypatch.setattr(dr_scheduler, "plan_reduction",
                        watched(plan_reduction, threads, "plan"))
    monkeypatch.setattr(dr_scheduler, "achieved_reduction",
                        watched(achieved_reduction, threads, "report"))
    e = await rig.event("fac-001")
    dr = rig.agent(rig.executor())
    await dr.tick()
    planned = await rig.load(e)
    assert planned.status == "scheduled" and planned.plan is not None
    assert planned.baseline is not None and planned.target_reduction_kw is not None
    baseline = baseline_of(planned.baseline)
    inventory = await SimulatorInventory(rig.fleet.models).inventory("fac-001", at=START)
    inline = plan_reduction(inventory, target_reduction_kw=planned.target_reduction_kw,
                            forecast_upper_kw=baseline.baseline_kw,  # no forecast stored
                            baseline_kw=baseline.baseline_kw, event_start=START,
                            event_end=END, event_id=e.id, release_stages=2,
                            release_gap_s=GAP_S)
    assert planned.plan == inline.model_dump(mode="json")
    assert inline.actions

    rig.now = START
    await dr.tick()
    await rig.store.commit(CommitBatch(rollups=rollups("fac-001", START, 10, 330)))
    for rig.now in (END, END + timedelta(seconds=GAP_S)):
        await dr.tick()
    done = await rig.load(e)
    assert done.status == "completed", done.failures
    assert done.achieved_reduction_kw == pytest.approx(70.0)  # 400 kW baseline - 330 metered
    loop_thread = threading.get_ident()
    assert set(threads) == {"plan", "report"}
    assert threads["plan"] == threads["report"]
    ident, name = threads["plan"]
    assert ident != loop_thread and name.startswith(offload.THREAD_NAME)


async def test_a_solve_that_raises_on_its_thread_fails_that_event_alone(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The planner raising for one building's inventory: that event fails with the reason and
    is counted; the other building's event in the same pass is planned."""
    def plan_or_raise(inventory: Any, **kwargs: Any) -> Any:
        if inventory.facility_id == "fac-002":
            raise RuntimeError("HiGHS gave up")
        return plan_reduction(inventory, **kwargs)

    monkeypatch.setattr(dr_scheduler, "plan_reduction", plan_or_raise)
    good, bad = await rig.event("fac-001"), await rig.event("fac-002")
    dr = rig.agent(rig.executor())
    await dr.tick()
    planned, failed = await rig.load(good), await rig.load(bad)
    assert planned.status == "scheduled" and planned.plan is not None
    assert failed.status == "failed"
    assert any("RuntimeError: HiGHS gave up" in f for f in failed.failures), failed.failures
    assert rig.failures("dr_event") == 1
