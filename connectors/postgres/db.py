"""The PostgreSQL store's connection object: the pool, its recovery, transactions, metrics and
the mapping of errors to ``StoreUnavailable``, shared by the store's area adapters.

Availability: ``open()`` starts the pool without waiting for a connection, so SEMS starts while
PostgreSQL is down. A request waits at most ``timeout_s`` for a connection and then raises
``StoreUnavailable``. The pool settings that make it recover by itself, each one's absence
caught by a test in tests/integration/test_postgres_store.py:

- ``check``: a connection is tested (an empty query, one round trip) before it is handed out,
  so one broken by a server restart is replaced instead of failing the request (without it,
  every pooled connection failed one request after a restart). The first failed test also
  sweeps the pool (``pool.check()``): the pool's own check loop backs off 1, 2 s... per dead
  connection, and a request that met the second one timed out with the server up.
- ``reconnect_timeout = timeout_s``: the background reconnection backs off 1, 2, 4, 8, 16 s...
  and gives up after ``reconnect_timeout``; the next request then tries at once. With the
  default (5 minutes), a server back after a 20 s outage stayed unused for 10 s more.
- ``connect_timeout``: an attempt to an unreachable host ends (libpq's minimum is 2 s).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from core.metrics import Metrics
from tables.ports.store import StoreUnavailable

Conn = AsyncConnection[TupleRow]
V = TypeVar("V")
RETRY_ATTEMPTS = 3
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def describe(dsn: str) -> str:
    """``PostgreSQL at host:port/dbname``: names the server in messages, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's message may quote the DSN, password included.
        raise ValueError("the PostgreSQL DSN is not a valid connection string") from None
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"PostgreSQL at {host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def last_wins(items: Iterable[V], key: Callable[[V], str]) -> list[V]:
    """One item per key, the last one given (``ON CONFLICT DO UPDATE`` refuses to touch a row
    twice in one statement, where SQLite's executemany applies each), in key order: concurrent
    upserts lock their rows in the same order and cannot deadlock."""
    last = {key(item): item for item in items}
    return [last[k] for k in sorted(last)]


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (the arrays a batch statement unnests)."""
    return [[row[i] for row in rows] for i in range(width)]


async def _configure(conn: Conn) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


class PostgresDb:
    """The pool and what every request goes through: ``connection`` and ``read`` for reads,
    ``transaction`` for writes, ``written`` to count rows. Operation names label the
    metrics (``sems_store_errors_total{store="postgres", operation=...}``)."""

    def __init__(self, dsn: str, *, metrics: Metrics, min_size: int = 1, max_size: int = 8,
                 timeout_s: float = 5.0) -> None:
        self.metrics = metrics
        self.where = describe(dsn)
        self.timeout_s = timeout_s
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn, open=False, min_size=min_size, max_size=max_size, name="sems-postgres",
            kwargs={"autocommit": True, "connect_timeout": max(2, math.ceil(timeout_s)),
                    "fallback_application_name": "sems"},
            configure=_configure, check=self._check, timeout=timeout_s,
            reconnect_timeout=timeout_s,
        )
        self._sweep: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Returns at once; the pool connects in the background (see the module docstring)."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        """Idempotent; later calls raise ``StoreUnavailable``."""
        if self._sweep is not None:
            self._sweep.cancel()
            await asyncio.gather(self._sweep, return_exceptions=True)
        await self._pool.close()

    async def _check(self, conn: Conn) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self._sweep is None or self._sweep.done():
                self._sweep = asyncio.create_task(self._sweep_pool())
            raise

    async def _sweep_pool(self) -> None:
        try:
            await self._pool.check()
        except psycopg.Error:  # the pool closed meanwhile; nothing to repair
            pass

    @asynccontextmanager
    async def connection(self, op: str) -> AsyncIterator[Conn]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolClosed as exc:
            raise self.failed(op, "the store is closed or not open yet") from exc
        except PoolTimeout as exc:
            raise self.failed(op, f"no connection within {self.timeout_s:g} s") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self.failed(op, str(exc).strip()) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise self.failed(op, f"{exc.diag.message_primary}: run `sems db upgrade`") from exc
        except psycopg.Error:
            self.metrics.store_errors.labels("postgres", op).inc()
            raise

    def failed(self, op: str, why: str) -> StoreUnavailable:
        """Counted, and the error to raise: the server named, never the DSN's password."""
        self.metrics.store_errors.labels("postgres", op).inc()
        return StoreUnavailable(f"{self.where} is unavailable ({op}): {why}")

    @asynccontextmanager
    async def transaction(self, op: str) -> AsyncIterator[Conn]:
        async with self.connection(op) as conn:
            started = time.perf_counter()
            async with conn.transaction():
                yield conn
            self.metrics.store_write_duration.labels("postgres").observe(
                time.perf_counter() - started
            )

    async def transact(self, op: str, fn: Callable[[Conn], Awaitable[V]], *,
                       attempts: int = RETRY_ATTEMPTS) -> V:
        """``fn`` in one transaction, run again (at most ``attempts`` times in all) when
        PostgreSQL ended it as a deadlock victim or a serialisation failure (SQLSTATE 40P01,
        40001): the transaction was rolled back whole, so running it again is safe, and two
        changes that met are a conflict to wait out, not an unavailable store. The last
        failure is ``StoreUnavailable``. ``fn`` must do nothing but use ``conn``."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(op) as conn:
                    return await fn(conn)
            except StoreUnavailable as exc:
                if attempt == attempts or not isinstance(exc.__cause__, _RETRYABLE):
                    raise  # each failed attempt was counted in store_errors
        raise StoreUnavailable(f"{self.where}: {op} was not attempted")  # attempts < 1

    async def read(self, op: str, sql: str, params: tuple[Any, ...] = ()) -> list[TupleRow]:
        async with self.connection(op) as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    def written(self, table: str, rows: int) -> None:
        self.metrics.store_rows_written.labels("postgres", table).inc(rows)
