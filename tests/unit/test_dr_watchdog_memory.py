"""The DR watchdog remembers the events it settled (past their deadline, nothing shed) only
while they are among the ``limit`` it reads per pass: over a long life its memory stays
bounded, and a settled event's audit trail is still read once, not at every pass (issue 13).
The embedded SQLite store, as unit tests use it; nothing is shed, so the BMS is never called."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.bms_command_agent import BmsCommandExecutor
from agents.dr_watchdog import DrWatchdog
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from simulators.bms.local import LocalBms
from simulators.bms.service import BmsService
from simulators.fleet import build_fleet

pytestmark = pytest.mark.unit

FLEET = build_fleet(facilities=1, meters_per_facility=1, seed=13)
FACILITY = FLEET.facilities[0].facility_id
FIRST = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
LIMIT = 5


class CountingStore(SqliteStore):
    """Counts the audit-trail reads per event: the watchdog's work for it."""

    audit_reads: Counter[str]

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        self.audit_reads[dr_event_id] += 1
        return await super().bms_commands(dr_event_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(tmp_path / "sems.db", metrics=Metrics())
    s.audit_reads = Counter()
    await s.open()
    await s.upsert_facilities(list(FLEET.facilities))
    yield s
    await s.close()


async def test_settled_events_are_remembered_only_while_the_watchdog_reads_them(
    store: CountingStore,
) -> None:
    now = [FIRST]
    executor = BmsCommandExecutor(store, store.metrics, lambda: now[0],
                                  bms=LocalBms(BmsService(FLEET.models)))
    watchdog = DrWatchdog(store, executor, store.metrics, lambda: now[0], limit=LIMIT)
    days = 30
    held = []
    for day in range(days):  # an event a day, each checked at every pass after its deadline
        start = FIRST + timedelta(days=day)
        await store.insert_dr_event(DrEvent(
            id=str(uuid.uuid4()), facility_id=FACILITY, source="api", event_start=start,
            event_end=start + timedelta(minutes=30), target_reduction_kw=10.0,
            status="completed", created_at=start, updated_at=start))
        now[0] = start + timedelta(hours=6)  # past end + releases + grace
        for _ in range(3):  # several passes a day
            assert await watchdog.check() == 0
            held.append(len(watchdog._settled))
    assert max(held) == LIMIT  # unbounded, it would hold all 30
    assert len(store.audit_reads) == days  # every event was checked ...
    assert set(store.audit_reads.values()) == {1}  # ... once: settled, it is not read again
