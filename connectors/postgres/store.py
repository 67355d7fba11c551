"""PostgreSQL store of the production profile: facilities and meters (``MetadataStore``), dead
letters and window checkpoints. Same semantics as ``connectors/sqlite/store.py``: upserts where
the last row of a list wins, ids in byte order, dead letters newest first and unique per
(source, payload).

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
import base64
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from connectors.postgres.access import PostgresAccess
from connectors.postgres.dr import PostgresDr
from connectors.postgres.forecasts import PostgresForecasts
from core.metrics import Metrics
from schemas.deadletter import DeadLetter
from schemas.metadata import Facility, Meter, MeterType
from tables.ports.store import StoreUnavailable
from tables.rollups import Checkpoint

Conn = AsyncConnection[TupleRow]
V = TypeVar("V")

# Batches go as one statement over binary arrays (``%b``): for 2,000 dead letters 31 ms and
# 3.6 ms of client CPU, against 55 ms / 18 ms for executemany (pipelined), 35 ms / 6 ms for
# COPY into a temporary table, and 120 ms / 80 ms for the same unnest with text arrays.
_INSERT_DEAD_LETTERS = (
    "INSERT INTO dead_letters (received_at, reason, source, payload_sha256, record) "
    "SELECT a, r, s, h, j::jsonb "
    "FROM unnest(%b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "AS u(a, r, s, h, j) ON CONFLICT (source, payload_sha256) DO NOTHING"
)
_UPSERT_CHECKPOINTS = (
    "INSERT INTO window_checkpoints (facility_id, closed_until_ms, max_ts_ms) "
    "SELECT * FROM unnest(%b::text[], %b::int8[], %b::int8[]) "
    "ON CONFLICT (facility_id) DO UPDATE SET closed_until_ms = excluded.closed_until_ms, "
    "max_ts_ms = excluded.max_ts_ms"
)
_FACILITY_COLUMNS = ("facility_id, name, timezone, contract_demand_kw, latitude, longitude, "
                     "country, dr_baseline")
_UPSERT_FACILITIES = (
    f"INSERT INTO facilities ({_FACILITY_COLUMNS}) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[], "
    "%b::float8[], %b::text[], %b::text[]) "
    "ON CONFLICT (facility_id) DO UPDATE SET name = excluded.name, "
    "timezone = excluded.timezone, contract_demand_kw = excluded.contract_demand_kw, "
    "latitude = excluded.latitude, longitude = excluded.longitude, country = excluded.country, "
    "dr_baseline = excluded.dr_baseline"
)
_UPSERT_METERS = (
    "INSERT INTO meters (meter_id, facility_id, meter_type, sample_interval_s) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[]) "
    "ON CONFLICT (meter_id) DO UPDATE SET facility_id = excluded.facility_id, "
    "meter_type = excluded.meter_type, sample_interval_s = excluded.sample_interval_s"
)



def describe(dsn: str) -> str:
    """``PostgreSQL at host:port/dbname``: names the server in messages, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's message may quote the DSN, password included.
        raise ValueError("the PostgreSQL DSN is not a valid connection string") from None
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"PostgreSQL at {host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _last_wins(items: Iterable[V], key: Callable[[V], str]) -> list[V]:
    """One item per key, the last one given (``ON CONFLICT DO UPDATE`` refuses to touch a row
    twice in one statement, where SQLite's executemany applies each), in key order: concurrent
    upserts lock their rows in the same order and cannot deadlock."""
    last = {key(item): item for item in items}
    return [last[k] for k in sorted(last)]


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _storable(d: DeadLetter) -> DeadLetter:
    """PostgreSQL text and jsonb cannot hold U+0000, which a valid UTF-8 payload may contain
    (one b"\\x00" from a meter would otherwise fail every retry of its batch). Such a payload is
    kept losslessly as base64 of its bytes, the model's other encoding; a NUL in our own
    message, details or source becomes U+FFFD."""
    payload, encoding = d.raw_payload, d.payload_encoding
    if "\x00" in payload:
        payload, encoding = base64.b64encode(payload.encode()).decode("ascii"), "base64"
    return d.model_copy(update={"raw_payload": payload, "payload_encoding": encoding,
                                "message": _without_nul(d.message),
                                "source": _without_nul(d.source),
                                "details": _without_nul(d.details)})


