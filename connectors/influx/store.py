"""InfluxDB 2.7 time series: readings and rollups, written as line protocol, read with Flux.

Three buckets, so that each granularity gets its own retention: raw readings, 1-minute rollups,
and the 15-minute and hourly rollups. A write is an upsert: a point with the same series (tags)
and time replaces the fields it carries, which is what keeps at-least-once replays exact.
Because an upsert keeps fields the new point omits, every rollup also carries ``null_fields``
(bit 1: ``max_power_kw`` is null, bit 2: ``min_power_kw`` is null), so a rewrite that turns a
value into null reads back as null, as in the SQLite store's ``INSERT OR REPLACE``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import orjson
from influxdb_client.client.flux_csv_parser import FluxQueryException
from influxdb_client.client.flux_table import TableList
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.query_api_async import QueryApiAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.buckets_service import BucketsService
from influxdb_client.service.organizations_service import OrganizationsService

from connectors.influx.protocol import (
    CARRIES,
    HAS_READING,
    LATEST_READINGS,
    MINUTE_ROLLUPS,
    READING_FIELDS,
    READINGS_SINCE,
    ROLLUP_FIELDS,
    ROLLUPS_QUERY,
    InfluxRejected,
    complete,
    ms_of,
    reading_line,
    reading_of,
    rollup_line,
    rollup_of,
)
from core.metrics import Metrics
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.store import StoreUnavailable

DAY_S = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Flux's range() needs a stop; the SQLite store has no upper bound, and meters may run ahead of
# the server clock by up to SEMS_MAX_FUTURE_S, so "now" would be wrong. 2262 is Flux's limit.
_END_OF_TIME = datetime(2262, 1, 1, tzinfo=UTC)
_STORE = "influxdb"
# WritePrecision.MS is the str "ms"; the client annotates the parameter as the class.
_MS_PRECISION = cast(WritePrecision, WritePrecision.MS)
@dataclass(frozen=True, slots=True)
class InfluxBuckets:
    """Bucket names and retention (days): raw readings, 1-minute rollups, and the 15-minute
    and hourly rollups, each kept as long as its granularity is useful."""

    raw: str = "sems_raw"
    raw_days: int = 90
    minute: str = "sems_rollups_1m"
    minute_days: int = 90
    rollups: str = "sems_rollups"
    rollups_days: int = 730

    def __post_init__(self) -> None:
        names = (self.raw, self.minute, self.rollups)
        if not all(names) or len(set(names)) != 3:
            raise ValueError(f"three distinct bucket names are needed, got {names}")
        if min(self.raw_days, self.minute_days, self.rollups_days) < 1:
            raise ValueError(f"retention must be at least 1 day: {self}")

    def retention_days(self) -> dict[str, int]:
        return {self.raw: self.raw_days, self.minute: self.minute_days,
                self.rollups: self.rollups_days}

    def for_window(self, window: WindowName) -> str:
        return self.minute if window is WindowName.MIN_1 else self.rollups


# -- line protocol -------------------------------------------------------------------------

def _bound(ts: datetime, what: str) -> datetime:
    """A query bound at the millisecond the points are stored at, as the SQLite store
    compares it; a naive datetime is a caller's bug."""
    if ts.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware, got {ts.isoformat()}")
    return datetime.fromtimestamp(ms_of(ts) / 1000, tz=UTC)


def _default_shard_group_s(retention_s: int) -> int:
    """InfluxDB's own default shard-group duration for a retention period."""
    if retention_s < 2 * DAY_S:
        return 3600
    return DAY_S if retention_s <= 183 * DAY_S else 7 * DAY_S


def _server_message(exc: ApiException) -> str:
    body = exc.body
    try:
        message = orjson.loads(body)["message"] if body else exc.reason
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body.decode(errors="replace") if isinstance(body, bytes) else body
    return str(message)[:500]


_TRANSPORT_ERRORS = (ApiException, aiohttp.ClientError, TimeoutError, OSError)


@dataclass(slots=True)
class _Connection:
    client: InfluxDBClientAsync
    writer: WriteApiAsync
    reader: QueryApiAsync


