"""InfluxTimeSeries against a real InfluxDB 2.7 (tests/servers.py): buckets and their
retention, exact read-back with the SQLite store's query semantics, idempotent rewrites,
line-protocol escaping, 4xx refusals, and the server going away and coming back.

Each test uses buckets of its own on the shared server, or a server of its own when it stops it.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from connectors.influx import InfluxBuckets, InfluxRejected, InfluxTimeSeries
from connectors.influx.protocol import reading_line, rollup_line
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.metadata import Facility, Meter, MeterType
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tests.integration.helpers import eventually
from tests.servers import INFLUX_ORG, INFLUX_TOKEN, InfluxDB

pytestmark = pytest.mark.integration

# Recent on purpose: InfluxDB refuses points older than the bucket's retention (HTTP 422).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
DAY_S = 86_400
TYPES = {"fa-main": MeterType.MAIN, "fa-hvac": MeterType.HVAC, "fb-main": MeterType.MAIN}
FACILITY_OF = {"fa-main": "fa", "fa-hvac": "fa", "fb-main": "fb"}
# Floats whose shortest repr is long, tiny, negative or near the schema's limit.
KW = [0.1 + 0.2, 1e-05, -12.25, 99_999.99999999999, 42.0, 7.000000000000001, 0.0,
      3.3333333333333335]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(meter_id: str, offset_s: float, kw: float) -> SensorReading:
    return SensorReading(facility_id=FACILITY_OF[meter_id], meter_id=meter_id,
                         meter_type=TYPES[meter_id], timestamp=at(offset_s),
                         active_power_kw=kw, reactive_power_kvar=kw / 3,
                         voltage_v=229.99999999999997, frequency_hz=49.99)


def rollup(scope_id: str, window: WindowName, start: datetime, kw: float, *,
           scope: Scope = Scope.METER, max_kw: float | None = None,
           min_kw: float | None = None) -> Rollup:
    length_s = {WindowName.MIN_1: 60, WindowName.MIN_15: 900, WindowName.HOUR_1: 3600}[window]
    return Rollup(scope=scope, facility_id=FACILITY_OF.get(scope_id, scope_id),
                  meter_id=scope_id if scope is Scope.METER else None, window=window,
                  window_start=start, window_end=start + timedelta(seconds=length_s),
                  avg_power_kw=kw, max_power_kw=max_kw, min_power_kw=min_kw,
                  total_energy_kwh=kw * length_s / 3600, sample_count=length_s // 15,
                  covered_s=length_s * 0.9375, coverage=0.9375)


# fa's two meters report every 15 s for two minutes (fa-hvac 1 kW below fa-main); fb-main
# every 30 s.
READINGS = [*(reading(m, 15 * i, KW[i] - n) for i in range(8)
              for n, m in enumerate(("fa-main", "fa-hvac"))),
            *(reading("fb-main", 30 * i, KW[i]) for i in range(4))]
ROLLUPS = [
    rollup("fa-main", WindowName.MIN_1, at(0), 0.30000000000000004, max_kw=1e-05, min_kw=-12.25),
    rollup("fa-main", WindowName.MIN_1, at(60), 7.000000000000001, max_kw=42.0, min_kw=0.0),
    rollup("fa-hvac", WindowName.MIN_1, at(0), 1.5, max_kw=2.5, min_kw=0.5),
    rollup("fa", WindowName.MIN_1, at(0), 3.3333333333333335, scope=Scope.FACILITY),  # nulls
    rollup("fa", WindowName.MIN_1, at(60), 5.5, scope=Scope.FACILITY, max_kw=6.0),  # min null
    rollup("fb", WindowName.MIN_1, at(0), 8.25, scope=Scope.FACILITY, max_kw=9.0, min_kw=7.0),
    rollup("fa", WindowName.MIN_15, at(0), 4.0, scope=Scope.FACILITY, min_kw=1.0),
    rollup("fa-main", WindowName.MIN_15, at(0), 3.5, max_kw=42.0, min_kw=-12.25),
    rollup("fa-main", WindowName.HOUR_1, at(0), 3.5, max_kw=42.0, min_kw=-12.25),
]


def unique_buckets(*, raw_days: int = 90, minute_days: int = 90,
                   rollups_days: int = 730) -> InfluxBuckets:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return InfluxBuckets(raw=f"{prefix}_raw", raw_days=raw_days, minute=f"{prefix}_1m",
                         minute_days=minute_days, rollups=f"{prefix}_rollups",
                         rollups_days=rollups_days)


def influx_store(url: str, buckets: InfluxBuckets, *, metrics: Metrics | None = None,
                 timeout_s: float = 10.0) -> InfluxTimeSeries:
    return InfluxTimeSeries(url, INFLUX_TOKEN, INFLUX_ORG, buckets=buckets,
                            metrics=metrics or Metrics(), timeout_s=timeout_s)


@pytest.fixture
async def store(influxdb: InfluxDB) -> AsyncIterator[InfluxTimeSeries]:
    s = influx_store(influxdb.url, unique_buckets())
    await s.open()
    yield s
    await s.close()


async def bucket_retention(url: str, name: str) -> tuple[int, int]:
    """(retention, shard-group duration) of a bucket, read through the HTTP API directly."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Token {INFLUX_TOKEN}"}) as http:
        async with http.get(f"{url}/api/v2/buckets",
                            params={"org": INFLUX_ORG, "name": name}) as resp:
            body: dict[str, Any] = await resp.json()
    buckets = body["buckets"]
    assert len(buckets) == 1, buckets
    rule = buckets[0]["retentionRules"][0]
    return int(rule["everySeconds"]), int(rule["shardGroupDurationSeconds"])


