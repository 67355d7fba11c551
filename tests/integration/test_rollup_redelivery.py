"""After a crash, MQTT redelivers what SEMS had not acknowledged, behind readings that already
moved the windows on. A redelivered copy whose window has closed is a duplicate when its
original is stored or is in the same batch, and a late dead letter only when it is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.rollup_service import RollupService
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.reading import SensorReading
from tables.rollups import RollupAggregator, WindowSettings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FACILITY = Facility(facility_id="plant-a", name="A", contract_demand_kw=100)
METER = Meter(meter_id="a-main", facility_id="plant-a", meter_type=MeterType.MAIN)


def reading(offset_s: int, kw: float = 10.0) -> SensorReading:
    return SensorReading(facility_id="plant-a", meter_id="a-main", meter_type=MeterType.MAIN,
                         timestamp=T0 + timedelta(seconds=offset_s), active_power_kw=kw,
                         reactive_power_kvar=1, voltage_v=400, frequency_hz=50)


async def test_a_redelivered_copy_behind_newer_readings_is_a_duplicate_not_a_dead_letter(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    await store.upsert_facilities([FACILITY])
    await store.upsert_meters([METER])
    aggregator = RollupAggregator(Registry.build([FACILITY], [METER]),
                                  WindowSettings(30_000, 3_600_000))
    service = RollupService(aggregator, store=store, metrics=store.metrics, clock=lambda: T0)
    three_minutes = [reading(s) for s in range(0, 180, 15)]
    # One batch: three minutes, then the copies of the first minute's readings, redelivered
    # after the 12:00 window closed; then a later batch with another copy of one of them.
    await service.process([*three_minutes, *three_minutes[:4]])
    await service.process([three_minutes[1]])
    # And a reading that never arrived before, for that closed minute: truly late.
    await service.process([reading(20)])
    await service.close()

    dead = await store.dead_letters(limit=10)
    assert [d.reason.value for d in dead] == ["late"]
    assert '"2026-03-01T12:00:20Z"' in dead[0].raw_payload
    assert await store.readings_since("plant-a", T0) == three_minutes
    assert store.metrics.readings_duplicate._value.get() == 5
    await store.close()
