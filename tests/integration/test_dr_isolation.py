"""One DR event, or one BMS command, fails alone; no building is left shed (issue 13, finding 1
and properties 1 and 2). Real SQLite store, the simulated buildings behind the in-process BMS
or the SOAP simulator; the failures come from stored data (a year-9999 event, a corrupt plan)
or from a release path broken on purpose (releases dropped, the audit store refusing them),
not from patched agent code."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from agents.bms_command_agent import BmsCommandExecutor, bms_command_agent
from agents.dr_baseline_source import BaselineSource
from agents.dr_scheduler import DrService
from agents.dr_watchdog import DrWatchdog
from connectors.bms.soap import BmsClient
from connectors.sqlite import SqliteStore
from core.logs import TraceIdFilter
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from schemas.rollup import Rollup, Scope, WindowName
from simulators.bms.local import LocalBms
from simulators.bms.server import BmsServer
from simulators.bms.service import BmsService
from simulators.fleet import Fleet, build_fleet
from simulators.inventory import SimulatorInventory
from streams import compose
from streams.dr_wiring import DrWiring
from streams.settings import Settings
from tables.ports.bms import BmsController
from tables.ports.dr import DrStore
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)  # a Wednesday afternoon in New York
END = START + timedelta(minutes=10)
FAR = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
GAP_S, GRACE_S = 60.0, 900.0
DEADLINE = END + timedelta(seconds=GAP_S + GRACE_S)  # 2 release stages, 60 s apart


def rollups(facility_id: str, start: datetime, minutes: int, kw: float) -> list[Rollup]:
    return [Rollup(scope=Scope.FACILITY, facility_id=facility_id, window=WindowName.MIN_1,
                   window_start=start + timedelta(minutes=i),
                   window_end=start + timedelta(minutes=i + 1), avg_power_kw=kw,
                   max_power_kw=kw, min_power_kw=kw, total_energy_kwh=kw / 60, sample_count=4,
                   covered_s=60, coverage=1.0) for i in range(minutes)]


@dataclass
class Rig:
    store: SqliteStore
    fleet: Fleet
    service: BmsService
    now: datetime = START - timedelta(minutes=5)
    metrics: Metrics = field(default_factory=Metrics)

    def clock(self) -> datetime:
        return self.now

    def executor(self, bms: BmsController | None = None,
                 store: DrStore | None = None) -> BmsCommandExecutor:
        return BmsCommandExecutor(store or self.store, self.metrics, self.clock,
                                  bms=bms or LocalBms(self.service))

    def agent(self, executor: BmsCommandExecutor) -> DrService:
        async def publish(command: BmsCommandRecord) -> None:
            await executor.execute(command)

        return DrService(self.store, BaselineSource(self.store, self.store,
                                                    method="meter_before"),
                         publish, self.metrics, self.clock,
                         inventory=SimulatorInventory(self.fleet.models), release_stages=2,
                         release_gap_s=GAP_S)

    def watchdog(self, executor: BmsCommandExecutor) -> DrWatchdog:
        return DrWatchdog(self.store, executor, self.metrics, self.clock, release_stages=2,
                          release_gap_s=GAP_S, grace_s=GRACE_S)

    async def event(self, facility_id: str, start: datetime = START,
                    end: datetime = END) -> DrEvent:
        """Stored directly, as intake once did with any window (no bound checked here)."""
        e = DrEvent(id=str(uuid.uuid4()), event_id=f"E-{facility_id}-{start.year}",
                    utility_id="gridco", facility_id=facility_id, source="webhook",
                    event_start=start, event_end=end, target_reduction_percentage=25.0,
                    trace_id=f"trace-{uuid.uuid4().hex[:8]}", created_at=self.now,
                    updated_at=self.now)
        assert await self.store.insert_dr_event(e)
        return e

    async def load(self, e: DrEvent) -> DrEvent:
        got = await self.store.dr_event(e.id)
        assert got is not None
        return got

    def settings_of(self, facility_id: str) -> list[tuple[str, float]]:
        b = self.fleet.models[facility_id]
        return ([(z.zone_id, z.setpoint_offset_c) for z in b.zones]
                + [(g.group_id, g.level_pct) for g in b.lighting_groups])

    def failures(self, loop: str) -> float:
        return self.metrics.registry.get_sample_value("sems_item_failures_total",
                                                      {"loop": loop}) or 0.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fleet = build_fleet(facilities=2, meters_per_facility=4, seed=42)
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    await store.upsert_facilities(list(fleet.facilities))
    for f in fleet.facilities:
        await store.commit(CommitBatch(rollups=rollups(f.facility_id,
                                                       START - timedelta(minutes=20), 20, 400)))
    yield Rig(store, fleet, BmsService(fleet.models))
    await store.close()


def a_manager_set(rig: Rig, facility_id: str) -> list[tuple[str, float]]:
    """Pre-event settings that are not the neutral ones: a release (or the watchdog) must
    put these back, not 0 degC and 100 %."""
    b = rig.fleet.models[facility_id]
    b.zones[0].setpoint_offset_c, b.lighting_groups[0].level_pct = -1.0, 60.0
    return rig.settings_of(facility_id)


async def test_a_year_9999_event_fails_alone_and_the_others_are_released_and_reported(
    rig: Rig, caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 1: the far-future event is read on every pass; it fails with a reason, is
    counted and logged once, and another facility's event is planned, applied, released and
    reported by the same loop, which keeps running."""
    caplog.handler.addFilter(TraceIdFilter())
    before = a_manager_set(rig, "fac-001")
    good = await rig.event("fac-001")
    bad = await rig.event("fac-002", FAR, FAR + timedelta(minutes=59))
    dr = rig.agent(rig.executor())
    dr.poll_s = 0.05
    with caplog.at_level(logging.INFO, logger="agents"):
        loop = asyncio.create_task(dr.run_forever())
        try:
            async def status(e: DrEvent, want: str) -> bool:
                return (await rig.load(e)).status == want

            await eventually(lambda: status(bad, "failed"), timeout_s=10, what="bad failed")
            await eventually(lambda: status(good, "scheduled"), timeout_s=10, what="planned")
            assert (await rig.load(good)).plan is not None
            rig.now = START
            dr.wake()
            await eventually(lambda: status(good, "active"), timeout_s=10, what="applied")
            assert rig.settings_of("fac-001") != before
            await rig.store.commit(CommitBatch(rollups=rollups("fac-001", START, 10, 330)))
            rig.now = END
            dr.wake()
            await eventually(lambda: rig_stage(rig, good, 1), timeout_s=10, what="stage 1")
            rig.now = END + timedelta(seconds=GAP_S)
            dr.wake()
            await eventually(lambda: status(good, "completed"), timeout_s=10, what="report")
            assert not loop.done()  # the loop goes on
        finally:
            loop.cancel()
    done = await rig.load(good)
    assert done.report is not None and done.achieved_reduction_kw == pytest.approx(70.0)
    assert rig.settings_of("fac-001") == before
    failed = await rig.load(bad)
    assert any("OverflowError" in f for f in failed.failures), failed.failures
    assert rig.failures("dr_event") == 1
    lines = [r for r in caplog.records if bad.id in r.getMessage()
             and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # once, not once a pass
    assert getattr(lines[0], "trace_id", None) == bad.trace_id


async def rig_stage(rig: Rig, e: DrEvent, stages: int) -> bool:
    return (await rig.load(e)).release_stages_sent >= stages


async def test_an_event_that_fails_while_shed_releases_its_loads_at_once(rig: Rig) -> None:
    """Its stored plan is corrupt mid-event (the plan model cannot read it): the event fails
    with the reason, and its loads are released from the audit trail in the same pass, to the
    settings they had before the event."""
    before = a_manager_set(rig, "fac-001")
    e = await rig.event("fac-001")
    dr = rig.agent(rig.executor())
    await dr.tick()
    rig.now = START
    await dr.tick()
    shed = rig.settings_of("fac-001")
    assert shed != before
    active = await rig.load(e)
    await rig.store.update_dr_event(active.model_copy(update={"plan": {"actions": "?"}}))
    rig.now = START + timedelta(minutes=1)
    await dr.tick()
    failed = await rig.load(e)
    assert failed.status == "failed"
    assert any("the DR agent failed on this event" in f for f in failed.failures)
    assert rig.settings_of("fac-001") == before  # released now, not at the deadline
    assert rig.failures("dr_event") == 1
    records = await rig.store.bms_commands(e.id)
    assert all(r.released_at is not None for r in records if r.phase == "apply")


async def test_the_watchdog_restores_loads_whose_releases_were_dropped(rig: Rig) -> None:
    """The release path drops every release command; over the real SOAP simulator, the
    watchdog puts each load back to its pre-event setting at the deadline (not before), fails
    the event naming the loads, counts them, and a restarted watchdog sends nothing again."""
    before = a_manager_set(rig, "fac-001")
    async with (BmsServer(rig.service, host="127.0.0.1", port=0) as server,
                BmsClient(server.wsdl_url, timeout_s=5.0) as client):
        executor = rig.executor(bms=client)

        async def drop_releases(command: BmsCommandRecord) -> None:
            if command.phase == "apply":
                await executor.execute(command)

        dr = rig.agent(executor)
        dr.publish_command = drop_releases
        e = await rig.event("fac-001")
        await dr.tick()
        rig.now = START
        await dr.tick()
        applied = [r for r in await rig.store.bms_commands(e.id) if r.phase == "apply"]
        assert applied and rig.settings_of("fac-001") != before
        assert all(r.restore_value is not None for r in applied)
        await rig.store.commit(CommitBatch(rollups=rollups("fac-001", START, 10, 330)))
        for rig.now in (END, END + timedelta(seconds=GAP_S), END + timedelta(minutes=15)):
            await dr.tick()
        assert (await rig.load(e)).status == "failed"  # the DR agent's own check
        assert rig.settings_of("fac-001") != before  # but the loads are still shed

        watchdog = rig.watchdog(executor)
        rig.now = DEADLINE - timedelta(seconds=1)
        assert await watchdog.check() == 0 and rig.settings_of("fac-001") != before
        rig.now = DEADLINE
        assert await watchdog.check() == len(applied)
        assert rig.settings_of("fac-001") == before
        restarted = rig.watchdog(executor)
        assert await restarted.check() == 0
    failed = await rig.load(e)
    assert failed.status == "failed"
    [named] = [f for f in failed.failures if "DR watchdog restored" in f]
    assert all(r.target_id in named for r in applied)
    assert rig.metrics.registry.get_sample_value("sems_dr_watchdog_restores_total",
                                                 {"facility_id": "fac-001"}) == len(applied)
    records = await rig.store.bms_commands(e.id)
    assert all(r.released_at is not None for r in records if r.phase == "apply")
    assert sum(r.why.startswith("DR watchdog") for r in records) == len(applied)


class ReleasesRefused:
    """The audit store, except that release commands cannot be recorded (a store that keeps
    failing for them): the command agent must give each up alone."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        if record.phase == "release":
            raise StoreUnavailable("bms_commands: disk I/O error")
        return await self.store.record_bms_command(record)


async def test_a_command_whose_store_write_keeps_failing_is_given_up_alone(rig: Rig) -> None:
    """The bms-commands agent tries a command whose audit write fails, gives it up after its
    attempts (counted, noted on the event), executes the next one, and keeps running; the
    watchdog then restores the load it left shed (the other facility's was released)."""
    before = {f: a_manager_set(rig, f) for f in ("fac-001", "fac-002")}
    events = [await rig.event(f) for f in ("fac-001", "fac-002")]
    queue: asyncio.Queue[list[BmsCommandRecord]] = asyncio.Queue()

    async def batches() -> AsyncIterator[list[BmsCommandRecord]]:
        while True:
            yield await queue.get()

    executor = rig.executor(store=cast(DrStore, ReleasesRefused(rig.store)))
    agent = asyncio.create_task(bms_command_agent(batches(), executor=executor,
                                                  store_retry_s=0, store_attempts=3))
    dr = rig.agent(rig.executor())  # applies straight away; releases go to the stream

    async def publish(command: BmsCommandRecord) -> None:
        if command.phase == "apply":
            await rig.executor().execute(command)
        elif command.facility_id == "fac-001":
            await queue.put([command])  # through the broken store
        else:
            await rig.executor().execute(command)

    dr.publish_command = publish
    try:
        await dr.tick()
        rig.now = START
        await dr.tick()
        for f in ("fac-001", "fac-002"):
            await rig.store.commit(CommitBatch(rollups=rollups(f, START, 10, 330)))
        rig.now = END + timedelta(seconds=GAP_S)
        await dr.tick()
        await dr.tick()
        await eventually(lambda: _true(rig.failures("bms_command") >= 1), timeout_s=10,
                         what="a command given up")
        await queue.put([])  # the agent takes the next batch: it is still running
        await eventually(lambda: _true(queue.empty()), timeout_s=10, what="next batch")
        assert not agent.done()
    finally:
        agent.cancel()
    assert rig.settings_of("fac-002") == before["fac-002"]
    assert rig.settings_of("fac-001") != before["fac-001"]
    noted = (await rig.load(events[0])).failures
    assert any("was not executed" in f and "3 attempts" in f for f in noted), noted
    rig.now = DEADLINE
    assert await rig.watchdog(rig.executor()).check() > 0
    assert rig.settings_of("fac-001") == before["fac-001"]


async def _true(value: bool) -> bool:
    return value


class DownStore:
    """The store is unreachable for event updates: the pass's problem, not the event's."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update_dr_event(self, event: DrEvent) -> None:
        if self.down:
            raise StoreUnavailable("database is locked")
        await self.store.update_dr_event(event)


async def test_a_store_outage_fails_no_event(rig: Rig) -> None:
    e = await rig.event("fac-001")
    dr = rig.agent(rig.executor())
    down = DownStore(rig.store)
    dr.store = cast(Any, down)
    with pytest.raises(StoreUnavailable):
        await dr.tick()
    stored = await rig.load(e)
    assert stored.status == "scheduled" and not stored.failures
    assert rig.failures("dr_event") == 0
    down.down = False
    await dr.tick()
    assert (await rig.load(e)).plan is not None


async def test_back_to_back_events_give_back_the_settings_from_before_the_first(
    rig: Rig,
) -> None:
    """Found by the lifecycle state machine: the second event's commands go out (5 s before
    its start) while the first still holds its last release stage. Planned from the loads as
    they are, its release would restore the first event's shed settings for good; planned
    from the audit trail's pre-event settings, the building ends as it was."""
    before = a_manager_set(rig, "fac-001")
    first = await rig.event("fac-001")
    second_start = END + timedelta(seconds=GAP_S)  # the first's last stage is due then
    second = await rig.event("fac-001", second_start, second_start + timedelta(minutes=10))
    dr = rig.agent(rig.executor())
    await dr.tick()
    rig.now = START
    await dr.tick()
    await rig.store.commit(CommitBatch(rollups=rollups("fac-001", START, 30, 330)))
    rig.now = END
    await dr.tick()  # the first's stage 1
    rig.now = second_start - timedelta(seconds=5)
    await dr.tick()  # the second applies; the first's stage 2 is not due yet
    assert (await rig.load(second)).status == "active"
    held = [r for r in await rig.store.bms_commands(first.id)
            if r.phase == "apply" and r.released_at is None]
    assert held  # the first still holds some loads
    for rig.now in (second_start, second_start + timedelta(minutes=10),
                    second_start + timedelta(minutes=11), second_start + timedelta(minutes=20)):
        await dr.tick()
    assert (await rig.load(first)).final and (await rig.load(second)).final
    assert rig.settings_of("fac-001") == before


async def test_both_runtimes_run_the_watchdog_on_the_bms_they_attach(rig: Rig,
                                                                     tmp_path: Path) -> None:
    """Both runtimes run the registered dr-watchdog service next to the DR scheduler, on the
    BMS client the wiring opened (SEMS_BMS_URL here, the SOAP simulator), with the release
    grace setting."""
    assert {"dr-scheduler", "dr-watchdog"} <= {spec.name for spec in compose.SERVICES}
    before = rig.settings_of("fac-001")

    async def ignore(_: object) -> None:
        pass

    async with BmsServer(rig.service, host="127.0.0.1", port=0) as server:
        s = Settings(data_dir=tmp_path, bms_url=server.wsdl_url, dr_release_grace_s=120)
        wiring = DrWiring(s, rig.store, rig.metrics, rig.clock, publish_event=ignore,
                          publish_command=ignore)
        await wiring.open()
        try:
            watchdog = wiring.watchdog
            assert watchdog.grace_s == 120 and watchdog.executor is wiring.executor
            assert wiring.executor.bms is not None
            e = await rig.event("fac-001")
            shed = BmsCommandExecutor(rig.store, rig.metrics, rig.clock,
                                      bms=LocalBms(rig.service))
            zone = rig.fleet.models["fac-001"].zones[0].zone_id
            await shed.execute(BmsCommandRecord(
                command_id=str(uuid.uuid4()), dr_event_id=e.id, facility_id="fac-001",
                kind="zone_setpoint_offset", target_id=zone, value=3.0, phase="apply",
                why="test: shed by an event whose release never came", requested_at=rig.now,
                restore_value=0.0))
            assert rig.settings_of("fac-001") != before
            rig.now = END + timedelta(seconds=2 * s.dr_release_gap_s + 120)
            assert await watchdog.check() == 1
            assert rig.settings_of("fac-001") == before
        finally:
            await wiring.close()


async def test_an_apply_that_comes_after_its_release_is_not_sent(rig: Rig) -> None:
    """An apply the command agent gave up (its audit row never written) and the DR agent
    publishes again after the event's releases went out: sent, it would shed the load with
    nothing left to release it. It is recorded as superseded instead, the load keeps its
    setting, and neither the audit trail nor the watchdog counts it as shed."""
    before = a_manager_set(rig, "fac-001")
    executor = rig.executor()
    dropped: list[BmsCommandRecord] = []

    async def drop_one_apply(command: BmsCommandRecord) -> None:
        if command.phase == "apply" and not dropped:
            dropped.append(command)
            return
        await executor.execute(command)

    dr = rig.agent(executor)
    dr.publish_command = drop_one_apply
    e = await rig.event("fac-001")
    await dr.tick()
    rig.now = START
    await dr.tick()
    assert dropped
    await rig.store.commit(CommitBatch(rollups=rollups("fac-001", START, 10, 330)))
    for rig.now in (END, END + timedelta(seconds=GAP_S), END + timedelta(minutes=15)):
        await dr.tick()
    assert (await rig.load(e)).status == "completed"
    assert rig.settings_of("fac-001") == before

    late = await executor.execute(dropped[0])
    assert (late.result, late.failure) == ("failed", "superseded")
    assert rig.settings_of("fac-001") == before
    rig.now = DEADLINE
    assert await rig.watchdog(executor).check() == 0
    assert (await rig.load(e)).status == "completed"


async def test_the_watchdog_finds_a_shed_event_behind_a_page_of_future_ones(rig: Rig) -> None:
    """More events scheduled ahead than the watchdog reads in a pass (its limit is 2 here):
    it reads the events past their deadline, not the latest to start, so the shed one is
    restored and fails naming its loads."""
    before = a_manager_set(rig, "fac-001")
    executor = rig.executor()

    async def drop_releases(command: BmsCommandRecord) -> None:
        if command.phase == "apply":
            await executor.execute(command)

    dr = rig.agent(executor)
    dr.publish_command = drop_releases
    e = await rig.event("fac-001")
    for day in range(1, 4):
        await rig.event("fac-002", START + timedelta(days=day), END + timedelta(days=day))
    await dr.tick()
    rig.now = START
    await dr.tick()
    assert (await rig.load(e)).status == "active"
    assert rig.settings_of("fac-001") != before
    watchdog = rig.watchdog(executor)
    watchdog.limit = 2
    rig.now = DEADLINE
    assert await watchdog.check() > 0
    assert rig.settings_of("fac-001") == before
    assert (await rig.load(e)).status == "failed"
