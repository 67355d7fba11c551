"""The BMS command a planned action becomes, at the event's start (apply) or after its end
(release): deterministic ids, so a step done twice sends nothing twice."""

from __future__ import annotations

from datetime import datetime

from agents.dr.plan import PlannedAction
from schemas.dr import BmsCommandRecord, CommandKind, CommandPhase, DrEvent, command_uuid


def command_for(event: DrEvent, action: PlannedAction, phase: CommandPhase,
                now: datetime) -> BmsCommandRecord | None:
    """The BMS command of a plan action (apply) or of undoing it (release); None for an
    action no BMS operation carries out (deferring a load)."""
    kind: CommandKind
    setting: float | None
    if action.kind == "hvac_setpoint":
        kind, setting = "zone_setpoint_offset", action.setpoint_offset_c
        restore = action.restore_setpoint_offset_c or 0.0
    elif action.kind == "lighting_dim":
        kind, setting = "lighting_level", action.dim_level_pct
        restore = 100.0 if action.restore_level_pct is None else action.restore_level_pct
    else:
        return None
    value = restore if setting is None else setting  # 0 % is a level, not a missing one
    source = f"{event.utility_id}/{event.event_id}" if event.event_id else "api"
    why = (f"DR event {event.id} ({source}): {action.reason}" if phase == "apply" else
           f"DR event {event.id} ({source}): release stage {action.release_stage} "
           f"after the event")
    return BmsCommandRecord(
        command_id=command_uuid(event.id, phase, kind, action.target_id), dr_event_id=event.id,
        facility_id=event.facility_id, kind=kind, target_id=action.target_id,
        value=value if phase == "apply" else restore, phase=phase,
        release_stage=None if phase == "apply" else action.release_stage, why=why,
        trace_id=event.trace_id, requested_at=now,
        restore_value=restore if phase == "apply" else None)
