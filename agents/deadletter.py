"""Dead-letter sink: every refused input is stored with its reason and raw payload.

A batch is acknowledged upstream only when the agent asks for the next one, so a store outage
is waited out here (retrying the same batch) rather than stopping the agent, which would leave
the ingest agent blocked on a full dead-letter channel. A batch the store refuses for another
reason is stored one dead letter at a time, so one bad record costs only itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from schemas.deadletter import DeadLetter
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch, TimeSeriesStore

log = logging.getLogger(__name__)


async def dead_letter_agent(
    batches: AsyncIterator[list[DeadLetter]], *, store: TimeSeriesStore,
    retry_delay_s: float = 1.0,
) -> None:
    async for batch in batches:
        await _store(store, batch, retry_delay_s=retry_delay_s)


async def _store(store: TimeSeriesStore, batch: list[DeadLetter], *,
                 retry_delay_s: float) -> None:
    logged = False
    while True:
        try:
            await store.commit(CommitBatch(dead_letters=batch))
            return
        except StoreUnavailable as exc:
            if not logged:
                log.error("dead letters not stored, retrying every %g s: %s", retry_delay_s,
                          exc)
                logged = True
            await asyncio.sleep(retry_delay_s)
        except Exception:
            if len(batch) == 1:
                log.exception("dead letter (%s from %.200s) could not be stored; dropped",
                              batch[0].reason, batch[0].source)
                return
            for one in batch:
                await _store(store, [one], retry_delay_s=retry_delay_s)
            return
