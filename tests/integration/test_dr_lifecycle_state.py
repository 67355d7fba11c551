"""The DR lifecycle as a hypothesis state machine over simulated time (issue 13, property 8).

Rules create events (valid, far future, far past, 24 h, overlapping, concurrent, replayed)
through the store's atomic ``create_dr_events``, advance a clock of the test's own, take the
store down and up (every call raises ``StoreUnavailable`` while it is down), make the BMS
refuse its next commands, and run passes of the DR agent, the bms-commands agent and the
watchdog, as the runtime's loops do. Invariants, after every step:

- no loop stopped: a pass raises nothing but ``StoreUnavailable``; the command agent returns;
- every event is ``completed`` or ``failed`` once a pass ran after its end + release schedule
  + grace + report timeout;
- no load is shed once every event of its facility is past its release deadline (checked
  after a pass the BMS answered without an injected fault: one it refused, the next restores);
- no two events of one facility that are not ``failed`` overlap.

Real SQLite store (a copy of a file prepared once per session) and the simulated buildings
behind the in-process BMS. CI runs a derandomised profile; ``HYPOTHESIS_PROFILE=long`` runs
many more and longer programs on demand.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agents.bms_command_agent import BmsCommandExecutor, bms_command_agent
from agents.dr_baseline_source import BaselineSource
from agents.dr_scheduler import DrService
from agents.dr_watchdog import DrWatchdog
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from schemas.rollup import Rollup, Scope, WindowName
from simulators.bms.local import LocalBms
from simulators.bms.service import BmsService
from simulators.fleet import build_fleet
from simulators.inventory import SimulatorInventory
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 15, 16, 0, tzinfo=UTC)  # noon in New York, a Wednesday
FACILITIES = ("fac-001", "fac-002")
STAGES, GAP_S, GRACE_S, REPORT_S, LEAD_S = 2, 60.0, 900.0, 600.0, 5.0
HISTORY_H = 30  # metered minutes from T0 - 1 h on; events later than that are not reported
T = TypeVar("T")

settings.register_profile(
    "dr-lifecycle-ci", derandomize=True, max_examples=20, stateful_step_count=40,
    deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile(
    "dr-lifecycle-long", max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = ("dr-lifecycle-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long"
           else "dr-lifecycle-ci")


def _rollups(facility_id: str) -> list[Rollup]:
    start = T0 - timedelta(hours=1)
    return [Rollup(scope=Scope.FACILITY, facility_id=facility_id, window=WindowName.MIN_1,
                   window_start=start + timedelta(minutes=i),
                   window_end=start + timedelta(minutes=i + 1), avg_power_kw=400.0,
                   max_power_kw=400.0, min_power_kw=400.0, total_energy_kwh=400.0 / 60,
                   sample_count=4, covered_s=60, coverage=1.0)
            for i in range(HISTORY_H * 60)]


FLEET = build_fleet(facilities=len(FACILITIES), meters_per_facility=4, seed=42)
_TEMPLATE: dict[str, Path] = {}


def template_db() -> Path:
    """The store with the facilities and their metered history, built once and copied."""
    if "db" not in _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="sems-dr-state-")) / "template.db"

        async def build() -> None:
            store = SqliteStore(path, metrics=Metrics())
            await store.open()
            await store.upsert_facilities(list(FLEET.facilities))
            for f in FACILITIES:
                await store.commit(CommitBatch(rollups=_rollups(f)))
            await store.close()

        asyncio.run(build())
        _TEMPLATE["db"] = path
    return _TEMPLATE["db"]


def loads_of(facility_id: str) -> dict[str, float]:
    b = FLEET.models[facility_id]
    return {**{z.zone_id: z.setpoint_offset_c for z in b.zones},
            **{g.group_id: g.level_pct for g in b.lighting_groups}}


INITIAL = {f: loads_of(f) for f in FACILITIES}


def reset_loads() -> None:
    for f in FACILITIES:
        b = FLEET.models[f]
        for z in b.zones:
            z.setpoint_offset_c = INITIAL[f][z.zone_id]
        for g in b.lighting_groups:
            g.level_pct = INITIAL[f][g.group_id]


class Outage:
    """The store, or ``StoreUnavailable`` from every call while ``down``."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("the store is down (test outage)")
            return attr(*args, **kwargs)

        return call


def applied_by(e: DrEvent, now: datetime) -> bool:
    """Whether the event's commands may have gone out by ``now`` (a year-1 event's never)."""
    try:
        return e.event_start - timedelta(seconds=LEAD_S) <= now
    except OverflowError:
        return False


