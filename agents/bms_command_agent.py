"""The BMS-command agent: executes the commands the DR agent puts on the ``bms-commands``
stream through the ``BmsController`` port, keeping the audit trail.

Each command is recorded *before* it is sent and completed after, so a replay (a crash, a
redelivered batch) finds it: a command with a result is never sent again; one recorded but
without a result (the process died while it was in flight) is sent again with the *same*
``command_id``, which the BMS absorbs (idempotent on ``command_id``) while telling its outcome.
No BMS retry otherwise (docs/bms.md): a failure is logged by the connector, recorded on the
command and on its event, and counted in ``sems_bms_commands_total``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from agents.item_failures import ItemFailures, reason_of
from core.logs import trace_id_var
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, command_uuid
from tables.ports.bms import BmsController, CommandResult
from tables.ports.dr import DrStore
from tables.ports.store import StoreUnavailable

log = logging.getLogger(__name__)


def failure_reason(record: BmsCommandRecord) -> str:
    code = f" [{record.fault_code}]" if record.fault_code else ""
    return (f"{record.phase} {record.kind} {record.target_id}={record.value:g} failed "
            f"({record.failure}{code}): {record.error}")


@dataclass
class BmsCommandExecutor:
    store: DrStore
    metrics: Metrics
    clock: Callable[[], datetime]
    bms: BmsController | None = None
    """None until a BMS is attached; commands then fail as ``transport``."""

    async def execute(self, command: BmsCommandRecord) -> BmsCommandRecord:
        token = trace_id_var.set(command.trace_id)
        try:
            return await self._execute(command)
        finally:
            trace_id_var.reset(token)

    async def _execute(self, command: BmsCommandRecord) -> BmsCommandRecord:
        stored = await self.store.bms_command(command.command_id)
        if stored is not None and stored.result != "pending":
            log.info("BMS command %s was %s already: not sent again", command.command_id,
                     stored.result)
            return stored
        if command.phase == "apply" and await self._released_already(command):
            return await self._supersede(stored or command)
        sent = (stored or command).model_copy(update={"sent_at": self.clock()})
        if stored is None:
            if not await self.store.record_bms_command(sent):
                # Recorded in between by another executor, which sends it.
                log.info("BMS command %s is being sent already", command.command_id)
                return await self.store.bms_command(command.command_id) or sent
        else:
            log.info("BMS command %s was in flight when SEMS stopped: asking the BMS again "
                     "with the same command id", command.command_id)
        result = await self._send(sent)
        done = sent.model_copy(update={
            "result": "ok" if result.ok else "failed", "applied_at": result.applied_at,
            "failure": result.failure or (None if result.ok else "rejected"),
            "fault_code": result.fault_code, "error": result.error,
            "replayed": result.replayed})
        await self.store.update_bms_command(done)
        self.metrics.bms_commands.labels(done.kind, done.result).inc()
        if done.result == "failed":
            await self.store.add_dr_event_failure(done.dr_event_id, failure_reason(done))
        elif done.phase == "release":
            await self._mark_released(done)
        return done

    async def _released_already(self, apply: BmsCommandRecord) -> bool:
        """Whether a release of the same load for the same event (the plan's, one from the
        audit trail, the watchdog's) has been requested: an apply redelivered, republished or
        retried after it must not shed the load again, since nothing would release it."""
        return any(r.phase == "release" and r.kind == apply.kind
                   and r.target_id == apply.target_id
                   for r in await self.store.bms_commands(apply.dr_event_id))

    async def _supersede(self, apply: BmsCommandRecord) -> BmsCommandRecord:
        done = apply.model_copy(update={
            "result": "failed", "failure": "superseded",
            "error": "its release was requested first: not sent"})
        if not await self.store.record_bms_command(done):
            await self.store.update_bms_command(done)
        log.info("BMS command %s (apply %s %s) not sent: its release was requested first",
                 apply.command_id, apply.kind, apply.target_id)
        return done

    async def _send(self, c: BmsCommandRecord) -> CommandResult:
        if self.bms is None:
            return CommandResult(c.command_id, False, None, "no BMS is configured",
                                 "transport")
        if c.kind == "zone_setpoint_offset":
            return await self.bms.set_zone_setpoint_offset(c.facility_id, c.target_id,
                                                           c.value, command_id=c.command_id)
        return await self.bms.set_lighting_level(c.facility_id, c.target_id, c.value,
                                                 command_id=c.command_id)

    async def _mark_released(self, release: BmsCommandRecord) -> None:
        """The audit entry of the apply command this release undoes gets ``released_at``."""
        applied = await self.store.bms_command(
            command_uuid(release.dr_event_id, "apply", release.kind, release.target_id))
        if applied is not None and applied.released_at is None:
            await self.store.update_bms_command(
                applied.model_copy(update={"released_at": release.applied_at}))


async def bms_command_agent(batches: AsyncIterator[list[BmsCommandRecord]], *,
                            executor: BmsCommandExecutor, store_retry_s: float = 1.0,
                            store_attempts: int = 60, other_attempts: int = 3) -> None:
    """One command at a time, in stream order (a facility's commands stay in order). When the
    store fails, the whole step is done again a second later (for a minute): that is safe, not
    a BMS retry, since the audit row and the BMS's idempotency on ``command_id`` make a
    repeated step send nothing twice. Any other error is tried ``other_attempts`` times. A
    command that still fails is given up alone: counted in
    ``sems_item_failures_total{loop="bms_command"}``, logged once with its trace id, noted on
    its event if the store takes it, and the agent goes on with the next (the DR agent
    publishes again what the audit trail lacks; the watchdog restores a load left shed)."""
    failures = ItemFailures("bms_command", executor.metrics, log)
    async for batch in batches:
        for command in batch:
            token = trace_id_var.set(command.trace_id)
            try:
                await _execute_alone(command, executor, failures, store_retry_s,
                                     store_attempts, other_attempts)
            finally:
                trace_id_var.reset(token)


async def _execute_alone(command: BmsCommandRecord, executor: BmsCommandExecutor,
                         failures: ItemFailures, retry_s: float, store_attempts: int,
                         other_attempts: int) -> None:
    attempt = 0
    while True:
        attempt += 1
        try:
            await executor.execute(command)
            failures.succeeded(command.command_id)
            return
        except Exception as exc:
            limit = store_attempts if isinstance(exc, StoreUnavailable) else other_attempts
            if attempt >= limit:
                await _give_up(command, executor, failures, exc, attempt)
                return
            log.warning("BMS command %s: %s (attempt %d of %d)", command.command_id,
                        reason_of(exc), attempt, limit)
            await asyncio.sleep(retry_s)


async def _give_up(command: BmsCommandRecord, executor: BmsCommandExecutor,
                   failures: ItemFailures, exc: Exception, attempts: int) -> None:
    failures.failed(command.command_id, exc, what=f"BMS command given up after {attempts} "
                                                  f"attempts:")
    reason = (f"{command.phase} {command.kind} {command.target_id}={command.value:g} was not "
              f"executed: {reason_of(exc)} ({attempts} attempts)")
    try:
        await executor.store.add_dr_event_failure(command.dr_event_id, reason)
    except Exception as again:  # the store is still down: the log and the metric have it
        log.warning("BMS command %s: its failure could not be noted on DR event %s (%s)",
                    command.command_id, command.dr_event_id, reason_of(again))
