"""A facility manager's rules for demand response (``SEMS_DR_SITES``): loads never shed,
limits only tightened, priorities; applied on top of any inventory source."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agents.dr.inventory import (
    ComfortLimits,
    HvacZoneResource,
    Inventory,
    InventorySource,
    LightingGroupResource,
)


class _Closed(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZoneRule(_Closed):
    """A facility manager's rule for one HVAC zone."""

    exclude: bool = Field(default=False, description="never shed (a server room, a lab)")
    max_setpoint_offset_c: float | None = Field(default=None, ge=0, le=10)
    comfort_cost_per_degc: float | None = Field(default=None, ge=0)
    priority: int | None = Field(default=None, ge=1, description="1 is shed first")


class LightingRule(_Closed):
    """A facility manager's rule for one lighting group."""

    exclude: bool = False
    min_level_pct: float | None = Field(default=None, ge=0, le=100)
    comfort_cost_per_pct: float | None = Field(default=None, ge=0)
    priority: int | None = Field(default=None, ge=1)


L = TypeVar("L", HvacZoneResource, LightingGroupResource)
R = TypeVar("R", ZoneRule, LightingRule)


class SiteRules(_Closed):
    """What one facility allows a DR plan to do, beyond the global comfort limits."""

    max_setpoint_offset_c: float | None = Field(default=None, ge=0, le=10)
    min_lighting_pct: float | None = Field(default=None, ge=0, le=100)
    zones: dict[str, ZoneRule] = {}
    lighting_groups: dict[str, LightingRule] = {}

    def limits(self, base: ComfortLimits) -> ComfortLimits:
        """The global limits, tightened by the site's."""
        return replace(
            base,
            max_setpoint_offset_c=min(base.max_setpoint_offset_c, math.inf
                                      if self.max_setpoint_offset_c is None
                                      else self.max_setpoint_offset_c),
            min_lighting_pct=max(base.min_lighting_pct, self.min_lighting_pct or 0.0))

    def apply(self, inventory: Inventory) -> Inventory:
        """The inventory within these rules: excluded loads left out, limits only tightened
        (a rule never lets a load go further than the BMS or the global limits allow)."""
        zones = _ruled(inventory.zones, self.zones, lambda z: z.zone_id, lambda z, r: _set(
            max_setpoint_offset_c=None if r.max_setpoint_offset_c is None
            else min(z.max_setpoint_offset_c, r.max_setpoint_offset_c),
            comfort_cost_per_degc=r.comfort_cost_per_degc, priority=r.priority))
        groups = _ruled(inventory.lighting_groups, self.lighting_groups, lambda g: g.group_id,
                        lambda g, r: _set(
            min_level_pct=None if r.min_level_pct is None
            else max(g.min_level_pct, r.min_level_pct),
            comfort_cost_per_pct=r.comfort_cost_per_pct, priority=r.priority))
        return inventory.model_copy(update={"zones": zones, "lighting_groups": groups})


def _ruled(loads: tuple[L, ...], rules: Mapping[str, R], key: Callable[[L], str],
           tightened: Callable[[L, R], dict[str, object]]) -> tuple[L, ...]:
    """The loads their rule does not exclude, each with what its rule tightens."""
    out = []
    for load in loads:
        rule = rules.get(key(load))
        if rule is None:
            out.append(load)
        elif not rule.exclude:
            out.append(load.model_copy(update=tightened(load, rule)))
    return tuple(out)


def _set(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


SITES = TypeAdapter(dict[str, SiteRules])


def load_site_rules(path: Path) -> dict[str, SiteRules]:
    """``SEMS_DR_SITES``: a JSON object of facility id -> ``SiteRules``. Refused whole, with
    where and why, when anything in it is unknown or out of range."""
    try:
        return SITES.validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


@dataclass
class RuledInventory:
    """An inventory source within each facility's rules (``SEMS_DR_SITES``)."""

    source: Callable[[ComfortLimits], InventorySource]
    base: ComfortLimits
    sites: Mapping[str, SiteRules]

    async def inventory(self, facility_id: str, *, at: datetime) -> Inventory:
        rules = self.sites.get(facility_id, SiteRules())
        found = await self.source(rules.limits(self.base)).inventory(facility_id, at=at)
        return rules.apply(found)
