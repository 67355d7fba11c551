"""The DR agent and the BMS-command agent against the in-process BMS (``LocalBms``) and the
embedded store, on a clock of the test's own: apply at the start, staged restore after the
end, the report, failures recorded and counted, replays sending nothing twice, and a restart
in the middle of an event resuming from the store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from agents.bms_command_agent import BmsCommandExecutor, bms_command_agent
from agents.dr.commands import command_for
from agents.dr.plan import Plan
from agents.dr_baseline_source import BaselineSource
from agents.dr_scheduler import DrService
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from schemas.rollup import Rollup, Scope, WindowName
from simulators.bms.local import LocalBms
from simulators.bms.service import BmsService
from simulators.fleet import Fleet, build_fleet
from simulators.inventory import SimulatorInventory
from streams.dr_wiring import DrWiring
from streams.settings import Settings
from tables.ports.bms import BmsCommand, CommandResult
from tables.ports.dr import DrStore
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tests.servers import free_port

pytestmark = pytest.mark.integration

START = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)  # 14:00 in New York, a Wednesday
END = START + timedelta(minutes=10)
FAC = "fac-001"
BASE_KW, METERED_KW = 400.0, 330.0


def rollups(start: datetime, minutes: int, kw: float) -> list[Rollup]:
    return [Rollup(scope=Scope.FACILITY, facility_id=FAC, window=WindowName.MIN_1,
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
    sent: list[str] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)

    def clock(self) -> datetime:
        return self.now

    def observe(self, command: BmsCommand, _result: CommandResult, _duration_s: float) -> None:
        self.sent.append(command.command_id)

    def agent(self) -> tuple[DrService, BmsCommandExecutor]:
        """A DR agent and a command agent as a (re)started process builds them."""
        executor = BmsCommandExecutor(self.store, self.metrics, self.clock,
                                      bms=LocalBms(self.service, observers=[self.observe]))

        async def publish(command: BmsCommandRecord) -> None:
            await executor.execute(command)

        dr = DrService(self.store, BaselineSource(self.store, self.store, method="meter_before"),
                       publish, self.metrics, self.clock,
                       inventory=SimulatorInventory(self.fleet.models), release_stages=2,
                       release_gap_s=60)
        return dr, executor

    async def event(self, pct: float = 20.0) -> DrEvent:
        e = DrEvent(id="6a8e1c55-0d3e-4b8e-9d1e-3f0f4a1b2c3d", event_id="E-1",
                    utility_id="gridco", facility_id=FAC, source="webhook", event_start=START,
                    event_end=END, target_reduction_percentage=pct, trace_id="trace-1",
                    created_at=self.now, updated_at=self.now)
        await self.store.insert_dr_event(e)
        return e

    async def event_at(self, start: datetime, event_id: str) -> DrEvent:
        e = DrEvent(id=str(uuid.uuid4()), event_id=event_id, utility_id="gridco",
                    facility_id=FAC, source="webhook", event_start=start,
                    event_end=start + (END - START), target_reduction_percentage=20.0,
                    created_at=self.now, updated_at=self.now)
        await self.store.insert_dr_event(e)
        return e

    async def load(self) -> DrEvent:
        got = await self.store.dr_event("6a8e1c55-0d3e-4b8e-9d1e-3f0f4a1b2c3d")
        assert got is not None
        return got

    def offsets(self) -> list[float]:
        return [z.setpoint_offset_c for z in self.fleet.models[FAC].zones]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fleet = build_fleet(facilities=1, meters_per_facility=4, seed=42)
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    await store.upsert_facilities(list(fleet.facilities))
    await store.commit(CommitBatch(rollups=rollups(START - timedelta(minutes=20), 20, BASE_KW)))
    yield Rig(store, fleet, BmsService(fleet.models))
    await store.close()


async def test_plans_applies_at_start_releases_in_stages_and_reports(rig: Rig) -> None:
    dr, _ = rig.agent()
    await rig.event()
    assert await dr.tick() <= 1.0
    e = await rig.load()
    assert e.status == "scheduled" and e.baseline is not None and e.plan is not None
    assert e.baseline["method"] == "meter_before" and e.target_reduction_kw == 80.0  # 20 % of 400
    assert rig.sent == [] and rig.offsets() == [0.0] * 4  # nothing before the start

    rig.now = START - timedelta(seconds=6)
    assert await dr.tick() == pytest.approx(1.0)  # due in 1 s: 5 s before the start
    assert rig.sent == []
    rig.now = START - timedelta(seconds=5)
    await dr.tick()
    assert (await rig.load()).status == "active"
    applied = list(rig.sent)
    assert applied and any(o != 0 for o in rig.offsets())
    records = await rig.store.bms_commands(e.id)
    assert {r.phase for r in records} == {"apply"} and all(r.result == "ok" for r in records)
    assert all(r.trace_id == "trace-1" and r.why.startswith(f"DR event {e.id} (gridco/E-1)")
               for r in records)

    rig.now = END  # the first release stage; the second 60 s later
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    await dr.tick()
    assert (await rig.load()).release_stages_sent == 1
    rig.now = END + timedelta(seconds=60)
    await dr.tick()
    e = await rig.load()
    assert e.status == "completed" and e.release_stages_sent == 2
    assert rig.offsets() == [0.0] * 4
    assert all(g.level_pct == 100.0 for g in rig.fleet.models[FAC].lighting_groups)
    assert e.achieved_reduction_kw == pytest.approx(BASE_KW - METERED_KW)
    assert e.report is not None and e.report["percent_of_target"] == pytest.approx(87.5)
    records = await rig.store.bms_commands(e.id)
    assert all(r.released_at is not None for r in records if r.phase == "apply")
    assert len(rig.sent) == 2 * len(applied) == len(set(rig.sent))
    m = rig.metrics.registry.get_sample_value
    assert m("sems_dr_events_total", {"status": "completed"}) == 1
    assert (m("sems_bms_commands_total", {"kind": "zone_setpoint_offset", "result": "ok"})
            or 0) > 0


async def test_the_release_restores_each_load_to_where_it_was(rig: Rig) -> None:
    """The facility manager had one group at 60 % and one zone at -1 degC before the event:
    after it, they are there again (not at 100 % and 0 degC)."""
    building = rig.fleet.models[FAC]
    group, zone = building.lighting_groups[0], building.zones[0]
    group.level_pct, zone.setpoint_offset_c = 60.0, -1.0
    before = [(g.group_id, g.level_pct) for g in building.lighting_groups]
    dr, _ = rig.agent()
    await rig.event(pct=25.0)
    await dr.tick()
    rig.now = START
    await dr.tick()
    applied = {r.target_id: r.value for r in await rig.store.bms_commands((await rig.load()).id)}
    assert applied.get(group.group_id, 60.0) <= 60.0  # dimmed from 60 %, never up
    assert zone.setpoint_offset_c != -1.0  # shed from where it was
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    for rig.now in (END, END + timedelta(seconds=60)):
        await dr.tick()
    assert (await rig.load()).status == "completed"
    assert [(g.group_id, g.level_pct) for g in building.lighting_groups] == before
    assert zone.setpoint_offset_c == -1.0
    assert [z.setpoint_offset_c for z in building.zones[1:]] == [0.0] * 3


async def test_a_failed_command_is_recorded_on_the_event_and_counted(rig: Rig) -> None:
    dr, _ = rig.agent()
    rig.service.faults.faulty_ids.add("zone-1")
    await rig.event(pct=25.0)
    await dr.tick()
    rig.now = START
    await dr.tick()
    e = await rig.load()
    assert e.status == "active"  # the other commands went out
    assert any("zone-1" in f and "fault" in f for f in e.failures)
    [record] = [r for r in await rig.store.bms_commands(e.id) if r.target_id == "zone-1"]
    assert record.result == "failed" and record.fault_code == "injected"
    assert rig.metrics.registry.get_sample_value(
        "sems_bms_commands_total", {"kind": "zone_setpoint_offset", "result": "failed"}) == 1
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    rig.now = END + timedelta(minutes=5)
    await dr.tick()
    e = await rig.load()
    assert e.status == "failed" and e.report is not None  # reported, and failed with reasons


async def test_a_replay_sends_nothing_twice(rig: Rig) -> None:
    dr, executor = rig.agent()
    await rig.event()
    await dr.tick()
    rig.now = START
    await dr.tick()
    sent = list(rig.sent)
    for record in await rig.store.bms_commands((await rig.load()).id):
        again = await executor.execute(record.model_copy(update={"result": "pending"}))
        assert again.result == "ok"
    assert rig.sent == sent  # recorded with a result: not sent again

    # Recorded but without a result (the process died in flight): asked again with the same
    # command id, which the BMS absorbs and answers as a replay.
    first = (await rig.store.bms_commands((await rig.load()).id))[0]
    await rig.store.update_bms_command(first.model_copy(update={"result": "pending"}))
    redone = await executor.execute(first)
    assert redone.result == "ok" and redone.replayed is True


async def test_a_restart_mid_event_resumes_from_the_store(rig: Rig) -> None:
    dr, _ = rig.agent()
    await rig.event()
    await dr.tick()
    rig.now = START + timedelta(minutes=1)
    await dr.tick()
    applied = len(rig.sent)
    restarted, _ = rig.agent()  # a new process: nothing in memory
    rig.now = START + timedelta(minutes=2)
    await restarted.tick()
    assert len(rig.sent) == applied  # not applied again
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    rig.now = END + timedelta(minutes=2)
    await restarted.tick()
    e = await rig.load()
    assert e.status == "completed" and rig.offsets() == [0.0] * 4
    assert len(rig.sent) == 2 * applied


async def test_commands_lost_with_a_crashed_process_are_published_again(rig: Rig) -> None:
    """The embedded runtime's command stream is in memory: commands published just before a
    crash are gone, though the event says they went out. The next process publishes again
    what the audit trail lacks, the apply commands and later the release ones, and nothing
    twice."""
    lost: list[BmsCommandRecord] = []

    async def vanish(command: BmsCommandRecord) -> None:
        lost.append(command)  # on a stream the crashed process took with it

    dying, _ = rig.agent()
    dying.publish_command = vanish
    await rig.event()
    await dying.tick()
    rig.now = START - timedelta(seconds=5)
    await dying.tick()
    assert (await rig.load()).status == "active" and lost and rig.sent == []
    rig.now = START + timedelta(seconds=30)
    await dying.tick()  # still waiting for them: not published twice within a minute
    assert len(lost) == len(set(c.command_id for c in lost))

    restarted, _ = rig.agent()
    rig.now = START + timedelta(minutes=1)
    await restarted.tick()
    assert sorted(rig.sent) == sorted(c.command_id for c in lost)
    assert any(o != 0 for o in rig.offsets())
    await restarted.tick()
    assert len(rig.sent) == len(lost)  # recorded now: not again

    # The first release stage is lost too: the next process restores those zones.
    restarted.publish_command = vanish
    rig.now = END
    await restarted.tick()
    assert (await rig.load()).release_stages_sent == 1
    releases = [c for c in lost if c.phase == "release"]
    assert releases and not set(c.command_id for c in releases) & set(rig.sent)
    again, _ = rig.agent()
    await again.tick()
    assert set(c.command_id for c in releases) <= set(rig.sent)
    assert len(rig.sent) == len(set(rig.sent))  # no apply sent again after its release


async def test_an_event_is_not_completed_while_its_last_release_is_unexecuted(
    rig: Rig,
) -> None:
    """The last release stage goes out in the pass that would report: if it is lost, the
    event waits for it (published again), so no load is left shed behind a completed event;
    if it never executes, the event fails saying which loads are still shed."""
    lost: list[BmsCommandRecord] = []

    async def vanish(command: BmsCommandRecord) -> None:
        lost.append(command)

    dr, _ = rig.agent()
    await rig.event()
    await dr.tick()
    rig.now = START
    await dr.tick()
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    rig.now = END
    await dr.tick()  # the first release stage
    dr.publish_command = vanish
    rig.now = END + timedelta(seconds=60)
    await dr.tick()  # the last stage, lost
    e = await rig.load()
    assert lost and e.status == "active" and e.release_stages_sent == 2
    restarted, _ = rig.agent()
    rig.now = END + timedelta(seconds=61)
    await restarted.tick()  # published again at once
    await restarted.tick()
    e = await rig.load()
    assert e.status == "completed" and rig.offsets() == [0.0] * 4

    # Never executed: after the report timeout the event fails and names the loads.
    tomorrow = START + timedelta(days=1)
    await rig.store.commit(CommitBatch(rollups=rollups(tomorrow - timedelta(minutes=20), 20,
                                                       BASE_KW)))
    await rig.event_at(tomorrow, "E-2")
    for rig.now in (START + timedelta(days=1, minutes=-5), START + timedelta(days=1)):
        await restarted.tick()
    restarted.publish_command = vanish
    await rig.store.commit(CommitBatch(rollups=rollups(START + timedelta(days=1), 10,
                                                       METERED_KW)))
    for minutes in (10, 11, 12, 30):
        rig.now = START + timedelta(days=1, minutes=minutes)
        await restarted.tick()
    second = next(e for e in await rig.store.dr_events(facility_id=FAC) if e.event_id == "E-2")
    assert second.status == "failed"
    assert any("release commands were never executed" in f for f in second.failures)


async def test_the_plan_starts_from_the_loads_state_when_the_commands_go_out(rig: Rig) -> None:
    """Planned at the notification with a group at 100 %; the manager dims it to 70 % before
    the start: the event sheds from 70 % and gives 70 % back, not 100 %."""
    dr, _ = rig.agent()
    await rig.event(pct=25.0)
    await dr.tick()
    group = rig.fleet.models[FAC].lighting_groups[0]
    group.level_pct = 70.0
    rig.now = START
    await dr.tick()
    plan = Plan.model_validate((await rig.load()).plan)
    restore = {a.target_id: a.restore_level_pct for a in plan.actions
               if a.kind == "lighting_dim"}
    assert restore.get(group.group_id, 70.0) == 70.0
    await rig.store.commit(CommitBatch(rollups=rollups(START, 10, METERED_KW)))
    for rig.now in (END, END + timedelta(seconds=60)):
        await dr.tick()
    assert (await rig.load()).status == "completed" and group.level_pct == 70.0


async def test_an_event_missed_while_sems_was_down_fails_with_a_reason(rig: Rig) -> None:
    dr, _ = rig.agent()
    await rig.event()
    rig.now = END + timedelta(minutes=1)
    await dr.tick()
    e = await rig.load()
    assert e.status == "failed" and e.failures and rig.sent == []


class FlakyStore:
    """The store, except that the first audit write fails (a store outage)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.failures = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("down")
        return await self.store.record_bms_command(record)


