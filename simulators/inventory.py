"""The DR planner's inventory of a simulated building (``simulators.building``): the adapter of
``agents.dr.inventory.InventorySource`` for the demo fleet the in-process BMS commands."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from agents.dr.inventory import (
    ComfortLimits,
    DeferrableLoad,
    HvacZoneResource,
    Inventory,
    LightingGroupResource,
)
from simulators.building import BuildingModel, HvacZone


def _zone_kw(zone: HvacZone, offset_c: float, *, outdoor_temp_c: float, occupancy: float) -> float:
    trial = dataclasses.replace(zone, setpoint_offset_c=offset_c)  # never touch the building
    return trial.power_kw(outdoor_temp_c=outdoor_temp_c, occupancy=occupancy)


def inventory_from_building(
    building: BuildingModel,
    *,
    at: datetime | None = None,
    max_setpoint_offset_c: float = 2.0,
    setpoint_step_c: float = 0.5,
    hvac_comfort_cost_per_degc: float = 10.0,
    min_lighting_level_pct: float = 60.0,
    lighting_step_pct: float | None = 10.0,
    lighting_comfort_cost_per_pct: float = 1.0,
    deferrable_loads: Sequence[DeferrableLoad] = (),
) -> Inventory:
    """The planner's view of a simulated building (``simulators.building``), read-only.

    With ``at`` the estimates use the model's weather and occupancy at that instant: kW per degC
    is the shed of the first step from the current setpoint, capped by the shed at the largest
    offset, in whichever direction (cooling up, heating down) sheds more. Without ``at``: design
    conditions (the zone's slope, its compressor share of rated kW; lighting fully occupied).
    """
    zones: list[HvacZoneResource] = []
    occupancy = 1.0 if at is None else building.occupancy_fraction(at)
    for zone in building.zones:
        if at is None:
            kw_per_degc = zone.slope_kw_per_deg_c
            max_reduction_kw = zone.rated_kw * (1.0 - zone.fan_fraction)
            sign: Literal[1, -1] = 1
        else:
            temp_c = building.outdoor_temp_c(at)
            now_c = zone.setpoint_offset_c
            now_kw = _zone_kw(zone, now_c, outdoor_temp_c=temp_c, occupancy=occupancy)
            up, down = (
                now_kw - _zone_kw(zone, now_c + o, outdoor_temp_c=temp_c, occupancy=occupancy)
                for o in (max_setpoint_offset_c, -max_setpoint_offset_c)
            )
            sign = 1 if up >= down else -1
            first_step_kw = now_kw - _zone_kw(zone, now_c + sign * setpoint_step_c,
                                              outdoor_temp_c=temp_c, occupancy=occupancy)
            kw_per_degc = max(0.0, first_step_kw) / setpoint_step_c
            max_reduction_kw = max(0.0, up if sign == 1 else down)
        zones.append(
            HvacZoneResource(
                zone_id=zone.zone_id,
                max_setpoint_offset_c=max_setpoint_offset_c,
                kw_per_degc=kw_per_degc,
                comfort_cost_per_degc=hvac_comfort_cost_per_degc,
                setpoint_step_c=setpoint_step_c,
                max_reduction_kw=max_reduction_kw,
                offset_sign=sign,
                current_offset_c=zone.setpoint_offset_c,
            )
        )
    groups = [
        LightingGroupResource(
            group_id=g.group_id,
            kw_at_full=g.rated_kw * (1.0 - g.floor_fraction) * occupancy,
            min_level_pct=min_lighting_level_pct,
            comfort_cost_per_pct=lighting_comfort_cost_per_pct,
            dim_step_pct=lighting_step_pct,
            level_pct=g.level_pct,
        )
        for g in building.lighting_groups
    ]
    return Inventory(
        facility_id=building.facility_id,
        zones=tuple(zones),
        lighting_groups=tuple(groups),
        deferrable_loads=tuple(deferrable_loads),
    )


@dataclass
class SimulatorInventory:
    """The simulated buildings the in-process BMS commands (``fleet.models``)."""

    models: Mapping[str, BuildingModel]
    limits: ComfortLimits = field(default_factory=ComfortLimits)

    async def inventory(self, facility_id: str, *, at: datetime) -> Inventory:
        model = self.models.get(facility_id)
        if model is None:
            raise LookupError(f"the BMS has no building {facility_id!r}")
        lim = self.limits
        return inventory_from_building(
            model, at=at, max_setpoint_offset_c=lim.max_setpoint_offset_c,
            setpoint_step_c=lim.setpoint_step_c, min_lighting_level_pct=lim.min_lighting_pct,
            lighting_step_pct=lim.lighting_step_pct)