def errors(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "sems_store_errors_total", {"store": "influxdb", "operation": operation})
    return value or 0.0


# -- buckets -----------------------------------------------------------------------------------

async def test_open_creates_the_buckets_with_their_retention_and_updates_it(
    influxdb: InfluxDB,
) -> None:
    buckets = unique_buckets(raw_days=90, minute_days=30, rollups_days=730)
    async with influx_store(influxdb.url, buckets) as first:
        await first.open()  # a second open() of the same object changes nothing
    # InfluxDB picks the shard-group duration: 1 d up to 6 months of retention, 7 d beyond.
    assert await bucket_retention(influxdb.url, buckets.raw) == (90 * DAY_S, DAY_S)
    assert await bucket_retention(influxdb.url, buckets.minute) == (30 * DAY_S, DAY_S)
    assert await bucket_retention(influxdb.url, buckets.rollups) == (730 * DAY_S, 7 * DAY_S)

    changed = InfluxBuckets(raw=buckets.raw, raw_days=7, minute=buckets.minute, minute_days=60,
                            rollups=buckets.rollups, rollups_days=1)
    async with influx_store(influxdb.url, changed):
        pass
    assert await bucket_retention(influxdb.url, buckets.raw) == (7 * DAY_S, DAY_S)
    assert await bucket_retention(influxdb.url, buckets.minute) == (60 * DAY_S, DAY_S)
    # 1 d is shorter than the 7-d shard groups, which the server refuses: they shrink to 1 h.
    assert await bucket_retention(influxdb.url, buckets.rollups) == (DAY_S, 3600)


# -- read-back ---------------------------------------------------------------------------------

class Queries(Protocol):
    """The read side both stores share."""

    async def has_reading(self, meter_id: str, timestamp: datetime) -> bool: ...

    async def latest_readings(self, facility_id: str) -> list[SensorReading]: ...

    async def rollups(self, *, scope: Scope, scope_id: str, window: WindowName,
                      start: datetime, end: datetime, limit: int) -> list[Rollup]: ...

    async def carries(self, facility_id: str,
                      before: datetime) -> dict[str, tuple[datetime, float]]: ...

    async def readings_since(self, facility_id: str, since: datetime) -> list[SensorReading]: ...

    async def minute_rollups(self, facility_id: str, start: datetime,
                             end: datetime) -> list[Rollup]: ...


