"""A facility's controllable loads: what the planner may shed, how far, and at what comfort cost.

Comfort costs are penalties in one unit the facility chooses (e.g. "points"): per degC of
setpoint offset, per percentage point of dimming, per deferral. ``priority`` 1 is shed first;
a load of priority 2 is touched only as far as the priority-1 loads cannot cover the target,
and so on up (see docs/demand-response.md, "Planner").

Where an inventory comes from is an ``InventorySource`` (the port): the BMS's lists
(``agents.dr.bms_inventory``), within a facility manager's rules (``agents.dr.site_rules``), or
the simulated buildings (``simulators.inventory``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HvacZoneResource(_Frozen):
    """Shed by offsetting the setpoint in steps of ``setpoint_step_c``.

    ``offset_sign`` +1 raises the cooling setpoint (cooling weather), -1 lowers the heating
    setpoint (heating weather). ``max_reduction_kw`` caps the linear estimate: a zone cannot shed
    more than its compressor/heat-pump draw.
    """

    zone_id: str
    max_setpoint_offset_c: float = Field(ge=0)
    kw_per_degc: float = Field(ge=0)
    comfort_cost_per_degc: float = Field(ge=0)
    priority: int = Field(default=1, ge=1)
    setpoint_step_c: float = Field(default=0.5, gt=0)
    max_reduction_kw: float | None = Field(default=None, ge=0)
    offset_sign: Literal[1, -1] = 1
    current_offset_c: float = 0.0
    """The zone's offset when the event is planned: the shed is added to it and the release
    restores it."""

    @property
    def max_steps(self) -> int:
        return math.floor(self.max_setpoint_offset_c / self.setpoint_step_c + 1e-9)

    def reduction_kw(self, steps: int) -> float:
        linear = self.kw_per_degc * self.setpoint_step_c * steps
        return linear if self.max_reduction_kw is None else min(linear, self.max_reduction_kw)


class LightingGroupResource(_Frozen):
    """Shed by dimming from its level when planned, ``level_pct``, down to ``min_level_pct``.

    ``kw_at_full`` is the dimmable kW at 100 % (egress lighting that never dims excluded), so
    dimming from level C to level L sheds ``kw_at_full * (C - L) / 100``; the release restores
    C. ``dim_step_pct`` None: continuous.
    """

    group_id: str
    kw_at_full: float = Field(ge=0)
    min_level_pct: float = Field(ge=0, le=100)
    comfort_cost_per_pct: float = Field(ge=0)
    priority: int = Field(default=1, ge=1)
    dim_step_pct: float | None = Field(default=None, gt=0, le=100)
    level_pct: float = Field(default=100.0, ge=0, le=100)

    @property
    def max_dim_pct(self) -> float:
        return max(0.0, self.level_pct - self.min_level_pct)


class DeferrableLoad(_Frozen):
    """All or nothing: off for the whole event, allowed only if ``max_deferral_s`` covers it."""

    load_id: str
    kw: float = Field(ge=0)
    max_deferral_s: float = Field(ge=0)
    deferral_cost: float = Field(ge=0)
    priority: int = Field(default=1, ge=1)


class Inventory(_Frozen):
    facility_id: str
    zones: tuple[HvacZoneResource, ...] = ()
    lighting_groups: tuple[LightingGroupResource, ...] = ()
    deferrable_loads: tuple[DeferrableLoad, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Inventory:
        ids = [
            *(f"hvac:{z.zone_id}" for z in self.zones),
            *(f"lighting:{g.group_id}" for g in self.lighting_groups),
            *(f"deferrable:{d.load_id}" for d in self.deferrable_loads),
        ]
        if len(ids) != len(set(ids)):
            raise ValueError("zone, lighting group and deferrable load ids must be unique")
        return self


class InventorySource(Protocol):
    async def inventory(self, facility_id: str, *, at: datetime) -> Inventory: ...


@dataclass(frozen=True)
class ComfortLimits:
    max_setpoint_offset_c: float = 4.0
    min_lighting_pct: float = 30.0
    setpoint_step_c: float = 0.5
    lighting_step_pct: float = 10.0
