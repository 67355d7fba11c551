"""Each facility's own DR rules (``SEMS_DR_SITES``): loads never shed, tighter limits,
priorities and comfort costs reach the plan; they only ever tighten; a mistake in the file is
refused with where and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.dr.inventory import ComfortLimits
from agents.dr.planner import plan_reduction
from agents.dr.site_rules import RuledInventory, SiteRules, load_site_rules
from simulators.fleet import build_fleet
from simulators.inventory import SimulatorInventory

pytestmark = pytest.mark.unit

AT = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)  # 14:00 in New York, a Wednesday
RULES = """{
  "fac-001": {
    "min_lighting_pct": 50,
    "zones": {"zone-3": {"exclude": true},
              "zone-1": {"max_setpoint_offset_c": 1.0, "priority": 2,
                         "comfort_cost_per_degc": 25}},
    "lighting_groups": {"floor-1": {"min_level_pct": 80}, "floor-2": {"min_level_pct": 10}}
  }
}"""


async def test_a_facilitys_rules_shape_its_inventory_and_plan(tmp_path: Path) -> None:
    path = tmp_path / "sites.json"
    path.write_text(RULES)
    fleet = build_fleet(facilities=2, meters_per_facility=4, seed=42)
    base = ComfortLimits(max_setpoint_offset_c=4.0, min_lighting_pct=30.0)
    source = RuledInventory(lambda limits: SimulatorInventory(fleet.models, limits), base,
                            load_site_rules(path))
    inv = await source.inventory("fac-001", at=AT)
    zones = {z.zone_id: z for z in inv.zones}
    assert set(zones) == {"zone-1", "zone-2", "zone-4"}  # zone-3 is never shed
    assert (zones["zone-1"].max_setpoint_offset_c, zones["zone-1"].priority,
            zones["zone-1"].comfort_cost_per_degc) == (1.0, 2, 25.0)
    assert zones["zone-2"].max_setpoint_offset_c == 4.0 and zones["zone-2"].priority == 1
    groups = {g.group_id: g.min_level_pct for g in inv.lighting_groups}
    # The site's 50 % everywhere, 80 % for floor-1; floor-2's 10 % cannot loosen the 50 %.
    assert groups == {"floor-1": 80.0, "floor-2": 50.0, "floor-3": 50.0, "floor-4": 50.0}

    plan = plan_reduction(inv, target_reduction_kw=10_000.0,  # more than there is: shed all
                          forecast_upper_kw=[500.0], event_start=AT,
                          event_end=AT + timedelta(hours=1))
    shed = {a.target_id: a for a in plan.actions}
    assert "zone-3" not in shed
    assert abs(shed["zone-1"].setpoint_offset_c or 0.0) <= 1.0
    assert all((shed[g].dim_level_pct or 0.0) >= floor for g, floor in groups.items()
               if g in shed)

    other = await source.inventory("fac-002", at=AT)  # no rules: the global limits
    assert {g.min_level_pct for g in other.lighting_groups} == {30.0}
    assert len(other.zones) == len(fleet.models["fac-002"].zones)


async def test_rules_never_loosen_a_limit() -> None:
    rules = SiteRules.model_validate({"max_setpoint_offset_c": 6.0, "min_lighting_pct": 10,
                                      "zones": {"zone-1": {"max_setpoint_offset_c": 9.0}}})
    assert rules.limits(ComfortLimits(max_setpoint_offset_c=2.0, min_lighting_pct=30.0)) == (
        ComfortLimits(max_setpoint_offset_c=2.0, min_lighting_pct=30.0))
    no_hvac = SiteRules(max_setpoint_offset_c=0.0)  # this site's zones are never moved
    assert no_hvac.limits(ComfortLimits()).max_setpoint_offset_c == 0.0
    fleet = build_fleet(facilities=1, meters_per_facility=4, seed=42)
    inv = SimulatorInventory(fleet.models, ComfortLimits(max_setpoint_offset_c=2.0))
    ruled = rules.apply(await inv.inventory("fac-001", at=AT))
    assert {z.max_setpoint_offset_c for z in ruled.zones} == {2.0}


@pytest.mark.parametrize(("text", "where"), [
    ('{"fac-001": {"zones": {"zone-1": {"priority": 0}}}}', "priority"),
    ('{"fac-001": {"min_lighting_pct": 120}}', "min_lighting_pct"),
    ('{"fac-001": {"zone": {}}}', "zone"),  # a typo is not ignored
    ('{"fac-001": ', "EOF"),
])
def test_a_mistake_in_the_file_is_refused_with_where(tmp_path: Path, text: str,
                                                      where: str) -> None:
    path = tmp_path / "sites.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=where) as refused:
        load_site_rules(path)
    assert str(path) in str(refused.value)
