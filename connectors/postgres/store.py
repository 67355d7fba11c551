"""PostgreSQL store of the production profile: facilities and meters, utilities and their keys,
load forecasts, DR events and the BMS command audit trail, dead letters and window checkpoints.
Same semantics as the SQLite store: upserts where the last row of a list wins, ids in byte
order, dead letters newest first and unique per (source, payload).

``PostgresDb`` (``db.py``) owns the pool, its recovery from outages, transactions, metrics and
error mapping; one adapter per area works through it (``metadata.py``, ``access.py``,
``forecasts.py``, ``dr.py``, ``pipeline.py``).
"""

from __future__ import annotations

from datetime import datetime

from connectors.composed import RelationalAreas
from connectors.postgres.access import PostgresAccess
from connectors.postgres.db import PostgresDb
from connectors.postgres.dr import PostgresDr
from connectors.postgres.forecasts import PostgresForecasts
from connectors.postgres.identity import PostgresIdentity
from connectors.postgres.metadata import PostgresMetadata
from connectors.postgres.pipeline import PostgresPipelineState
from core.metrics import Metrics
from schemas.deadletter import DeadLetter
from tables.rollups import Checkpoint


class PostgresStore(RelationalAreas):
    """Implements ``MetadataStore``, ``AccessStore``, ``ForecastStore``, ``DrStore`` and
    ``IdentityStore``, and
    keeps the dead letters and checkpoints of the production store (``pipeline``)."""

    def __init__(self, dsn: str, *, metrics: Metrics, min_size: int = 1, max_size: int = 8,
                 timeout_s: float = 5.0) -> None:
        self.db = PostgresDb(dsn, metrics=metrics, min_size=min_size, max_size=max_size,
                             timeout_s=timeout_s)
        self.metrics = metrics
        self.where = self.db.where
        self.timeout_s = timeout_s
        self.pipeline = PostgresPipelineState(self.db)
        super().__init__(metadata=PostgresMetadata(self.db), access=PostgresAccess(self.db),
                         forecasts=PostgresForecasts(self.db), dr=PostgresDr(self.db),
                         identity=PostgresIdentity(self.db))

    async def open(self) -> None:
        """Returns at once; the pool connects in the background (``db.py``)."""
        await self.db.open()

    async def close(self) -> None:
        """Idempotent; later calls raise ``StoreUnavailable``."""
        await self.db.close()

    # -- dead letters and checkpoints ------------------------------------------------------

    async def record(self, dead_letters: list[DeadLetter], checkpoints: list[Checkpoint]) -> None:
        """Dead letters (a repeated one is dropped) and checkpoints, in one transaction."""
        await self.pipeline.record(dead_letters, checkpoints)

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]:
        """Newest first (insertion order, as SQLite); a negative limit means all, as there."""
        return await self.pipeline.dead_letters(limit=limit)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.pipeline.checkpoints()

    async def prune_dead_letters(self, before: datetime) -> int:
        return await self.pipeline.prune_dead_letters(before)