def _dead_letter_row(d: DeadLetter) -> tuple[Any, ...]:
    # Unique per the payload as received (as in SQLite), whatever form it is kept in.
    sha256 = hashlib.sha256(d.raw_payload.encode()).hexdigest()
    record = d.model_dump_json()
    if "\\u0000" in record:  # rare, and _storable is exact
        d = _storable(d)
        record = d.model_dump_json()
    return (d.received_at, d.reason.value, d.source, sha256, record)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (the unnest arrays)."""
    return [[row[i] for row in rows] for i in range(width)]


async def _configure(conn: Conn) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


class PostgresStore(PostgresAccess, PostgresForecasts, PostgresDr):
    """Implements ``MetadataStore`` and the events half of the production store."""

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

    # -- lifecycle -----------------------------------------------------------------------

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
    async def _connection(self, op: str) -> AsyncIterator[Conn]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolClosed as exc:
            raise self._failed(op, "the store is closed or not open yet") from exc
        except PoolTimeout as exc:
            raise self._failed(op, f"no connection within {self.timeout_s:g} s") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._failed(op, str(exc).strip()) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise self._failed(op, f"{exc.diag.message_primary}: run `sems db upgrade`") from exc
        except psycopg.Error:
            self.metrics.store_errors.labels("postgres", op).inc()
            raise

    def _failed(self, op: str, why: str) -> StoreUnavailable:
        self.metrics.store_errors.labels("postgres", op).inc()
        return StoreUnavailable(f"{self.where} is unavailable ({op}): {why}")

    @asynccontextmanager
    async def _transaction(self, op: str) -> AsyncIterator[Conn]:
        async with self._connection(op) as conn:
            started = time.perf_counter()
            async with conn.transaction():
                yield conn
            self.metrics.store_write_duration.labels("postgres").observe(
                time.perf_counter() - started
            )

    async def _read(self, op: str, sql: str, params: tuple[Any, ...] = ()) -> list[TupleRow]:
        async with self._connection(op) as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    def _written(self, table: str, rows: int) -> None:
        self.metrics.store_rows_written.labels("postgres", table).inc(rows)

    # -- events --------------------------------------------------------------------------

    async def record(self, dead_letters: list[DeadLetter], checkpoints: list[Checkpoint]) -> None:
        """Dead letters (a repeated one is dropped) and checkpoints, in one transaction."""
        if not dead_letters and not checkpoints:
            return
        letters = [_dead_letter_row(d) for d in dead_letters]
        marks = [(c.facility_id, c.closed_until_ms, c.max_ts_ms)
                 for c in _last_wins(checkpoints, lambda c: c.facility_id)]
        inserted = 0
        async with self._transaction("record") as conn:
            if letters:
                cursor = await conn.execute(_INSERT_DEAD_LETTERS, _columns(letters, 5))
                inserted = cursor.rowcount
            if marks:
                await conn.execute(_UPSERT_CHECKPOINTS, _columns(marks, 3))
        self._written("dead_letters", inserted)
        self._written("window_checkpoints", len(marks))

    async def dead_letters(self, *, limit: int) -> list[DeadLetter]:
        """Newest first (insertion order, as SQLite); a negative limit means all, as there."""
        rows = await self._read(
            "dead_letters", "SELECT record::text FROM dead_letters ORDER BY id DESC LIMIT %s",
            (limit if limit >= 0 else None,),
        )
        return [DeadLetter.model_validate(orjson.loads(row[0])) for row in rows]

    async def checkpoints(self) -> list[Checkpoint]:
        rows = await self._read(
            "checkpoints", "SELECT facility_id, closed_until_ms, max_ts_ms "
            "FROM window_checkpoints ORDER BY facility_id",
        )
        return [Checkpoint(*row) for row in rows]

    async def prune_dead_letters(self, before: datetime) -> int:
        if before.tzinfo is None:
            raise ValueError("prune_dead_letters needs an aware datetime")
        async with self._transaction("prune_dead_letters") as conn:
            cursor = await conn.execute("DELETE FROM dead_letters WHERE received_at < %s",
                                        (before,))
            return cursor.rowcount

    # -- metadata ------------------------------------------------------------------------

    async def facilities(self) -> list[Facility]:
        rows = await self._read(
            "facilities", f"SELECT {_FACILITY_COLUMNS} FROM facilities ORDER BY facility_id",
        )
        return [Facility(facility_id=r[0], name=r[1], timezone=r[2], contract_demand_kw=r[3],
                         latitude=r[4], longitude=r[5], country=r[6], dr_baseline=r[7])
                for r in rows]

    async def meters(self) -> list[Meter]:
        rows = await self._read(
            "meters", "SELECT meter_id, facility_id, meter_type, sample_interval_s "
            "FROM meters ORDER BY meter_id",
        )
        return [Meter(meter_id=r[0], facility_id=r[1], meter_type=MeterType(r[2]),
                      sample_interval_s=r[3]) for r in rows]

    async def upsert_facilities(self, facilities: list[Facility]) -> None:
        rows = [(f.facility_id, f.name, f.timezone, f.contract_demand_kw, f.latitude,
                 f.longitude, f.country, f.dr_baseline)
                for f in _last_wins(facilities, lambda f: f.facility_id)]
        if not rows:
            return
        async with self._transaction("upsert_facilities") as conn:
            await conn.execute(_UPSERT_FACILITIES, _columns(rows, 8))
        self._written("facilities", len(rows))

    async def upsert_meters(self, meters: list[Meter]) -> None:
        rows = [(m.meter_id, m.facility_id, m.meter_type.value, m.sample_interval_s)
                for m in _last_wins(meters, lambda m: m.meter_id)]
        if not rows:
            return
        async with self._transaction("upsert_meters") as conn:
            await conn.execute(_UPSERT_METERS, _columns(rows, 4))
        self._written("meters", len(rows))

    async def ping(self) -> None:
        await self._read("ping", "SELECT 1")