class InfluxTimeSeries:
    """The time-series half of ``TimeSeriesStore`` on InfluxDB 2 (dead letters and
    checkpoints live elsewhere). Query semantics equal ``SqliteStore``'s, except that a
    facility's meters are those whose readings carry its ``facility_id`` tag."""

    def __init__(self, url: str, token: str, org: str, *, buckets: InfluxBuckets,
                 metrics: Metrics, timeout_s: float = 10.0) -> None:
        self.url = url
        self.org = org
        self.buckets = buckets
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._token = token
        self._conn: _Connection | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and make sure the buckets exist with their retention. Idempotent."""
        created = self._conn is None
        if self._conn is None:
            client = InfluxDBClientAsync(url=self.url, token=self._token, org=self.org,
                                         timeout=round(self.timeout_s * 1000))
            self._conn = _Connection(client, client.write_api(), client.query_api())
        try:
            org_id = await self._org_id()
            for name, days in self.buckets.retention_days().items():
                await self._ensure_bucket(name, days, org_id)
        except _TRANSPORT_ERRORS as exc:
            self.metrics.store_errors.labels(_STORE, "open").inc()
            if created:
                await self.close()
            raise self._error(exc, "open") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.client.close()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> InfluxTimeSeries:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def ping(self) -> None:
        try:
            await self._require().client.ping()
        except _TRANSPORT_ERRORS as exc:
            self.metrics.store_errors.labels(_STORE, "ping").inc()
            raise self._error(exc, "ping") from exc

    def _require(self) -> _Connection:
        if self._conn is None:
            raise StoreUnavailable("influxdb store is not open")
        return self._conn

    async def _org_id(self) -> str:
        orgs = OrganizationsService(self._require().client.api_client)  # type: ignore[no-untyped-call]
        found = await orgs.get_orgs_async(org=self.org)  # type: ignore[no-untyped-call]
        return str(found.orgs[0].id)

    async def _find_bucket(self, service: Any, name: str, org_id: str) -> Any:
        try:
            found = await service.get_buckets_async(org_id=org_id, name=name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found.buckets[0] if found.buckets else None

    async def _ensure_bucket(self, name: str, retention_days: int, org_id: str) -> None:
        # The client's generated services are untyped; their results are models read as Any.
        service: Any = BucketsService(  # type: ignore[no-untyped-call]
            self._require().client.api_client)
        every_s = retention_days * DAY_S
        bucket = await self._find_bucket(service, name, org_id)
        if bucket is None:
            try:
                await service.post_buckets_async({
                    "orgID": org_id, "name": name,
                    "retentionRules": [{"type": "expire", "everySeconds": every_s}],
                })
                return
            except ApiException as exc:
                if exc.status != 409:  # 409: another process created it meanwhile
                    raise
            bucket = await self._find_bucket(service, name, org_id)
            if bucket is None:
                raise StoreUnavailable(f"influxdb bucket {name} vanished while created")
        expire = next((r for r in bucket.retention_rules or [] if r.type == "expire"), None)
        if expire is not None and expire.every_seconds == every_s:
            return
        rule: dict[str, object] = {"type": "expire", "everySeconds": every_s}
        shard_group_s = expire.shard_group_duration_seconds if expire is not None else None
        if shard_group_s is None or shard_group_s > every_s:
            # The server refuses a retention shorter than the shard-group duration.
            rule["shardGroupDurationSeconds"] = _default_shard_group_s(every_s)
        await service.patch_buckets_id_async(bucket.id, {"retentionRules": [rule]})

    def _error(self, exc: BaseException, op: str) -> Exception:
        """The error to raise for a failed request; never includes the token."""
        if isinstance(exc, ApiException):
            status = exc.status
            message = f"influxdb {op} failed: HTTP {status}: {_server_message(exc)}"
            if isinstance(status, int) and (status >= 500 or status in (408, 429)):
                return StoreUnavailable(message)
            return InfluxRejected(message, status=status)
        if isinstance(exc, TimeoutError):
            return StoreUnavailable(f"influxdb at {self.url} did not answer {op} within "
                                    f"{self.timeout_s:g} s")
        return StoreUnavailable(f"influxdb at {self.url} unreachable during {op}: "
                                f"{type(exc).__name__}: {exc}")

    # -- writes --------------------------------------------------------------------------

    async def write(self, readings: list[SensorReading], rollups: list[Rollup]) -> None:
        """One POST per bucket, concurrently. A failed POST may leave the others written;
        retrying the whole call is exact, as writes are upserts."""
        writer = self._require().writer
        lines: dict[str, list[str]] = {}
        rollups = self._unexpired(rollups)
        try:
            if readings:
                lines[self.buckets.raw] = [reading_line(r) for r in readings]
            for r in rollups:
                lines.setdefault(self.buckets.for_window(r.window), []).append(rollup_line(r))
        except InfluxRejected:
            self.metrics.store_errors.labels(_STORE, "write").inc()
            raise
        if not lines:
            return
        started = time.perf_counter()
        results = await asyncio.gather(
            *(writer.write(bucket=bucket, org=self.org, record="\n".join(body).encode(),
                           write_precision=_MS_PRECISION)
              for bucket, body in lines.items()),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self.metrics.store_errors.labels(_STORE, "write").inc()
            errors = [self._error(f, "write") if isinstance(f, _TRANSPORT_ERRORS) else f
                      for f in failures]
            # Unavailable first: the caller retries, and a retry surfaces any rejection.
            first = next((e for e in errors if isinstance(e, StoreUnavailable)), errors[0])
            raise first from failures[errors.index(first)]
        self.metrics.store_write_duration.labels(_STORE).observe(time.perf_counter() - started)
        rows = self.metrics.store_rows_written
        rows.labels(_STORE, "readings").inc(len(readings))
        rows.labels(_STORE, "rollups").inc(len(rollups))

    def _unexpired(self, rollups: list[Rollup]) -> list[Rollup]:
        """Rollups whose bucket still keeps them. A rollup is derived from readings within the
        raw retention, and its own bucket may keep less (SEMS_RETENTION_ROLLUP_1M_DAYS below
        the raw days): InfluxDB would refuse it, and the embedded store would prune it within
        the hour, so it is counted in ``sems_store_rows_expired_total`` and not written.
        Readings are never dropped here: validation refuses those older than their
        retention, and a refusal from the server still raises."""
        if not rollups:
            return rollups
        now = datetime.now(UTC)
        # A minute's margin: the server compares against its own clock.
        horizon = {w: now - timedelta(days=self.buckets.retention_days()[
                       self.buckets.for_window(w)], minutes=-1) for w in WindowName}
        kept = [r for r in rollups if r.window_start >= horizon[r.window]]
        if len(kept) < len(rollups):
            self.metrics.store_rows_expired.labels(_STORE, "rollups").inc(
                len(rollups) - len(kept))
        return kept

    # -- queries -------------------------------------------------------------------------

    async def query(self, query: str, *, params: dict[str, object] | None = None) -> TableList:
        """A Flux query with ``params`` bound as options (``option name = value``), never
        formatted into its text. Public for tools and tests."""
        reader = self._require().reader
        try:
            return await reader.query(query, org=self.org, params=params or {})
        except _TRANSPORT_ERRORS as exc:
            self.metrics.store_errors.labels(_STORE, "read").inc()
            raise self._error(exc, "read") from exc
        except FluxQueryException as exc:  # an error table after the results had begun
            self.metrics.store_errors.labels(_STORE, "read").inc()
            raise StoreUnavailable(f"influxdb query failed: {exc.message}") from exc

    async def _query(self, query: str, **params: object) -> list[dict[str, Any]]:
        """One dict per row; an empty cell is None, times are aware UTC datetimes."""
        tables = await self.query(query, params=params)
        return [record.values for table in tables for record in table.records]

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool:
        at = _bound(timestamp, "timestamp")
        rows = await self._query(HAS_READING, p_bucket=self.buckets.raw,
                                 p_meter=meter_id, p_start=at,
                                 p_stop=at + timedelta(milliseconds=1))
        return bool(rows)

    def _complete(self, rows: list[dict[str, Any]],
                  fields: tuple[str, ...]) -> list[dict[str, Any]]:
        """The rows with every field of their measurement (``protocol.READING_FIELDS``): a
        point a cut-short write left partial is skipped and counted."""
        kept = [row for row in rows if complete(row, fields)]
        if len(kept) < len(rows):
            self.metrics.store_errors.labels(_STORE, "incomplete_point").inc(
                len(rows) - len(kept))
        return kept

    async def latest_readings(self, facility_id: str) -> list[SensorReading]:
        rows = await self._query(LATEST_READINGS, p_bucket=self.buckets.raw,
                                 p_facility=facility_id, p_start=_EPOCH, p_stop=_END_OF_TIME)
        newest: dict[str, SensorReading] = {}
        for r in map(reading_of, self._complete(rows, READING_FIELDS)):  # a row per series
            seen = newest.get(r.meter_id)
            if seen is None or r.timestamp > seen.timestamp:
                newest[r.meter_id] = r
        return [newest[m] for m in sorted(newest)]

    async def rollups(self, *, scope: Scope, scope_id: str, window: WindowName,
                      start: datetime, end: datetime, limit: int) -> list[Rollup]:
        start, end = _bound(start, "start"), _bound(end, "end")
        if start >= end or limit == 0:
            return []  # Flux refuses an empty range
        rows = await self._query(
            ROLLUPS_QUERY, p_bucket=self.buckets.for_window(window), p_scope=scope.value,
            p_scope_id=scope_id, p_window=window.value, p_start=start, p_stop=end,
            p_limit=limit if limit > 0 else 2**62,  # SQLite reads LIMIT -1 as no limit
        )
        return [rollup_of(row) for row in self._complete(rows, ROLLUP_FIELDS)]

    async def carries(self, facility_id: str,
                      before: datetime) -> dict[str, tuple[datetime, float]]:
        before = _bound(before, "before")
        if before <= _EPOCH:
            return {}
        rows = await self._query(CARRIES, p_bucket=self.buckets.raw,
                                 p_facility=facility_id, p_start=_EPOCH, p_stop=before)
        carries: dict[str, tuple[datetime, float]] = {}
        for row in rows:
            seen = carries.get(row["meter_id"])
            if seen is None or row["_time"] > seen[0]:
                carries[row["meter_id"]] = (row["_time"], row["_value"])
        return carries

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]:
        since = max(_bound(since, "since"), _EPOCH)
        rows = await self._query(READINGS_SINCE, p_bucket=self.buckets.raw,
                                 p_facility=facility_id, p_start=since, p_stop=_END_OF_TIME)
        return [reading_of(row) for row in self._complete(rows, READING_FIELDS)]

    async def minute_rollups(self, facility_id: str, start: datetime,
                             end: datetime) -> list[Rollup]:
        start, end = _bound(start, "start"), _bound(end, "end")
        if start >= end:
            return []
        rows = await self._query(MINUTE_ROLLUPS, p_bucket=self.buckets.minute,
                                 p_facility=facility_id, p_start=start, p_stop=end)
        return [rollup_of(row) for row in self._complete(rows, ROLLUP_FIELDS)]