def rollups_of(scope: Scope, scope_id: str, window: WindowName, start: datetime,
               end: datetime, limit: int = 100) -> Callable[[Queries], Awaitable[object]]:
    return lambda s: s.rollups(scope=scope, scope_id=scope_id, window=window, start=start,
                               end=end, limit=limit)


M1, M15, H1 = WindowName.MIN_1, WindowName.MIN_15, WindowName.HOUR_1
HOUR = timedelta(hours=1)
# (case, query, expected worked out from READINGS and ROLLUPS)
CASES: list[tuple[str, Callable[[Queries], Awaitable[object]], object]] = [
    ("stored reading", lambda s: s.has_reading("fa-main", at(0)), True),
    ("1 ms later is another reading", lambda s: s.has_reading("fa-main", at(0.001)), False),
    ("fb-main reports every 30 s", lambda s: s.has_reading("fb-main", at(15)), False),
    ("unknown meter", lambda s: s.has_reading("nope", at(0)), False),
    ("newest of each meter, by meter id", lambda s: s.latest_readings("fa"),
     [reading("fa-hvac", 105, KW[7] - 1), reading("fa-main", 105, KW[7])]),
    ("fb's newest is at 90 s", lambda s: s.latest_readings("fb"),
     [reading("fb-main", 90, KW[3])]),
    ("unknown facility", lambda s: s.latest_readings("nope"), []),
    ("carries strictly before 30 s", lambda s: s.carries("fa", at(30)),
     {"fa-main": (at(15), KW[1]), "fa-hvac": (at(15), KW[1] - 1)}),
    ("a reading exactly at `before` is not a carry", lambda s: s.carries("fb", at(60)),
     {"fb-main": (at(30), KW[1])}),
    ("no carry before the first reading", lambda s: s.carries("fa", at(0)), {}),
    ("readings since 90 s, by (time, meter)", lambda s: s.readings_since("fa", at(90)),
     [reading("fa-hvac", 90, KW[6] - 1), reading("fa-main", 90, KW[6]),
      reading("fa-hvac", 105, KW[7] - 1), reading("fa-main", 105, KW[7])]),
    ("all of fb", lambda s: s.readings_since("fb", T0 - HOUR),
     [reading("fb-main", 30 * i, KW[i]) for i in range(4)]),
    ("meter 1m, both windows", rollups_of(Scope.METER, "fa-main", M1, T0, T0 + HOUR),
     ROLLUPS[:2]),
    ("end is exclusive", rollups_of(Scope.METER, "fa-main", M1, T0, at(60)), ROLLUPS[:1]),
    ("start is inclusive", rollups_of(Scope.METER, "fa-main", M1, at(60), T0 + HOUR),
     ROLLUPS[1:2]),
    ("limit keeps the earliest", rollups_of(Scope.METER, "fa-main", M1, T0, T0 + HOUR, 1),
     ROLLUPS[:1]),
    ("limit 0", rollups_of(Scope.METER, "fa-main", M1, T0, T0 + HOUR, 0), []),
    ("empty range", rollups_of(Scope.METER, "fa-main", M1, at(60), at(60)), []),
    ("facility 1m with null max/min", rollups_of(Scope.FACILITY, "fa", M1, T0, T0 + HOUR),
     ROLLUPS[3:5]),
    ("facility 15m", rollups_of(Scope.FACILITY, "fa", M15, T0, T0 + HOUR), [ROLLUPS[6]]),
    ("meter 15m", rollups_of(Scope.METER, "fa-main", M15, T0, T0 + HOUR), [ROLLUPS[7]]),
    ("meter 1h", rollups_of(Scope.METER, "fa-main", H1, T0, T0 + HOUR), [ROLLUPS[8]]),
    ("scope is part of the key", rollups_of(Scope.METER, "fa", M1, T0, T0 + HOUR), []),
    ("minute rollups of fa, both scopes",
     lambda s: s.minute_rollups("fa", T0, T0 + HOUR),
     [ROLLUPS[3], ROLLUPS[2], ROLLUPS[0], ROLLUPS[4], ROLLUPS[1]]),
    ("minute rollups, end exclusive", lambda s: s.minute_rollups("fa", T0, at(60)),
     [ROLLUPS[3], ROLLUPS[2], ROLLUPS[0]]),
]


