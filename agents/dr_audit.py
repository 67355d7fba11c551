"""What the BMS audit trail says about a facility's loads, read without the plan or the
planner: which loads an event may still hold shed, what each was before, and the release that
puts it back. The DR agent (an event that fails while shed; planning from the loads' state)
and the watchdog (``agents/dr_watchdog.py``) both rely on it.

A load's pre-event setting is ``BmsCommandRecord.restore_value``, written on the apply command
when it is requested; a record without one (written before the field existed, or by a store
that does not keep it) is put back to the neutral setting: offset 0 degC, lighting 100 %.
"""

from __future__ import annotations

from datetime import datetime

from agents.dr.inventory import Inventory
from schemas.dr import BmsCommandRecord, CommandKind, DrEvent, command_uuid
from tables.ports.dr import DrStore

NEUTRAL: dict[CommandKind, float] = {"zone_setpoint_offset": 0.0, "lighting_level": 100.0}
"""What a load is put back to when its apply command does not say what it was before."""
MAYBE_APPLIED = frozenset({"timeout", "protocol"})
"""Failures after which the BMS may have applied the command (docs/bms.md)."""


def restore_value_of(apply: BmsCommandRecord) -> float:
    return NEUTRAL[apply.kind] if apply.restore_value is None else apply.restore_value


def executed_after(release: BmsCommandRecord, apply: BmsCommandRecord) -> bool:
    """Whether ``release`` came after ``apply``: by the BMS's clock when it confirmed both, by
    SEMS's (sent, else requested) otherwise. A release that came first undoes nothing."""
    if release.applied_at is not None and apply.applied_at is not None:
        return release.applied_at >= apply.applied_at
    return ((release.sent_at or release.requested_at)
            >= (apply.sent_at or apply.requested_at))


def shed_loads(records: list[BmsCommandRecord]) -> list[BmsCommandRecord]:
    """The apply commands of one event that may have shed a load no release has undone yet:
    the fail-safe reading (a pending or timed-out apply may have been applied), where only a
    successful release executed after the apply undoes it."""
    releases = [r for r in records if r.phase == "release" and r.result == "ok"]
    return [a for a in records
            if a.phase == "apply" and a.released_at is None
            and (a.result in ("ok", "pending") or a.failure in MAYBE_APPLIED)
            and not any(r.kind == a.kind and r.target_id == a.target_id
                        and executed_after(r, a) for r in releases)]


def release_of(apply: BmsCommandRecord, e: DrEvent, now: datetime) -> BmsCommandRecord:
    """The release of an apply command from the audit trail alone (an event that failed
    while shed): the release id the plan's own release would have, so it is sent once."""
    return BmsCommandRecord(
        command_id=command_uuid(e.id, "release", apply.kind, apply.target_id),
        dr_event_id=e.id, facility_id=e.facility_id, kind=apply.kind,
        target_id=apply.target_id, value=restore_value_of(apply), phase="release",
        why=f"DR event {e.id} failed: its loads are released at once", trace_id=e.trace_id,
        requested_at=now)


async def held_by_others(store: DrStore, e: DrEvent, now: datetime, *,
                         recent: int = 20) -> dict[tuple[str, str], float]:
    """(kind, target) -> pre-event setting, for the loads of ``e``'s facility that another
    event (of the ``recent`` latest) may still hold shed: a release not yet executed when this
    event's commands go out must not become what this event's release restores."""
    held: dict[tuple[str, str], float] = {}
    # The events that can hold a load: the active ones and the latest over (whose release may
    # have failed), not the latest to start, which may all be in the future.
    active = await store.dr_events(facility_id=e.facility_id, statuses=("active",),
                                   order="start_asc")
    over = await store.dr_events(facility_id=e.facility_id, order="end_desc",
                                 ended_before=now, limit=recent)
    for other in {o.id: o for o in (*active, *over)}.values():
        if other.id != e.id:
            for apply in shed_loads(await store.bms_commands(other.id)):
                held.setdefault((apply.kind, apply.target_id), restore_value_of(apply))
    return held


def as_before(inventory: Inventory, held: dict[tuple[str, str], float]) -> Inventory:
    """The inventory with each held load at its pre-event setting (what the plan starts from
    and its release restores)."""
    if not held:
        return inventory
    zones = tuple(z if (v := held.get(("zone_setpoint_offset", z.zone_id))) is None
                  else z.model_copy(update={"current_offset_c": v})
                  for z in inventory.zones)
    groups = tuple(g if (v := held.get(("lighting_level", g.group_id))) is None
                   else g.model_copy(update={"level_pct": v})
                   for g in inventory.lighting_groups)
    return inventory.model_copy(update={"zones": zones, "lighting_groups": groups})
