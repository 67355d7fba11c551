"""The rollup agent and the idle timer: thin loops over ``RollupService``
(``agents/rollup_service.py``), which folds readings into event-time windows and stores them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from agents.rollup_service import RollupService
from core.channels import Batch
from core.logs import new_trace_id, trace_id_var
from schemas.reading import SensorReading

log = logging.getLogger(__name__)


async def rollup_agent(batches: AsyncIterator[Batch[SensorReading]], *,
                       service: RollupService) -> None:
    """Each batch is acknowledged upstream once it is stored, not when the next is taken."""
    async for batch in batches:
        trace_id_var.set(new_trace_id())
        await service.process(batch.values, ack=batch.ack)


async def idle_timer(service: RollupService, *, interval_s: float) -> None:
    """Tick every ``interval_s``; a tick that fails as a whole (a bug) is logged when its
    reason changes and the timer goes on."""
    last: str | None = None
    while True:
        await asyncio.sleep(interval_s)
        trace_id_var.set(new_trace_id())
        try:
            await service.tick()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if reason != last:
                log.exception("idle tick failed; trying again in %g s", interval_s)
            last = reason
        else:
            last = None