def sortable(value: object) -> object:
    """Rows that share a window start come in no promised order; compare them as a set."""
    if isinstance(value, list) and value and isinstance(value[0], Rollup):
        return sorted(value, key=lambda r: (r.window_start, r.scope.value,
                                            r.meter_id or r.facility_id))
    return value


async def test_a_batch_reads_back_exactly_as_from_the_sqlite_store(
    store: InfluxTimeSeries, tmp_path: Path,
) -> None:
    await store.write(READINGS, ROLLUPS)
    sqlite = SqliteStore(tmp_path / "oracle.db", metrics=Metrics())
    await sqlite.open()
    try:
        await sqlite.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                                        for f in ("fa", "fb")])
        await sqlite.upsert_meters([Meter(meter_id=m, facility_id=FACILITY_OF[m],
                                          meter_type=t, sample_interval_s=15)
                                    for m, t in TYPES.items()])
        await sqlite.commit(CommitBatch(readings=READINGS, rollups=ROLLUPS))
        for case, query, expected in CASES:
            got = await query(store)
            assert got == expected, case
            assert sortable(got) == sortable(await query(sqlite)), f"{case}: differs from SQLite"
    finally:
        await sqlite.close()
    for r in await store.readings_since("fa", T0):
        assert r.timestamp.tzinfo is UTC  # UTC out, whatever went in


async def test_rewriting_a_batch_duplicates_nothing_and_a_rewrite_replaces_every_field(
    store: InfluxTimeSeries,
) -> None:
    await store.write(READINGS, ROLLUPS)
    await store.write(READINGS, ROLLUPS)  # an at-least-once replay
    assert len(await store.readings_since("fa", T0)) == 16
    assert len(await store.minute_rollups("fa", T0, T0 + HOUR)) == 5
    assert await store.rollups(scope=Scope.METER, scope_id="fa-main", window=M1, start=T0,
                               end=T0 + HOUR, limit=10) == ROLLUPS[:2]

    # A rewrite that drops max/min must read back null, not the old values (an InfluxDB
    # upsert keeps fields the new point omits; null_fields records which are null).
    revised = ROLLUPS[0].model_copy(update={"avg_power_kw": 99.0, "max_power_kw": None,
                                            "min_power_kw": None, "sample_count": 3})
    await store.write([], [revised])
    assert await store.rollups(scope=Scope.METER, scope_id="fa-main", window=M1, start=T0,
                               end=at(60), limit=10) == [revised]
    assert await store.rollups(scope=Scope.METER, scope_id="fa-main", window=M1, start=T0,
                               end=T0 + HOUR, limit=10) == [revised, ROLLUPS[1]]


