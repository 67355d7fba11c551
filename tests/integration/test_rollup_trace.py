"""A batch's trace id follows it into the committer and the store connector's log records,
so on-call can tie a store failure to the batch (and, in the kafka runtime, to the ingest
batch that produced it)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from agents.rollup_service import RollupService
from connectors.sqlite import SqliteStore
from core.logs import TraceIdFilter, trace_id_var
from core.metrics import Metrics
from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.reading import SensorReading
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tables.rollups import RollupAggregator, WindowSettings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FlakyStore(SqliteStore):
    """Refuses each batch's first commit, as a store that keeps dropping connections."""

    refused: ClassVar[set[int]] = set()

    async def commit(self, batch: CommitBatch) -> None:
        if id(batch) not in self.refused:
            self.refused.add(id(batch))
            raise StoreUnavailable("connection reset")
        await super().commit(batch)


async def test_the_committers_log_records_carry_the_batchs_trace_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry.build(
        [Facility(facility_id="plant-a", name="A", contract_demand_kw=100)],
        [Meter(meter_id="a-main", facility_id="plant-a", meter_type=MeterType.MAIN)])
    store = FlakyStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    service = RollupService(RollupAggregator(registry, WindowSettings(30_000, 60_000)),
                            store=store, metrics=store.metrics, clock=lambda: T0,
                            retry_delay_s=0.01)
    def reading(second: int) -> SensorReading:
        return SensorReading(facility_id="plant-a", meter_id="a-main", meter_type=MeterType.MAIN,
                             timestamp=T0.replace(second=second), active_power_kw=10,
                             reactive_power_kvar=1, voltage_v=400, frequency_hz=50)

    caplog.handler.addFilter(TraceIdFilter())  # as configure_logging does on its handler
    with caplog.at_level(logging.ERROR, logger="agents.rollup"):
        # The committer task starts within the first batch's context; the second batch's
        # records must still carry the second batch's id.
        for trace_id, second in (("batch-1", 0), ("batch-2", 15)):
            token = trace_id_var.set(trace_id)
            await service.process([reading(second)])
            trace_id_var.reset(token)
        await service.flush()
    await service.close()
    await store.close()
    failures = [getattr(r, "trace_id", None) for r in caplog.records
                if "store write failed" in r.getMessage()]
    assert failures == ["batch-1", "batch-2"]
