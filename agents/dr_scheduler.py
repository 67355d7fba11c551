"""The DR agent: plans each event, commands the BMS at its start, releases in stages after
its end, then reports what was achieved (docs/demand-response.md, "Operations").

There are no in-memory timers to lose: every pass reads the events that are not final from
the store and does what is due for each, by its status and stored progress
(``release_stages_sent``). A restart therefore resumes mid-event, and a step done twice sends
commands with the same deterministic ids, which the BMS-command agent does not send again.

    scheduled (planned) --start--> active --end + releases + rollups--> completed | failed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agents.dr.baseline_result import BaselineResult, baseline_of
from agents.dr.commands import command_for
from agents.dr.inventory import Inventory, InventorySource
from agents.dr.performance import InsufficientMeterDataError, achieved_reduction
from agents.dr.plan import Plan
from agents.dr.planner import plan_reduction
from agents.dr_audit import as_before, held_by_others, release_of, shed_loads
from agents.dr_baseline_source import BaselineSource, NoBaseline
from agents.item_failures import ItemFailures, reason_of
from agents.offload import off_loop
from core.logs import trace_id_var
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from schemas.metadata import Facility
from tables.ports.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

PublishCommand = Callable[[BmsCommandRecord], Awaitable[None]]


@dataclass
class DrService:
    store: Store
    baselines: BaselineSource
    publish_command: PublishCommand
    metrics: Metrics
    clock: Callable[[], datetime]
    inventory: InventorySource | None = None
    release_stages: int = 3
    release_gap_s: float = 300.0
    report_timeout_s: float = 600.0
    owned: Callable[[str], bool] = lambda _facility_id: True
    """Kafka runtime: only the facilities of this worker's partitions."""
    apply_lead_s: float = 5.0
    """Commands go out this long before the start, so the first metered interval of the event
    is shed from its first sample (the BMS and the buildings take a moment to act)."""
    poll_s: float = 1.0
    resend_after_s: float = 60.0
    """A published command not recorded by the BMS-command agent after this long is published
    again (after a restart: at once)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _published: dict[str, datetime] = field(default_factory=dict)
    """When this process last published each command (not kept across restarts)."""
    _failures: ItemFailures | None = None
    _pass_failure: str | None = None

    @property
    def failures(self) -> ItemFailures:
        """Events whose step raised: counted in ``sems_item_failures_total{loop="dr_event"}``
        and logged once each."""
        if self._failures is None:
            self._failures = ItemFailures("dr_event", self.metrics, log)
        return self._failures

    def wake(self) -> None:
        """A new event arrived (the ``dr-events`` stream): look at it now."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()  # before the pass: an event arriving during it wakes the next
            try:
                wait_s = await self.tick()
                if self._pass_failure is not None:
                    log.info("DR passes work again")
                    self._pass_failure = None
            except Exception as exc:  # the store is down: try again on the next pass
                if reason_of(exc) != self._pass_failure:  # once, not once a second
                    log.exception("DR pass failed (tried again every %.0f s)", self.poll_s)
                    self._pass_failure = reason_of(exc)
                wait_s = self.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait_s))

    async def tick(self) -> float:
        """One pass over the open events; seconds until something is due next."""
        # Soonest first: a page full of future events never hides one that is due or active.
        events = [e for e in await self.store.dr_events(statuses=("scheduled", "active"),
                                                        order="start_asc")
                  if self.owned(e.facility_id)]
        facilities = {f.facility_id: f for f in await self.store.facilities()} if events else {}
        wait_s = self.poll_s
        for event in events:
            token = trace_id_var.set(event.trace_id)
            try:
                due = await self.step(event, facilities.get(event.facility_id))
                self.failures.succeeded(event.id)
            except StoreUnavailable:
                raise  # the whole pass's problem: every event is tried again next pass
            except Exception as exc:  # this event's alone: it fails, the others go on
                await self._fail_alone(event, exc)
                due = None
            finally:
                trace_id_var.reset(token)
            if due is not None:
                wait_s = min(wait_s, (due - self.clock()).total_seconds())
        return wait_s

    async def _fail_alone(self, e: DrEvent, exc: Exception) -> None:
        """An event whose step raised fails with the reason (counted, logged once); the loads
        it shed are released at once from the audit trail, not from its plan (which may be
        what failed). If even that fails, the watchdog restores them after the deadline."""
        self.failures.failed(e.id, exc, what="DR event failed:")
        try:
            for release in [release_of(a, e, self.clock())
                            for a in shed_loads(await self.store.bms_commands(e.id))]:
                await self._publish(release)
        except StoreUnavailable:
            raise
        except Exception as again:
            log.warning("DR event %s: releasing its loads failed too (%s): the watchdog "
                        "restores them", e.id, reason_of(again))
        try:
            fresh = await self.store.dr_event(e.id) or e
            await self.store.add_dr_event_failure(e.id, f"the DR agent failed on this event: "
                                                        f"{reason_of(exc)}")
            if not fresh.final:
                await self._save(fresh, status="failed")
                self.metrics.dr_events.labels("failed").inc()
        except StoreUnavailable:
            raise
        except Exception as again:  # tried again next pass; logged with the event's failure
            log.debug("DR event %s: marking it failed failed: %s", e.id, reason_of(again))

    async def step(self, e: DrEvent, facility: Facility | None) -> datetime | None:
        """Does what is due for one event; when it next needs a look (None: final)."""
        now = self.clock()
        if e.status == "scheduled" and e.plan is None:
            if facility is None:
                await self._finish(e, "failed", reason=f"unknown facility {e.facility_id}")
                return None
            e = await self._prepare(e, facility, now)
            if e.final:
                return None
        if e.status == "scheduled":
            if now >= e.event_end:
                await self._finish(e, "failed", reason="the event ended before SEMS could act")
                return None
            apply_at = e.event_start - timedelta(seconds=self.apply_lead_s)
            if now < apply_at:
                return apply_at
            if facility is not None:
                e = await self._replan(e, facility, now)
            e = await self._apply(e, now)
        plan = Plan.model_validate(e.plan)
        await self._resend_missing(e, plan)
        stages = plan.release_stages
        for stage in stages[e.release_stages_sent:]:
            if now < stage.release_at:
                return stage.release_at
            e = await self._release(e, plan, stage.stage, now)
        if now < e.event_end:
            return e.event_end
        unreleased = [c for c in await self._unrecorded(e, plan) if c.phase == "release"]
        if unreleased:
            last_s = (now - (stages[-1].release_at if stages else e.event_end)).total_seconds()
            if last_s < self.report_timeout_s:  # a load left shed must not go unnoticed
                return now + timedelta(seconds=self.poll_s)
            await self.store.add_dr_event_failure(
                e.id, f"{len(unreleased)} release commands were never executed: "
                + ", ".join(f"{c.kind} {c.target_id}={c.value:g}" for c in unreleased))
        return await self._report(e, facility, now)

    async def _prepare(self, e: DrEvent, facility: Facility, now: datetime) -> DrEvent:
        """Baseline and plan, as soon as the event is known."""
        if now >= e.event_end:
            await self._finish(e, "failed", reason="the event ended before it was planned")
            return e.model_copy(update={"status": "failed"})
        try:
            baseline = (baseline_of(e.baseline) if e.baseline is not None else
                        await self.baselines.baseline(facility, event_start=e.event_start,
                                                      event_end=e.event_end, now=now))
        except NoBaseline as exc:
            await self._finish(e, "failed", reason=f"no baseline: {exc}")
            return e.model_copy(update={"status": "failed"})
        if self.inventory is None:
            await self._finish(e, "failed", reason="no BMS is configured (SEMS_BMS_URL)")
            return e.model_copy(update={"status": "failed"})
        try:
            inventory = await self.inventory.inventory(e.facility_id, at=e.event_start)
        except Exception as exc:  # the BMS cannot be read: nothing to plan with
            await self._finish(e, "failed", reason=f"the BMS inventory failed: {exc}")
            return e.model_copy(update={"status": "failed"})
        return await self._plan(e, baseline, inventory)

    async def _replan(self, e: DrEvent, facility: Facility, now: datetime) -> DrEvent:
        """Plan again when the commands are due: from the loads' state now (what the commands
        start from and the release restores: a manager may have changed a level since the
        notification) and, if it was provisional, with the baseline's data in, by the same
        method. If that fails, the first plan stands."""
        planned = baseline_of(e.baseline) if e.baseline is not None else None
        try:
            baseline = (planned if planned is not None and not planned.provisional else
                        await self.baselines.baseline(
                            facility, event_start=e.event_start, event_end=e.event_end,
                            now=now, method=None if planned is None else planned.method))
            if self.inventory is None:
                raise LookupError("no BMS is configured")
            inventory = await self.inventory.inventory(e.facility_id, at=e.event_start)
        except Exception as exc:  # NoBaseline, the BMS cannot be read
            log.warning("DR event %s: planning again at the start failed (%s): the first plan "
                        "stands", e.id, exc)
            return e
        return await self._plan(e, baseline, inventory)

    async def _plan(self, e: DrEvent, baseline: BaselineResult,
                    inventory: Inventory) -> DrEvent:
        target_kw = (e.target_reduction_percentage / 100.0 * baseline.mean_kw
                     if e.target_reduction_percentage is not None
                     else e.target_reduction_kw or 0.0)
        inventory = as_before(inventory, await held_by_others(self.store, e, self.clock()))
        upper = await self.baselines.upper_band(e.facility_id, baseline)
        # Off the loop: HiGHS solves without the GIL, and a large campus's lexicographic solves
        # held the API's loop for up to 0.5 s (bench/dr_stall.py). A raise fails this event
        # alone, as inline; HiGHS's own time limit bounds the thread.
        plan = await off_loop(
            plan_reduction, inventory, target_reduction_kw=target_kw, forecast_upper_kw=upper,
            baseline_kw=baseline.baseline_kw, event_start=e.event_start, event_end=e.event_end,
            event_id=e.id, release_stages=self.release_stages,
            release_gap_s=self.release_gap_s)
        if not plan.meets_target:
            log.warning("DR event %s: the plan sheds %.1f kW of %.1f kW asked (%s)", e.id,
                        plan.expected_reduction_kw, plan.required_reduction_kw,
                        "; ".join(plan.notes))
        log.info("DR event %s planned: %s baseline %.1f kW, target %.1f kW, %d actions", e.id,
                 baseline.method, baseline.mean_kw, target_kw, len(plan.actions))
        return await self._save(e, target_reduction_kw=target_kw, baseline=baseline.to_dict(),
                                plan=plan.model_dump(mode="json"))

    # Progress is saved before its commands go out: a crash in between leaves commands that
    # the audit trail lacks, which the next pass publishes again (_resend_missing), never an
    # event planned a second time from the state its own commands made.

    async def _apply(self, e: DrEvent, now: datetime) -> DrEvent:
        plan = Plan.model_validate(e.plan)
        saved = await self._save(e, status="active")
        for action in plan.actions:
            command = command_for(e, action, "apply", now)
            if command is not None:
                await self._publish(command)
        log.info("DR event %s started: %d commands sent to the BMS", e.id, len(plan.actions))
        self.metrics.dr_events.labels("active").inc()
        return saved

    async def _release(self, e: DrEvent, plan: Plan, stage: int, now: datetime) -> DrEvent:
        saved = await self._save(e, release_stages_sent=stage + 1)
        for action in plan.actions:
            if action.release_stage == stage:
                command = command_for(e, action, "release", now)
                if command is not None:
                    await self._publish(command)
        log.info("DR event %s: release stage %d sent", e.id, stage)
        return saved

    def _commands(self, e: DrEvent, plan: Plan) -> list[BmsCommandRecord]:
        """The commands the event's progress says were published: the apply commands whose
        action is not released yet while the event runs, and the release stages sent."""
        now = self.clock()
        out = []
        for action in plan.actions:
            released = action.release_stage < e.release_stages_sent
            if not released and now < e.event_end:
                out.append(command_for(e, action, "apply", now))
            if released:
                out.append(command_for(e, action, "release", now))
        return [c for c in out if c is not None]

    async def _unrecorded(self, e: DrEvent, plan: Plan) -> list[BmsCommandRecord]:
        """Published commands (``_commands``) without a result in the audit trail. One
        recorded without a result was in flight when a process died: asked again, the agent
        sends it with the same id, which the BMS absorbs (bms_command_agent.py)."""
        expected = self._commands(e, plan)
        if not expected:
            return []
        recorded = {c.command_id for c in await self.store.bms_commands(e.id)
                    if c.result != "pending"}
        return [c for c in expected if c.command_id not in recorded]

    async def _resend_missing(self, e: DrEvent, plan: Plan) -> None:
        """Publishes again the commands the BMS-command agent never recorded: lost with a
        crashed process's in-memory stream, or a Kafka delivery that failed. Same ids, so the
        agent never sends one twice; an apply whose action was released is not sent again."""
        now = self.clock()
        resend_at = now - timedelta(seconds=self.resend_after_s)
        missing = [c for c in await self._unrecorded(e, plan)
                   if self._published.get(c.command_id, resend_at) <= resend_at]
        for command in missing:
            await self._publish(command)
        if missing:
            log.warning("DR event %s: %d commands were never executed: published again", e.id,
                        len(missing))

    async def _publish(self, command: BmsCommandRecord) -> None:
        await self.publish_command(command)
        now = self.clock()
        self._published[command.command_id] = now
        if len(self._published) > 10_000:  # only the last minute's matter (resend_after_s)
            old = now - timedelta(seconds=self.resend_after_s)
            self._published = {k: t for k, t in self._published.items() if t > old}

    async def _report(self, e: DrEvent, facility: Facility | None,
                      now: datetime) -> datetime | None:
        minutes = int((e.event_end - e.event_start).total_seconds() // 60)
        metered = await self.baselines.metered(e.facility_id, e.event_start, e.event_end,
                                                interval_s=60)
        waited_s = (now - e.event_end).total_seconds()
        if len(metered) < minutes and waited_s < self.report_timeout_s:
            return now + timedelta(seconds=self.poll_s)  # the last rollups are not final yet
        baseline = await self._settlement_baseline(e, facility, now)
        try:
            report = await off_loop(  # pandas on minutes of history: off the loop
                achieved_reduction, baseline, metered,
                target_reduction_kw=e.target_reduction_kw, event_id=e.event_id or e.id)
        except InsufficientMeterDataError as exc:
            await self._finish(e, "failed", reason=f"no report: {exc}")
            return None
        fresh = await self.store.dr_event(e.id)
        failed = bool(fresh is not None and fresh.failures)
        log.info("DR event %s report: achieved %.1f kW of %.1f kW (%.0f %%)", e.id,
                 report.average_achieved_reduction_kw, e.target_reduction_kw or 0.0,
                 report.percent_of_target or 0.0)
        await self._finish(e, "failed" if failed else "completed",
                           report={**report.to_dict(), "baseline": baseline.to_dict()},
                           achieved_reduction_kw=report.average_achieved_reduction_kw)
        return None

    async def _settlement_baseline(self, e: DrEvent, facility: Facility | None,
                                   now: datetime) -> BaselineResult:
        """The baseline the event settles with: the planning one, unless that was provisional
        (computed before its windows were metered); then the same method computed again as of
        the event start. A forecast baseline stays as planned: forecasts made during the event
        have seen the shed load."""
        planned = baseline_of(e.baseline or {})
        if not planned.provisional or facility is None:
            return planned
        try:
            return await self.baselines.baseline(facility, event_start=e.event_start,
                                                 event_end=e.event_end, now=now,
                                                 method=planned.method)
        except NoBaseline as exc:
            log.warning("DR event %s: settling with the planning baseline (%s)", e.id, exc)
            return planned

    async def _finish(self, e: DrEvent, status: str, *, reason: str | None = None,
                      **changes: Any) -> None:
        if reason is not None:
            log.warning("DR event %s failed: %s", e.id, reason)
            await self.store.add_dr_event_failure(e.id, reason)
        await self._save(e, status=status, **changes)
        self.metrics.dr_events.labels(status).inc()

    async def _save(self, e: DrEvent, **changes: Any) -> DrEvent:
        updated = e.model_copy(update={**changes, "updated_at": self.clock()})
        await self.store.update_dr_event(updated)
        return updated
