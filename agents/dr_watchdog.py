"""The DR watchdog: no load stays shed past its event's release deadline, whatever the
planner, the plan, the DR agent or the ``bms-commands`` stream do.

The deadline of an event is its end + its release schedule (``(stages - 1) x gap``) + a grace
(``SEMS_DR_RELEASE_GRACE_S``). Past it, the watchdog reads the audit trail only: every apply
command that may have changed a load (result ``ok``, still ``pending``, or a ``timeout``, which
may have been applied) and that no successful release undid is restored to the load's
pre-event setting, ``BmsCommandRecord.restore_value``, written on the apply command itself
when it is requested (``agents/dr_audit.py``).

Each restore goes straight to the BMS through the command executor (recorded before it is
sent, completed after; the apply gets ``released_at``), with a deterministic command id per
(event, load, attempt): a restart finds what it did and sends nothing twice, while a restore
the BMS refused is tried again with the next attempt's id (the BMS would only replay the
refusal of the same id). The event then fails naming the loads, and
``sems_dr_watchdog_restores_total{facility_id}`` counts them (SemsDrLoadsRestoredByWatchdog).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.bms_command_agent import BmsCommandExecutor
from agents.dr_audit import restore_value_of, shed_loads
from agents.item_failures import ItemFailures, reason_of
from core.logs import trace_id_var
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, CommandKind, DrEvent
from tables.ports.dr import DrStore
from tables.ports.store import StoreUnavailable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 100
_NAMESPACE = uuid.UUID("0b7f5c3e-2a41-4d0e-8f6a-9c2d7e1b5a40")


def watchdog_command_id(dr_event_id: str, kind: CommandKind, target_id: str,
                        attempt: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"watchdog:{dr_event_id}:{kind}:{target_id}:{attempt}"))


@dataclass
class DrWatchdog:
    store: DrStore
    executor: BmsCommandExecutor
    """Its ``bms`` is the BMS client the runtime attached (None: nothing can be restored, and
    nothing was shed either)."""
    metrics: Metrics
    clock: Callable[[], datetime]
    release_stages: int = 3
    release_gap_s: float = 300.0
    grace_s: float = 900.0
    owned: Callable[[str], bool] = lambda _facility_id: True
    """Kafka runtime: only the facilities of this worker's partitions."""
    poll_s: float = 30.0
    limit: int = 1000
    """Events read per pass: those past their deadline, the latest over first (an event is
    read in the passes after its deadline whatever is scheduled ahead; only more than
    ``limit`` events reaching their deadlines between two passes could push one out)."""
    _settled: set[str] = field(default_factory=set)
    """Events past their deadline with nothing shed: not read again by this process. Kept only
    for the events of the latest pass (at most ``limit``): one that has left the latest
    ``limit`` over is not read anyway, and were it to come back it would be checked and settled
    again (one read of its audit trail), so the set does not grow with the event history."""
    _failures: ItemFailures | None = None
    _pass_failure: str | None = None

    @property
    def failures(self) -> ItemFailures:
        if self._failures is None:
            self._failures = ItemFailures("dr_event", self.metrics, log)
        return self._failures

    @property
    def schedule_s(self) -> float:
        """From an event's end to its deadline: the release stages and the grace."""
        return max(0, self.release_stages - 1) * self.release_gap_s + self.grace_s

    def deadline(self, e: DrEvent) -> datetime | None:
        """When the event's loads must all be back; None when that is beyond the calendar."""
        schedule_s = self.schedule_s
        try:
            return e.event_end + timedelta(seconds=schedule_s)
        except OverflowError:
            return None

    async def run_forever(self) -> None:
        while True:
            try:
                await self.check()
                self._pass_failure = None
            except Exception as exc:  # the store is down: the next pass tries again
                if reason_of(exc) != self._pass_failure:
                    log.exception("DR watchdog pass failed (tried again every %.0f s)",
                                  self.poll_s)
                    self._pass_failure = reason_of(exc)
            await asyncio.sleep(self.poll_s)

    async def check(self) -> int:
        """One pass over the events past their deadline; how many loads it restored."""
        if self.executor.bms is None:
            return 0
        now = self.clock()
        restored = 0
        events = await self.store.dr_events(
            order="end_desc", ended_before=now - timedelta(seconds=self.schedule_s),
            limit=self.limit)
        self._settled.intersection_update({e.id for e in events})
        for e in events:
            if e.id in self._settled or not self.owned(e.facility_id):
                continue
            deadline = self.deadline(e)
            if deadline is None or now < deadline:
                continue
            token = trace_id_var.set(e.trace_id)
            try:
                restored += await self._check_event(e, now)
                self.failures.succeeded(e.id)
            except StoreUnavailable:
                raise
            except Exception as exc:  # this event alone; the next pass tries it again
                self.failures.failed(e.id, exc, what="DR watchdog: restoring the loads of")
            finally:
                trace_id_var.reset(token)
        return restored

    async def _check_event(self, e: DrEvent, now: datetime) -> int:
        records = await self.store.bms_commands(e.id)
        shed = shed_loads(records)
        if not shed:
            self._settled.add(e.id)
            return 0
        by_id = {r.command_id: r for r in records}
        restored: list[BmsCommandRecord] = []
        still: list[BmsCommandRecord] = []
        for apply in shed:
            done = await self._restore(e, apply, by_id, now)
            (restored if done is not None and done.result == "ok" else still).append(
                done or apply)
        if restored:
            self.metrics.dr_watchdog_restores.labels(e.facility_id).inc(len(restored))
            await self.store.add_dr_event_failure(
                e.id, f"the DR watchdog restored {len(restored)} loads still shed past the "
                f"release deadline (end + release schedule + {self.grace_s:g} s): "
                + ", ".join(f"{r.kind} {r.target_id}={r.value:g}" for r in restored))
        if still:
            log.error("DR event %s: the watchdog could not restore %s yet: tried again in "
                      "%.0f s", e.id, ", ".join(f"{r.kind} {r.target_id}" for r in still),
                      self.poll_s)
        fresh = await self.store.dr_event(e.id)
        if fresh is not None and fresh.status != "failed":
            await self.store.update_dr_event(
                fresh.model_copy(update={"status": "failed", "updated_at": now}))
            self.metrics.dr_events.labels("failed").inc()
        if restored:
            log.error("DR event %s: the watchdog restored %d loads of %s left shed past the "
                      "release deadline: %s", e.id, len(restored), e.facility_id,
                      ", ".join(f"{r.kind} {r.target_id}={r.value:g}" for r in restored))
        return len(restored)

    async def _restore(self, e: DrEvent, apply: BmsCommandRecord,
                       by_id: dict[str, BmsCommandRecord],
                       now: datetime) -> BmsCommandRecord | None:
        """Sends the restore of one load: the first attempt without a final failure."""
        for attempt in range(MAX_ATTEMPTS):
            command_id = watchdog_command_id(e.id, apply.kind, apply.target_id, attempt)
            stored = by_id.get(command_id)
            if stored is not None and stored.result == "failed":
                continue  # refused: a new id, else the BMS only replays the refusal
            command = stored or BmsCommandRecord(
                command_id=command_id, dr_event_id=e.id, facility_id=e.facility_id,
                kind=apply.kind, target_id=apply.target_id, value=restore_value_of(apply),
                phase="release",
                why=f"DR watchdog: DR event {e.id} left {apply.kind} {apply.target_id} shed "
                    f"past its release deadline; put back to its pre-event setting "
                    f"(attempt {attempt + 1})",
                trace_id=e.trace_id, requested_at=now)
            return await self.executor.execute(command)
        log.error("DR event %s: %s %s was not restored in %d attempts: restore it by hand",
                  e.id, apply.kind, apply.target_id, MAX_ATTEMPTS)
        return None
