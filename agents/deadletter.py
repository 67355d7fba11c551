"""Dead-letter sink: every refused input is stored with its reason and raw payload."""

from __future__ import annotations

from collections.abc import AsyncIterator

from schemas.deadletter import DeadLetter
from tables.ports import CommitBatch, TimeSeriesStore


async def dead_letter_agent(
    batches: AsyncIterator[list[DeadLetter]], *, store: TimeSeriesStore
) -> None:
    async for batch in batches:
        await store.commit(CommitBatch(dead_letters=batch))
