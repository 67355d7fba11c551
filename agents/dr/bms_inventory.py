"""An inventory from a BMS's own zone and lighting lists, sized by design rules: what the
planner may shed when the BMS is a real one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agents.dr.inventory import ComfortLimits, HvacZoneResource, Inventory, LightingGroupResource
from tables.ports.bms import BmsController

DESIGN_FAN_FRACTION = 0.12  # the share of a zone's rated kW that is fans, not compressor
DESIGN_GAP_C = 16.0  # a zone reaches rated kW at this many degC outside its dead band
DESIGN_FLOOR_FRACTION = 0.05  # egress lighting that is never dimmed


@dataclass
class BmsInventory:
    """Zones and lighting groups as a BMS lists them, sized by design rules (a zone's
    compressor kW spread over a 16 degC gap; a group's dimmable kW at 100 %), from where each
    is now (its offset, its level), which the release restores. Cooling is assumed: a positive
    offset sheds (the BMS's zone list says nothing of the mode)."""

    bms: BmsController
    limits: ComfortLimits = field(default_factory=ComfortLimits)

    async def inventory(self, facility_id: str, *, at: datetime) -> Inventory:
        lim = self.limits
        zones = tuple(
            HvacZoneResource(
                zone_id=z.zone_id,
                # the BMS accepts offsets within +-max_offset_c, from wherever the zone is
                max_setpoint_offset_c=max(0.0, min(lim.max_setpoint_offset_c,
                                                   z.max_offset_c - z.setpoint_offset_c)),
                setpoint_step_c=lim.setpoint_step_c,
                kw_per_degc=z.rated_kw * (1 - DESIGN_FAN_FRACTION) / DESIGN_GAP_C,
                comfort_cost_per_degc=10.0, current_offset_c=z.setpoint_offset_c)
            for z in await self.bms.list_zones(facility_id))
        groups = tuple(
            LightingGroupResource(
                group_id=g.group_id,
                kw_at_full=g.rated_kw * (1 - DESIGN_FLOOR_FRACTION),
                min_level_pct=lim.min_lighting_pct, comfort_cost_per_pct=1.0,
                dim_step_pct=lim.lighting_step_pct, level_pct=g.level_pct)
            for g in await self.bms.list_lighting_groups(facility_id))
        return Inventory(facility_id=facility_id, zones=zones, lighting_groups=groups)