async def planned_command(rig: Rig, store: type[FlakyStore]) -> tuple[
        BmsCommandRecord, BmsCommandExecutor]:
    """The event's first apply command, and a command executor on ``store``."""
    dr, _ = rig.agent()
    await rig.event()
    await dr.tick()
    plan = Plan.model_validate((await rig.load()).plan)
    command = command_for(await rig.load(), plan.actions[0], "apply", START)
    assert command is not None
    return command, BmsCommandExecutor(cast(DrStore, store(rig.store)), rig.metrics, rig.clock,
                                       bms=LocalBms(rig.service, observers=[rig.observe]))


async def test_a_store_outage_repeats_the_step_without_sending_twice(rig: Rig) -> None:
    command, executor = await planned_command(rig, FlakyStore)

    async def one_batch() -> AsyncIterator[list[BmsCommandRecord]]:
        yield [command]

    await bms_command_agent(one_batch(), executor=executor, store_retry_s=0)
    assert rig.sent == [command.command_id]
    stored = await rig.store.bms_command(command.command_id)
    assert stored is not None and stored.result == "ok"


class RacedStore(FlakyStore):
    """Another executor records the command between this one's look-up and its insert."""

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None:
        if self.failures:
            self.failures -= 1
            return None
        return await self.store.bms_command(command_id)


async def test_a_command_recorded_by_another_executor_meanwhile_is_not_sent(rig: Rig) -> None:
    command, executor = await planned_command(rig, RacedStore)
    await rig.store.record_bms_command(command)  # the other executor, sending it now
    await executor.execute(command)
    assert rig.sent == []


async def test_an_unreachable_bms_does_not_stop_sems(rig: Rig, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(data_dir=tmp_path, bms_url=f"http://127.0.0.1:{port}/bms/soap?wsdl",
                        bms_timeout_s=1.0)

    async def ignore(_: object) -> None:
        pass

    wiring = DrWiring(settings, rig.store, rig.metrics, rig.clock, publish_event=ignore,
                      publish_command=ignore)
    await wiring.open()
    assert wiring.executor.bms is None and wiring.service.inventory is None
    assert "cannot be reached" in caplog.text
    await rig.event()
    rig.now = START - timedelta(minutes=1)
    await wiring.service.tick()
    e = await rig.load()
    assert e.status == "failed" and "no BMS is configured" in e.failures[0]
    await wiring.close()
