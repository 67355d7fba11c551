"""The time-series port's contract: what the pipeline and the API rely on, whichever profile
runs. Every test runs against SQLite and against InfluxDB + PostgreSQL (see conftest.py); the
metadata the rows belong to is upserted through the same store (its contract:
test_metadata_contract.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.deadletter import DeadLetter, RejectReason
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName
from tables.ports.store import Store
from tables.ports.timeseries import CommitBatch
from tables.rollups import Checkpoint
from tests.contract.test_metadata_contract import FACILITIES, METERS

pytestmark = pytest.mark.integration

# Recent: InfluxDB refuses points older than a bucket's retention (90 days for raw data).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
TYPES = {m.meter_id: m.meter_type for m in METERS}
FACILITY_OF = {m.meter_id: m.facility_id for m in METERS}


def reading(meter_id: str, at_s: float, kw: float) -> SensorReading:
    return SensorReading(facility_id=FACILITY_OF[meter_id], meter_id=meter_id,
                         meter_type=TYPES[meter_id], timestamp=T0 + timedelta(seconds=at_s),
                         active_power_kw=kw, reactive_power_kvar=kw / 10, voltage_v=230.5,
                         frequency_hz=50.01)


def rollup(scope_id: str, window: WindowName, start: datetime, kw: float, *,
           scope: Scope = Scope.METER, max_kw: float | None = None) -> Rollup:
    length = {WindowName.MIN_1: 60, WindowName.MIN_15: 900, WindowName.HOUR_1: 3600}[window]
    facility = FACILITY_OF.get(scope_id, scope_id)
    return Rollup(scope=scope, facility_id=facility,
                  meter_id=scope_id if scope is Scope.METER else None, window=window,
                  window_start=start, window_end=start + timedelta(seconds=length),
                  avg_power_kw=kw, max_power_kw=max_kw, min_power_kw=None if max_kw is None
                  else kw - 1, total_energy_kwh=kw * length / 3600, sample_count=4,
                  covered_s=float(length), coverage=1.0)


def dead_letter(n: int) -> DeadLetter:
    return DeadLetter(reason=RejectReason.MALFORMED_JSON, message="not JSON",
                      source="meters/plant-a/a-main",
                      received_at=T0 + timedelta(seconds=n), raw_payload=f"garbage {n}")


READINGS = [reading(m, s, kw) for s, kw in ((0, 10.0), (15, 11.0), (30, 12.5), (45, 13.0))
            for m in ("a-main", "a-hvac", "b-main")]
ROLLUPS = [
    rollup("a-main", WindowName.MIN_1, T0, 11.6, max_kw=13.0),
    rollup("a-main", WindowName.MIN_1, T0 + timedelta(minutes=1), 12.0, max_kw=12.5),
    rollup("plant-a", WindowName.MIN_1, T0, 11.6, scope=Scope.FACILITY),  # null max/min
    rollup("a-main", WindowName.MIN_15, T0, 11.9, max_kw=13.0),
    rollup("a-main", WindowName.HOUR_1, T0, 11.9, max_kw=13.0),
    rollup("b-main", WindowName.MIN_1, T0, 20.0, max_kw=21.0),
]


async def committed(store: Store, batch: CommitBatch) -> Store:
    await store.upsert_facilities(FACILITIES)
    await store.upsert_meters(METERS)
    await store.commit(batch)
    return store


async def test_latest_readings_are_each_meters_newest_in_meter_order(store: Store) -> None:
    await committed(store, CommitBatch(readings=READINGS))
    latest = await store.latest_readings("plant-a")
    assert [(r.meter_id, r.timestamp, r.active_power_kw) for r in latest] == [
        ("a-hvac", T0 + timedelta(seconds=45), 13.0),
        ("a-main", T0 + timedelta(seconds=45), 13.0),
    ]
    assert latest[0] == reading("a-hvac", 45, 13.0)  # every field round-trips
    assert await store.latest_readings("plant-unknown") == []


async def test_readings_since_and_has_reading(store: Store) -> None:
    await committed(store, CommitBatch(readings=READINGS))
    since = await store.readings_since("plant-a", T0 + timedelta(seconds=30))
    assert [(r.timestamp, r.meter_id) for r in since] == [
        (T0 + timedelta(seconds=30), "a-hvac"), (T0 + timedelta(seconds=30), "a-main"),
        (T0 + timedelta(seconds=45), "a-hvac"), (T0 + timedelta(seconds=45), "a-main"),
    ]
    assert await store.has_reading("b-main", T0 + timedelta(seconds=15))
    assert not await store.has_reading("b-main", T0 + timedelta(seconds=16))
    assert not await store.has_reading("a-other", T0)


async def test_carries_are_the_last_reading_of_each_meter_strictly_before(
    store: Store,
) -> None:
    await committed(store, CommitBatch(readings=READINGS))
    carries = await store.carries("plant-a", T0 + timedelta(seconds=30))
    assert carries == {"a-main": (T0 + timedelta(seconds=15), 11.0),
                       "a-hvac": (T0 + timedelta(seconds=15), 11.0)}
    assert await store.carries("plant-a", T0) == {}


async def test_rollups_by_scope_window_and_range_in_start_order(store: Store) -> None:
    await committed(store, CommitBatch(rollups=ROLLUPS))
    got = await store.rollups(scope=Scope.METER, scope_id="a-main", window=WindowName.MIN_1,
                              start=T0, end=T0 + timedelta(hours=1), limit=10)
    assert got == ROLLUPS[:2]
    assert await store.rollups(scope=Scope.METER, scope_id="a-main",
                               window=WindowName.MIN_1, start=T0,
                               end=T0 + timedelta(minutes=1), limit=10) == ROLLUPS[:1]
    assert await store.rollups(scope=Scope.METER, scope_id="a-main",
                               window=WindowName.MIN_1, start=T0,
                               end=T0 + timedelta(hours=1), limit=1) == ROLLUPS[:1]
    facility = await store.rollups(scope=Scope.FACILITY, scope_id="plant-a",
                                   window=WindowName.MIN_1, start=T0,
                                   end=T0 + timedelta(hours=1), limit=10)
    assert facility == [ROLLUPS[2]]
    assert facility[0].max_power_kw is None and facility[0].min_power_kw is None
    for window, expected in ((WindowName.MIN_15, ROLLUPS[3]), (WindowName.HOUR_1, ROLLUPS[4])):
        assert await store.rollups(scope=Scope.METER, scope_id="a-main", window=window,
                                   start=T0, end=T0 + timedelta(days=1), limit=10) == [expected]


async def test_minute_rollups_of_a_facility_cover_both_scopes(store: Store) -> None:
    await committed(store, CommitBatch(rollups=ROLLUPS))
    got = await store.minute_rollups("plant-a", T0, T0 + timedelta(minutes=1))
    assert sorted(got, key=lambda r: r.key) == sorted([ROLLUPS[0], ROLLUPS[2]],
                                                      key=lambda r: r.key)


async def test_a_replayed_batch_changes_nothing_and_a_rollup_upsert_replaces(
    store: Store,
) -> None:
    batch = CommitBatch(READINGS, ROLLUPS, [dead_letter(1), dead_letter(2)],
                        [Checkpoint("plant-a", None, 0)])
    await committed(store, batch)
    await store.commit(batch)
    assert len(await store.readings_since("plant-a", T0)) == 8
    assert len(await store.rollups(scope=Scope.METER, scope_id="a-main",
                                   window=WindowName.MIN_1, start=T0,
                                   end=T0 + timedelta(hours=1), limit=10)) == 2
    assert len(await store.dead_letters(limit=10)) == 2

    revised = ROLLUPS[0].model_copy(update={"avg_power_kw": 99.0, "sample_count": 3})
    await store.commit(CommitBatch(rollups=[revised]))
    got = await store.rollups(scope=Scope.METER, scope_id="a-main", window=WindowName.MIN_1,
                              start=T0, end=T0 + timedelta(minutes=1), limit=10)
    assert got == [revised]


async def test_dead_letters_newest_first_and_checkpoints_upserted(store: Store) -> None:
    await committed(store, CommitBatch(dead_letters=[dead_letter(n) for n in range(5)],
                                       checkpoints=[Checkpoint("plant-a", None, 1_000),
                                                    Checkpoint("plant-b", 60_000, 75_000)]))
    newest = await store.dead_letters(limit=3)
    assert newest == [dead_letter(4), dead_letter(3), dead_letter(2)]
    await store.commit(CommitBatch(checkpoints=[Checkpoint("plant-a", 120_000, 130_000)]))
    assert await store.checkpoints() == [
        Checkpoint("plant-a", 120_000, 130_000), Checkpoint("plant-b", 60_000, 75_000)]