async def _post_lines(influxdb: InfluxDB, bucket: str, lines: list[str]) -> None:
    """Lines posted as they are, past the store: what a write cut short may leave."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Token {INFLUX_TOKEN}"}) as http:
        async with http.post(f"{influxdb.url}/api/v2/write", data="\n".join(lines).encode(),
                             params={"org": INFLUX_ORG, "bucket": bucket,
                                     "precision": "ms"}) as resp:
            assert resp.status == 204, await resp.text()


async def test_a_point_left_partial_by_a_cut_short_write_is_skipped_until_rewritten(
    influxdb: InfluxDB,
) -> None:
    """InfluxDB keeps each field of a line as its own series, so a write cut short by the
    server stopping can leave a point with some fields: readers skip it (and count it), and
    the retry of the unacknowledged batch makes it whole (test_production_failures found a
    forecast crashing on such a rollup's missing coverage)."""
    metrics = Metrics()
    buckets = unique_buckets()
    async with influx_store(influxdb.url, buckets, metrics=metrics) as s:
        reading_, rollup = READINGS[0], ROLLUPS[0]
        series, fields, ts = reading_line(reading_).split(" ")  # series, fields, time
        await _post_lines(influxdb, buckets.raw, [f"{series} {fields.split(',')[0]} {ts}"])
        series, fields, ts = rollup_line(rollup).split(" ")
        partial = ",".join(f for f in fields.split(",") if not f.startswith("coverage="))
        await _post_lines(influxdb, buckets.for_window(rollup.window), [f"{series} {partial} {ts}"])

        assert await s.readings_since("fa", T0) == []
        assert await s.latest_readings("fa") == []
        assert await s.rollups(scope=Scope.METER, scope_id="fa-main", window=M1, start=T0,
                               end=T0 + HOUR, limit=10) == []
        assert await s.minute_rollups("fa", T0, T0 + HOUR) == []
        assert errors(metrics, "incomplete_point") == 4

        await s.write([reading_], [rollup])  # the retry
        assert await s.readings_since("fa", T0) == [reading_]
        assert await s.rollups(scope=Scope.METER, scope_id="fa-main", window=M1, start=T0,
                               end=T0 + HOUR, limit=10) == [rollup]


# -- line protocol -----------------------------------------------------------------------------

async def test_line_protocol_escapes_tag_values_and_they_read_back(
    store: InfluxTimeSeries,
) -> None:
    # Identifiers cannot hold these characters; model_construct skips that validation.
    odd = SensorReading.model_construct(
        facility_id="fac one,a=b", meter_id="m=1 x,y", meter_type=MeterType.MAIN,
        timestamp=at(0), active_power_kw=1.5, reactive_power_kvar=-0.25, voltage_v=230.0,
        frequency_hz=50.0)
    ms = round(at(0).timestamp() * 1000)
    assert reading_line(odd) == (
        r"energy_readings,facility_id=fac\ one\,a\=b,meter_id=m\=1\ x\,y,meter_type=main "
        f"active_power_kw=1.5,reactive_power_kvar=-0.25,voltage_v=230.0,frequency_hz=50.0 {ms}")
    odd_rollup = Rollup.model_construct(
        scope=Scope.FACILITY, facility_id="fac one,a=b", meter_id=None, window=M15,
        window_start=at(0), window_end=at(900), avg_power_kw=2.0, max_power_kw=None,
        min_power_kw=1.0, total_energy_kwh=0.5, sample_count=60, covered_s=900.0, coverage=1.0)
    assert rollup_line(odd_rollup) == (
        r"energy_rollups,facility_id=fac\ one\,a\=b,scope=facility,scope_id=fac\ one\,a\=b,"
        r"window=15m avg_power_kw=2.0,min_power_kw=1.0,total_energy_kwh=0.5,sample_count=60i,"
        f"covered_s=900.0,coverage=1.0,window_end_ms={ms + 900_000}i,null_fields=1i {ms}")

    await store.write([odd], [odd_rollup])
    assert await store.latest_readings("fac one,a=b") == [odd]
    assert await store.has_reading("m=1 x,y", at(0))
    assert await store.rollups(scope=Scope.FACILITY, scope_id="fac one,a=b", window=M15,
                               start=T0, end=T0 + HOUR, limit=5) == [odd_rollup]

    # InfluxDB does not unescape a backslash, so such a value could not round-trip.
    with pytest.raises(InfluxRejected, match="cannot be written"):
        await store.write([odd.model_copy(update={"meter_id": "back\\slash"})], [])


# -- refusals and outages ----------------------------------------------------------------------

async def test_points_the_server_refuses_raise_a_value_error_never_dropped_silently(
    influxdb: InfluxDB,
) -> None:
    metrics = Metrics()
    async with influx_store(influxdb.url, unique_buckets(raw_days=1), metrics=metrics) as s:
        too_old = reading("fa-main", 0, 1.0).model_copy(
            update={"timestamp": datetime.now(UTC) - timedelta(days=3)})
        with pytest.raises(InfluxRejected, match="outside retention") as refused:
            await s.write([too_old, reading("fa-main", 15, 2.0)], [])
        assert isinstance(refused.value, ValueError) and refused.value.status == 422
        assert errors(metrics, "write") == 1
        # InfluxDB writes the acceptable points of a partial write; the caller still hears.
        assert [r.timestamp for r in await s.readings_since("fa", T0)] == [at(15)]

        with pytest.raises(InfluxRejected, match="could not find bucket") as missing:
            await s.query('from(bucket: name) |> range(start: 0)', params={"name": "nope"})
        assert missing.value.status == 404 and errors(metrics, "read") == 1


async def test_rollups_past_their_buckets_retention_are_counted_not_written(
    influxdb: InfluxDB,
) -> None:
    """1-minute rollups kept for 1 day while raw readings are kept longer: a replay of
    3-day-old readings closes windows the 1-minute bucket no longer keeps. They are not
    written (the server would refuse the batch) and on-call sees how many."""
    metrics = Metrics()
    async with influx_store(influxdb.url, unique_buckets(minute_days=1),
                            metrics=metrics) as s:
        old_start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
        old = rollup("fa-main", M1, old_start, 5.0)
        kept_15m = rollup("fa-main", M15, old_start.replace(minute=0), 5.0)
        fresh = rollup("fa-main", M1, T0, 7.0)
        await s.write([], [old, kept_15m, fresh])
        assert metrics.registry.get_sample_value(
            "sems_store_rows_expired_total", {"store": "influxdb", "table": "rollups"}) == 1
        assert errors(metrics, "write") == 0
        assert await s.rollups(scope=Scope.METER, scope_id="fa-main", window=M1,
                               start=old_start - HOUR, end=T0 + HOUR, limit=10) == [fresh]
        assert await s.rollups(scope=Scope.METER, scope_id="fa-main", window=M15,
                               start=old_start - HOUR, end=T0 + HOUR, limit=10) == [kept_15m]


async def test_a_stopped_server_makes_writes_unavailable_and_the_same_object_recovers(
    own_influxdb: InfluxDB,
) -> None:
    metrics = Metrics()
    timeout_s = 2.0
    async with influx_store(own_influxdb.url, unique_buckets(), metrics=metrics,
                            timeout_s=timeout_s) as s:
        await s.write(READINGS[:4], ROLLUPS[:1])

        own_influxdb.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as down:
            await s.write(READINGS[4:8], [])
        assert time.monotonic() - started < timeout_s + 1
        assert INFLUX_TOKEN not in str(down.value) and own_influxdb.url in str(down.value)
        with pytest.raises(StoreUnavailable):
            await s.latest_readings("fa")
        with pytest.raises(StoreUnavailable):
            await s.ping()
        assert errors(metrics, "write") == 1 and errors(metrics, "read") == 1

        own_influxdb.start()
        await eventually(lambda: wrote(s, READINGS[4:8]), timeout_s=30,
                         what="a write once InfluxDB is back")
        await s.ping()
        assert await s.readings_since("fa", T0) == sorted(
            READINGS[:8], key=lambda r: (r.timestamp, r.meter_id))


async def test_a_hung_server_times_out_as_unavailable_within_the_timeout(
    own_influxdb: InfluxDB,
) -> None:
    timeout_s = 1.5
    process = own_influxdb.process
    assert process is not None
    async with influx_store(own_influxdb.url, unique_buckets(), timeout_s=timeout_s) as s:
        process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"did not answer write within 1\.5 s"):
                await s.write(READINGS[:4], [])
            assert timeout_s - 0.1 < time.monotonic() - started < timeout_s + 1
        finally:
            process.send_signal(signal.SIGCONT)
        await eventually(lambda: wrote(s, READINGS[:4]), timeout_s=30,
                         what="a write once InfluxDB answers again")
        assert len(await s.readings_since("fa", T0)) == 4


async def wrote(store: InfluxTimeSeries, readings: list[SensorReading]) -> bool:
    try:
        await store.write(readings, [])
    except StoreUnavailable:
        return False
    return True