def deadline(e: DrEvent) -> datetime | None:
    try:
        return e.event_end + timedelta(seconds=(STAGES - 1) * GAP_S + GRACE_S)
    except OverflowError:
        return None


class DrLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="sems-dr-state-"))
        self.now = T0
        self.events: dict[str, DrEvent] = {}  # as created, in order: ids and windows
        self.made = 0
        self.queue: list[BmsCommandRecord] = []  # the bms-commands stream
        self.stopped: list[str] = []  # loops that raised what they must not
        self.last_pass: datetime | None = None  # the last pass with the store up
        self.faults_in_last_pass = True
        self.covered: set[str] = set()  # the events that existed at the last pass

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize()
    def start(self) -> None:
        reset_loads()
        path = self.dir / "sems.db"
        shutil.copy(template_db(), path)
        self.real = SqliteStore(path, metrics=Metrics())
        self.run(self.real.open())
        self.store = Outage(self.real)
        store: Any = self.store
        self.metrics = Metrics()
        self.bms = BmsService(FLEET.models)
        self.executor = BmsCommandExecutor(store, self.metrics, self.clock,
                                           bms=LocalBms(self.bms))

        async def publish(command: BmsCommandRecord) -> None:
            self.queue.append(command)

        self.dr = DrService(store, BaselineSource(store, store, method="meter_before",
                                                  events=store),
                            publish, self.metrics, self.clock,
                            inventory=SimulatorInventory(FLEET.models), release_stages=STAGES,
                            release_gap_s=GAP_S, report_timeout_s=REPORT_S,
                            apply_lead_s=LEAD_S)
        self.watchdog = DrWatchdog(store, self.executor, self.metrics, self.clock,
                                   release_stages=STAGES, release_gap_s=GAP_S,
                                   grace_s=GRACE_S)

    def teardown(self) -> None:
        if hasattr(self, "real"):
            # What the program reached (--hypothesis-show-statistics): a run that never
            # completes an event or never needs the watchdog proves little.
            for e in self._stored():
                event(f"event {e.status}")
            if self.metrics.registry.get_sample_value(
                    "sems_dr_watchdog_restores_total", {"facility_id": FACILITIES[0]}):
                event("the watchdog restored loads")
            self.run(self.real.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def clock(self) -> datetime:
        return self.now

    # --- creations -------------------------------------------------------------------------

    def _new(self, facility_id: str, start: datetime, end: datetime,
             id: str | None = None) -> DrEvent:
        self.made += 1  # ids from a counter: a program draws the same events when replayed
        return DrEvent(id=id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"dr-{self.made}")),
                       event_id=f"E-{self.made}",
                       utility_id="gridco", facility_id=facility_id, source="webhook",
                       event_start=start, event_end=end, target_reduction_percentage=20.0,
                       trace_id=f"trace-{self.made}", created_at=self.now, updated_at=self.now)

    async def _create(self, *events: DrEvent) -> None:
        try:
            created = await self.real.create_dr_events(list(events))
        except StoreUnavailable:  # (the outage is the agents' one; intake answers 503)
            return
        for e in created.inserted:
            self.events[e.id] = e

    def _minute(self) -> datetime:
        return self.now.replace(second=0, microsecond=0)

    @rule(kind=st.sampled_from(["valid", "valid", "valid", "far_future", "far_past",
                                "day_long", "overlapping", "concurrent", "replayed"]),
          facility=st.sampled_from(FACILITIES), lead_min=st.sampled_from([-5, 0, 1, 10, 45]),
          minutes=st.sampled_from([10, 30, 60]), data=st.data())
    def create(self, kind: str, facility: str, lead_min: int, minutes: int,
               data: st.DataObject) -> None:
        start = self._minute() + timedelta(minutes=lead_min)
        end = start + timedelta(minutes=minutes)
        if kind == "far_future":
            start = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
            end = start + timedelta(minutes=59)
        elif kind == "far_past":
            start = datetime(1, 1, 1, tzinfo=UTC)
            end = start + timedelta(hours=1)
        elif kind == "day_long":
            end = start + timedelta(hours=24)
        elif kind in ("overlapping", "replayed") and self.events:
            e = list(self.events.values())[data.draw(st.integers(0, len(self.events) - 1))]
            if kind == "replayed":
                before = len(self.events)
                self.run(self._create(self._new(e.facility_id, e.event_start, e.event_end,
                                                id=e.id)))
                assert len(self.events) == before
                return
            shift = timedelta(minutes=lead_min)
            try:
                start, end, facility = e.event_start + shift, e.event_end + shift, e.facility_id
            except OverflowError:
                return
        elif kind == "concurrent":  # two at once that overlap: at most one is stored
            a = self._new(facility, start, end)
            b = self._new(facility, start + timedelta(minutes=5), end + timedelta(minutes=5))

            async def both() -> None:
                await asyncio.gather(self._create(a), self._create(b))

            self.run(both())
            return
        self.run(self._create(self._new(facility, start, end)))

    # --- the world ------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 5, 30, 60, 300, 900, 3600]))
    def advance_and_pass(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.run(self._pass())

    @rule(minutes=st.sampled_from([15, 40]))
    def run_for(self, minutes: int) -> None:
        """A stretch of the runtime's life: a pass every simulated minute."""
        for _ in range(minutes):
            self.now += timedelta(minutes=1)
            self.run(self._pass())
            self.no_loop_stopped()
            self.no_load_shed_past_its_deadline()

    @rule()
    def run_pass(self) -> None:
        self.run(self._pass())

    @rule(down=st.booleans())
    def store_outage(self, down: bool) -> None:
        self.store.down = down

    @rule(n=st.integers(min_value=1, max_value=3))
    def bms_refuses_next(self, n: int) -> None:
        self.bms.faults.fail_next_commands = n

    async def _pass(self) -> None:
        """What the runtime's loops do at ``now``: DR passes (until nothing is due now), the
        command agent over what they published, the watchdog."""
        faults_before = self.bms.faults.fail_next_commands
        store_up = not self.store.down
        existing = set(self.events)
        for _ in range(4):
            await self._loop("dr-scheduler", self.dr.tick)
            await self._drain()
        await self._loop("dr-watchdog", self.watchdog.check)
        if store_up and not self.store.down:
            self.last_pass, self.covered = self.now, existing
            self.faults_in_last_pass = (faults_before > 0
                                        or self.bms.faults.fail_next_commands > 0)

    async def _loop(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except StoreUnavailable:
            pass  # the pass's problem: the loop tries again
        except Exception as exc:  # the loop would have stopped, or failed every event
            self.stopped.append(f"{name}: {type(exc).__name__}: {exc}")

    async def _drain(self) -> None:
        batch, self.queue = self.queue, []

        async def batches() -> AsyncIterator[list[BmsCommandRecord]]:
            yield batch

        try:
            await bms_command_agent(batches(), executor=self.executor, store_retry_s=0,
                                    store_attempts=2)
        except Exception as exc:
            self.stopped.append(f"bms-commands: {type(exc).__name__}: {exc}")

    # --- invariants -----------------------------------------------------------------------

    def _stored(self) -> list[DrEvent]:
        return self.run(self.real.dr_events(limit=10_000))

    @invariant()
    def no_loop_stopped(self) -> None:
        assert not self.stopped, self.stopped

    @invariant()
    def every_event_ends(self) -> None:
        if self.last_pass is None:
            return
        for e in self._stored():
            due = deadline(e)
            if (e.id in self.covered and due is not None
                    and due + timedelta(seconds=REPORT_S) <= self.last_pass):
                assert e.final, (e.id, e.status, e.event_start, e.event_end, e.failures)

    @invariant()
    def no_load_shed_past_its_deadline(self) -> None:
        if self.last_pass is None or self.last_pass != self.now or self.faults_in_last_pass:
            return
        events = self._stored()
        for f in FACILITIES:
            open_window = [e for e in events if e.facility_id == f and applied_by(e, self.now)
                           and ((d := deadline(e)) is None or self.now < d)]
            if not open_window:
                assert loads_of(f) == INITIAL[f], (f, loads_of(f), [
                    (e.id, e.status, e.failures) for e in events if e.facility_id == f])

    @invariant()
    def no_two_live_events_of_a_facility_overlap(self) -> None:
        live = [e for e in self._stored() if e.status != "failed"]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                assert not (a.facility_id == b.facility_id and a.event_start < b.event_end
                            and b.event_start < a.event_end), (a.id, b.id)


DrLifecycle.TestCase.settings = settings.get_profile(PROFILE)
# The long profile runs for many minutes: past the suite's per-test timeout.
TestDrLifecycle = (pytest.mark.timeout(3600)(DrLifecycle.TestCase) if PROFILE.endswith("long")
                   else DrLifecycle.TestCase)
