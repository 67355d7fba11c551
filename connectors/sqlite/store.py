"""SQLite (WAL) store of the embedded profile: every store port on one file.

Composed, not mixed in: one connection object (``SqliteDb``: the threads, the connections,
the migrations, the error mapping) shared by one adapter per port area, each of which may
also be used on its own; the store forwards each call to its area (``connectors.composed``).
"""

from __future__ import annotations

from pathlib import Path

from connectors.composed import ComposedStore
from connectors.sqlite.access import SqliteAccess
from connectors.sqlite.db import SqliteDb
from connectors.sqlite.dr import SqliteDr
from connectors.sqlite.forecasts import SqliteForecasts
from connectors.sqlite.identity import SqliteIdentity
from connectors.sqlite.metadata import SqliteMetadata
from connectors.sqlite.sessions import SqliteSessions
from connectors.sqlite.timeseries import SqliteTimeSeries
from core.metrics import Metrics


class SqliteStore(ComposedStore):
    """``tables.ports.store.Store`` on one SQLite file."""

    def __init__(self, path: Path, *, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self.db = SqliteDb(path, metrics=metrics)
        super().__init__(timeseries=SqliteTimeSeries(self.db),
                         metadata=SqliteMetadata(self.db), access=SqliteAccess(self.db),
                         forecasts=SqliteForecasts(self.db), dr=SqliteDr(self.db),
                         identity=SqliteIdentity(self.db))
        self.sessions = SqliteSessions(self.db)
        """The embedded profile's ``SessionStore``: on the same file."""

    async def open(self) -> None:
        """Open the file and migrate it to the schema this code knows
        (``connectors/sqlite/migrations/``)."""
        await self.db.open()

    async def close(self) -> None:
        """Idempotent; later calls raise ``StoreUnavailable``."""
        await self.db.close()
