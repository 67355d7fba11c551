"""DR events and the BMS command audit trail: the same behaviour in SQLite and PostgreSQL
(alone and in the production store)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.dr import BmsCommandRecord, DrEvent, DrStatus, command_uuid, webhook_event_uuid
from schemas.metadata import Facility
from tables.ports.dr import DrEventOverlaps
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _event(facility_id: str, start: datetime, **changes: object) -> DrEvent:
    values: dict[str, object] = {
        "id": webhook_event_uuid("gridco", "E-1", facility_id), "event_id": "E-1",
        "utility_id": "gridco", "facility_id": facility_id, "source": "webhook",
        "event_start": start, "event_end": start + timedelta(minutes=30),
        "target_reduction_percentage": 20.0, "trace_id": "t-1", "created_at": T0,
        "updated_at": T0}
    values.update(changes)
    return DrEvent.model_validate(values)


async def _facilities(store: RelationalStore) -> None:
    await store.upsert_facilities([
        Facility(facility_id=f, name=f, contract_demand_kw=100) for f in ("fac-a", "fac-b")])


async def test_events_insert_once_update_and_list(store: RelationalStore) -> None:
    await _facilities(store)
    a = _event("fac-a", T0)
    b = _event("fac-b", T0 + timedelta(hours=1), id=str(uuid.uuid4()), event_id=None,
               utility_id=None, source="api", target_reduction_kw=50.0,
               target_reduction_percentage=None)
    assert await store.insert_dr_event(a) is True
    assert await store.insert_dr_event(b) is True
    # a replay of the same notification creates nothing and changes nothing
    assert await store.insert_dr_event(a.model_copy(update={"status": "failed"})) is False
    assert await store.dr_event(a.id) == a
    assert await store.dr_event(str(uuid.uuid4())) is None
    assert await store.dr_event("not-a-uuid") is None
    # newest start first; filters by facility and status
    assert [e.id for e in await store.dr_events()] == [b.id, a.id]
    assert [e.id for e in await store.dr_events(facility_id="fac-a")] == [a.id]
    assert await store.dr_events(statuses=("active",)) == []

    await store.add_dr_event_failure(a.id, "zone-1: fault [injected]")
    updated = a.model_copy(update={
        "status": "active", "target_reduction_kw": 61.5, "baseline": {"method": "forecast"},
        "plan": {"actions": []}, "release_stages_sent": 1, "updated_at": T0 + timedelta(1)})
    await store.update_dr_event(updated)  # keeps the failure appended meanwhile
    await store.add_dr_event_failure(a.id, "floor-2: rejected")
    got = await store.dr_event(a.id)
    assert got is not None
    assert got.failures == ("zone-1: fault [injected]", "floor-2: rejected")
    assert got.model_copy(update={"failures": ()}) == updated
    assert [e.id for e in await store.dr_events(statuses=("active", "scheduled"))] == [
        b.id, a.id]


async def test_events_soonest_first_and_latest_over_first(store: RelationalStore) -> None:
    """The DR agent reads open events soonest first, so a page full of future events never
    hides the active one; the watchdog reads those over by a time, the latest over first."""
    await _facilities(store)
    events = [_event("fac-a", T0 + i * HOUR, id=str(uuid.uuid4()), event_id=f"E-{i}")
              for i in range(5)]
    for e in events:
        assert await store.insert_dr_event(e)
    ids = [e.id for e in events]
    assert [e.id for e in await store.dr_events(limit=2)] == ids[:2:-1][:2]
    assert [e.id for e in await store.dr_events(order="start_asc", limit=2)] == ids[:2]
    over = await store.dr_events(order="end_desc", ended_before=events[2].event_end, limit=2)
    assert [e.id for e in over] == [ids[2], ids[1]]
    assert await store.dr_events(ended_before=T0) == []


async def test_bms_commands_recorded_once_and_updated(store: RelationalStore) -> None:
    await _facilities(store)
    event = _event("fac-a", T0)
    await store.insert_dr_event(event)
    first = BmsCommandRecord(
        command_id=command_uuid(event.id, "apply", "zone_setpoint_offset", "zone-1"),
        dr_event_id=event.id, facility_id="fac-a", kind="zone_setpoint_offset",
        target_id="zone-1", value=2.0, phase="apply", why="event E-1: raise cooling setpoint",
        trace_id="t-1", requested_at=T0,
        restore_value=0.5)  # what the watchdog restores: kept by every store
    second = first.model_copy(update={
        "command_id": command_uuid(event.id, "release", "zone_setpoint_offset", "zone-1"),
        "value": 0.0, "phase": "release", "release_stage": 0,
        "requested_at": T0 + timedelta(minutes=30)})
    assert await store.record_bms_command(second) is True
    assert await store.record_bms_command(first) is True
    assert await store.record_bms_command(first) is False  # a replay finds it
    done = first.model_copy(update={"sent_at": T0, "result": "ok", "applied_at": T0,
                                    "released_at": T0 + timedelta(minutes=30)})
    await store.update_bms_command(done)
    assert await store.bms_command(first.command_id) == done
    assert await store.bms_command(str(uuid.uuid4())) is None
    assert await store.bms_commands(event.id) == [done, second]  # in request order
    assert await store.bms_commands(str(uuid.uuid4())) == []


def _api_event(facility_id: str, start: datetime, minutes: int = 60,
               **changes: object) -> DrEvent:
    return _event(facility_id, start, **{
        "id": str(uuid.uuid4()), "event_id": None, "utility_id": None, "source": "api",
        "event_end": start + timedelta(minutes=minutes), "target_reduction_kw": 10.0,
        "target_reduction_percentage": None, **changes})


async def test_create_refuses_overlaps_atomically_and_replays_by_id(store: RelationalStore) -> None:
    await _facilities(store)
    kept = _api_event("fac-a", T0)  # 15:00-16:00
    assert (await store.create_dr_events([kept])).inserted == (kept,)
    # 15:30-16:30 at fac-a, with a new event at fac-b: refused whole, fac-b gets nothing
    late = [_api_event("fac-a", T0 + timedelta(minutes=30)),
            _api_event("fac-b", T0 + timedelta(minutes=30))]
    refused = await store.create_dr_events(late)
    assert refused.conflicts == (kept,) and refused.inserted == ()
    assert await store.dr_events(facility_id="fac-b") == []
    # [start, end): 16:00-17:00 and 14:00-15:00 touch it and are accepted
    after, before = _api_event("fac-a", T0 + HOUR), _api_event("fac-a", T0 - HOUR)
    assert (await store.create_dr_events([after, before])).inserted == (after, before)
    # a replay: the stored event (its status now), nothing changed, not checked for overlaps
    active = kept.model_copy(update={"status": "active"})
    await store.update_dr_event(active)
    again = await store.create_dr_events([kept.model_copy(update={"target_reduction_kw": 99})])
    assert again.replayed == {kept.id} and again.conflicts == () and again.inserted == ()
    assert again.events == (active,)
    assert await store.insert_dr_event(kept) is False
    with pytest.raises(DrEventOverlaps) as overlaps:
        await store.insert_dr_event(_api_event("fac-a", T0 + timedelta(minutes=59), 1))
    assert overlaps.value.conflicts == (active,)
    # two new ones of one facility that overlap each other: neither is stored
    pair = [_api_event("fac-b", T0), _api_event("fac-b", T0 + timedelta(minutes=10))]
    assert (await store.create_dr_events(pair)).conflicts == (pair[0],)
    assert await store.dr_events(facility_id="fac-b") == []


@pytest.mark.parametrize("status", ["scheduled", "active", "completed"])
async def test_every_status_but_failed_holds_its_window(store: RelationalStore,
                                                       status: DrStatus) -> None:
    await _facilities(store)
    held = _api_event("fac-a", T0, status=status)
    await store.insert_dr_event(held)
    assert (await store.create_dr_events([_api_event("fac-a", T0)])).conflicts == (held,)
    # once it fails it sheds nothing: its window is free again
    await store.update_dr_event(held.model_copy(update={"status": "failed"}))
    retry = _api_event("fac-a", T0)
    assert (await store.create_dr_events([retry])).inserted == (retry,)
    # a new event that is failed already is stored without a check
    dead = _api_event("fac-a", T0, status="failed")
    assert (await store.create_dr_events([dead])).inserted == (dead,)


async def test_concurrent_creations_make_one_event(store: RelationalStore) -> None:
    """20 different ids for one window at once, and 10 deliveries of one id: one event each."""
    await _facilities(store)
    rivals = [_api_event("fac-a", T0) for _ in range(20)]
    outcomes = await asyncio.gather(*(store.create_dr_events([e]) for e in rivals))
    assert sum(len(o.inserted) for o in outcomes) == 1
    [winner] = [e for o in outcomes for e in o.inserted]
    assert all(o.conflicts == (winner,) for o in outcomes if not o.inserted)
    same = [_event("fac-b", T0) for _ in range(10)]  # one webhook event id, ten deliveries
    outcomes = await asyncio.gather(*(store.create_dr_events([e]) for e in same))
    assert [len(o.inserted) for o in outcomes].count(1) == 1
    assert all(o.replayed == {same[0].id} for o in outcomes if not o.inserted)
    assert sorted(e.id for e in await store.dr_events()) == sorted([same[0].id, winner.id])
