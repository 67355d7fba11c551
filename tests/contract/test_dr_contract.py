"""DR events and the BMS command audit trail: the same behaviour in SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.dr import BmsCommandRecord, DrEvent, command_uuid, webhook_event_uuid
from schemas.metadata import Facility
from tables.ports import Store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _event(facility_id: str, start: datetime, **changes: object) -> DrEvent:
    values: dict[str, object] = {
        "id": webhook_event_uuid("gridco", "E-1", facility_id), "event_id": "E-1",
        "utility_id": "gridco", "facility_id": facility_id, "source": "webhook",
        "event_start": start, "event_end": start + timedelta(minutes=30),
        "target_reduction_percentage": 20.0, "trace_id": "t-1", "created_at": T0,
        "updated_at": T0}
    values.update(changes)
    return DrEvent.model_validate(values)


async def _facilities(store: Store) -> None:
    await store.upsert_facilities([
        Facility(facility_id=f, name=f, contract_demand_kw=100) for f in ("fac-a", "fac-b")])


async def test_events_insert_once_update_and_list(store: Store) -> None:
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


async def test_bms_commands_recorded_once_and_updated(store: Store) -> None:
    await _facilities(store)
    event = _event("fac-a", T0)
    await store.insert_dr_event(event)
    first = BmsCommandRecord(
        command_id=command_uuid(event.id, "apply", "zone_setpoint_offset", "zone-1"),
        dr_event_id=event.id, facility_id="fac-a", kind="zone_setpoint_offset",
        target_id="zone-1", value=2.0, phase="apply", why="event E-1: raise cooling setpoint",
        trace_id="t-1", requested_at=T0)
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
