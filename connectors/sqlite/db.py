"""The embedded store's connection object, shared by its adapters (one per port area).

One writer thread and one reader thread, each with its own connection, so that the event loop
never blocks on disk and API reads proceed while the pipeline writes (WAL readers do not wait).
Errors are mapped here: one request's data error is raised as it is (that request fails
alone); anything else (locked, I/O, a corrupt or missing file) is ``StoreUnavailable``, which
callers wait out and retry.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from connectors.sqlite.migrations import migrate
from core.metrics import Metrics
from tables.ports.store import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                sqlite3.InterfaceError, sqlite3.NotSupportedError)


def _data_error(exc: sqlite3.Error) -> bool:
    # "Cannot operate on a closed database." is a ProgrammingError too, but the store's (not
    # any message that says "closed": a constraint on closed_until_ms is the request's).
    return isinstance(exc, _DATA_ERRORS) and not str(exc).startswith(
        "Cannot operate on a closed")


class SqliteDb:
    """The file's two connections and their threads; ``read`` and ``write`` are what the
    area adapters call."""

    def __init__(self, path: Path, *, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> None:
        """Open both connections and migrate the file to the schema this code knows."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def open_writer() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 5000")
            try:
                applied = migrate(conn)
            except BaseException:
                conn.close()
                raise
            # After the migrations: a table rebuild in one must not cascade. SQLite checks the
            # schema's foreign keys only on a connection that asks; the writer does, so a
            # change that would orphan a row fails whole (IntegrityError) instead.
            conn.execute("PRAGMA foreign_keys = ON")
            if applied:
                log.info("SQLite store %s migrated to schema version %d (applied %s)",
                         self.path, applied[-1], ", ".join(map(str, applied)))
            self._wconn = conn

        def open_reader() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA query_only = ON")
            self._rconn = conn

        try:
            await self._run(self._writer, open_writer)
            await self._run(self._reader, open_reader)
        except BaseException:
            await self.close()  # a refused or failed open leaves no thread or connection
            raise

    async def close(self) -> None:
        """Idempotent; later calls raise ``StoreUnavailable``."""
        if self._closed:
            return
        self._closed = True

        def close(conn: sqlite3.Connection | None) -> None:
            if conn is not None:
                conn.close()

        await self._run(self._writer, lambda: close(self._wconn))
        await self._run(self._reader, lambda: close(self._rconn))
        self._wconn = self._rconn = None
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except RuntimeError as exc:  # the pool was shut down by close()
            raise StoreUnavailable("store is closed") from exc

    def _w(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise StoreUnavailable("store is not open")
        return self._wconn

    def _r(self) -> sqlite3.Connection:
        if self._rconn is None:
            raise StoreUnavailable("store is not open")
        return self._rconn

    async def read(self, sql: str,
                   params: Iterable[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """``params`` by position, or by name (``:name``) when a mapping."""
        bound = dict(params) if isinstance(params, Mapping) else tuple(params)

        def run() -> list[tuple[Any, ...]]:
            return self._r().execute(sql, bound).fetchall()

        try:
            return await self._run(self._reader, run)
        except sqlite3.Error as exc:
            if _data_error(exc):
                raise  # this request's own problem: its caller fails it alone
            self.metrics.store_errors.labels("sqlite", "read").inc()
            raise StoreUnavailable(str(exc)) from exc

    async def write(self, fn: Callable[[sqlite3.Connection], None], *, op: str) -> None:
        """``fn`` in one transaction on the writer connection."""
        def run() -> None:
            conn = self._w()
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self.metrics.store_write_duration.labels("sqlite").observe(
                time.perf_counter() - started
            )

        try:
            await self._run(self._writer, run)
        except sqlite3.Error as exc:
            if _data_error(exc):
                raise
            self.metrics.store_errors.labels("sqlite", op).inc()
            raise StoreUnavailable(str(exc)) from exc
