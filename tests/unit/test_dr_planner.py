"""The reduction planner on small inventories whose optimum is worked out by hand.

The standard inventory (comfort cost per kW in brackets):
  HVAC z1: 10 kW/degC, 0.5 degC steps up to 2 degC -> 5 kW and cost 2 a step (0.4/kW), 20 kW max
  lighting l1: 20 kW dimmable, 10 % steps down to 50 % -> 2 kW and cost 5 a step (2.5/kW), 10 kW
  deferrable ev: 15 kW, cost 30 (2/kW), may wait 2 h
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from agents.dr.inventory import DeferrableLoad, HvacZoneResource, Inventory, LightingGroupResource
from agents.dr.plan import Plan, release_schedule
from agents.dr.planner import plan_reduction
from simulators.building import BuildingModel, Climate
from simulators.inventory import inventory_from_building

pytestmark = pytest.mark.unit

START = datetime(2026, 7, 15, 21, tzinfo=UTC)
END = START + timedelta(hours=2)
UPPER = [600.0, 620.0]


def inventory(
    *, hvac_priority: int = 1, lighting_priority: int = 1, ev_priority: int = 1,
    ev_wait_s: float = 7200.0, hvac_cap_kw: float | None = None, hvac_max_c: float = 2.0,
) -> Inventory:
    return Inventory(
        facility_id="fac-001",
        zones=(HvacZoneResource(zone_id="z1", max_setpoint_offset_c=hvac_max_c, kw_per_degc=10.0,
                                comfort_cost_per_degc=4.0, priority=hvac_priority,
                                max_reduction_kw=hvac_cap_kw),),
        lighting_groups=(LightingGroupResource(group_id="l1", kw_at_full=20.0, min_level_pct=50.0,
                                               comfort_cost_per_pct=0.5, dim_step_pct=10.0,
                                               priority=lighting_priority),),
        deferrable_loads=(DeferrableLoad(load_id="ev", kw=15.0, max_deferral_s=ev_wait_s,
                                         deferral_cost=30.0, priority=ev_priority),),
    )


def settings(plan: Plan) -> dict[str, float | bool | None]:
    out: dict[str, float | bool | None] = {}
    for a in plan.actions:
        out[a.target_id] = (a.setpoint_offset_c if a.kind == "hvac_setpoint"
                            else a.dim_level_pct if a.kind == "lighting_dim" else a.deferred)
    return out


@pytest.mark.parametrize(
    ("target_kw", "expected", "kw", "cost"),
    [
        # 10 kW: two HVAC steps, the cheapest kW. Cost 2 x 2 = 4.
        (10.0, {"z1": 1.0}, 10.0, 4.0),
        # 25 kW: HVAC all 4 steps (20 kW, 8) + 3 lighting steps (6 kW, 15) = 23; the other
        # options cost more: 3 HVAC + 5 lighting = 6 + 25 = 31; 2 HVAC + ev = 4 + 30 = 34.
        (25.0, {"z1": 2.0, "l1": 70.0}, 26.0, 23.0),
        # 35 kW: 20 HVAC + ev 15 = 8 + 30 = 38 beats 20 HVAC + 10 lighting (max) = 30 kW short.
        (35.0, {"z1": 2.0, "ev": True}, 35.0, 38.0),
        # 0 kW: nothing to do.
        (0.0, {}, 0.0, 0.0),
    ],
)
def test_minimum_comfort_cost(
    target_kw: float, expected: dict[str, float | bool], kw: float, cost: float
) -> None:
    plan = plan_reduction(inventory(), target_reduction_kw=target_kw, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == expected
    assert plan.expected_reduction_kw == pytest.approx(kw)
    assert plan.objective_cost == pytest.approx(cost)
    assert (plan.meets_target, plan.shortfall_kw) == (True, 0.0)


def test_infeasible_target_sheds_everything_and_reports_the_shortfall() -> None:
    # At most 20 + 10 + 15 = 45 kW: 60 kW is 15 kW short; everything at its limit.
    plan = plan_reduction(inventory(), target_reduction_kw=60.0, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == {"z1": 2.0, "l1": 50.0, "ev": True}
    assert (plan.expected_reduction_kw, plan.shortfall_kw, plan.meets_target) == (45.0, 15.0,
                                                                                   False)
    assert plan.solver_status == "optimal"
    assert any("at most 45.000 kW" in n for n in plan.notes)


def test_deferral_longer_than_allowed_is_not_planned() -> None:
    # The EV may wait 1 h but the event lasts 2 h: at most 20 + 10 = 30 kW of the 35.
    plan = plan_reduction(inventory(ev_wait_s=3600.0), target_reduction_kw=35.0,
                          forecast_upper_kw=UPPER, event_start=START, event_end=END)
    assert settings(plan) == {"z1": 2.0, "l1": 50.0}
    assert plan.shortfall_kw == pytest.approx(5.0)
    assert any("ev not deferred" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("hvac_max_c", "cap_kw", "target_kw", "expected", "kw"),
    [
        # Offset limit 1.2 degC with 0.5 degC steps: at most 1.0 degC (10 kW), lighting the rest:
        # 14 kW = 10 + 2 lighting steps (4 kW).
        (1.2, None, 14.0, {"z1": 1.0, "l1": 80.0}, 14.0),
        # Zone shed capped at 12 kW: 1.5 degC gives 12, not 15; 2 degC is no better, so the
        # 3rd step is planned only as far as needed: 12 + 2 lighting steps (4) = 16 >= 16.
        (2.0, 12.0, 16.0, {"z1": 1.5, "l1": 80.0}, 16.0),
    ],
)
def test_limits(
    hvac_max_c: float, cap_kw: float | None, target_kw: float,
    expected: dict[str, float], kw: float,
) -> None:
    plan = plan_reduction(inventory(hvac_max_c=hvac_max_c, hvac_cap_kw=cap_kw),
                          target_reduction_kw=target_kw, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == expected
    assert plan.expected_reduction_kw == pytest.approx(kw)


@pytest.mark.parametrize(
    ("target_kw", "expected", "cost"),
    [
        # HVAC is protected (priority 2): 8 kW from lighting alone, 4 steps, cost 20, although
        # 2 HVAC steps would cost only 4.
        (8.0, {"l1": 60.0}, 20.0),
        # 14 kW: lighting gives at most 10, so HVAC covers the rest with as few kW as possible
        # (1 step, 5 kW); then cost: lighting stays at 10 kW (it must: 5 + 8 < 14). 2 + 25 = 27.
        (14.0, {"z1": 0.5, "l1": 50.0}, 27.0),
    ],
)
def test_priorities(target_kw: float, expected: dict[str, float], cost: float) -> None:
    plan = plan_reduction(inventory(hvac_priority=2, ev_priority=3),
                          target_reduction_kw=target_kw, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == expected
    assert plan.objective_cost == pytest.approx(cost)


def test_target_holds_at_the_upper_band() -> None:
    # Baseline 580 kW; the upper band is 600 and 620: load may come in 40 kW above the
    # baseline, so 10 + 40 = 50 kW must be shed; the inventory sheds 45: 5 kW short.
    plan = plan_reduction(inventory(), target_reduction_kw=10.0, forecast_upper_kw=UPPER,
                          baseline_kw=[580.0, 580.0], event_start=START, event_end=END)
    assert (plan.robust_margin_kw, plan.required_reduction_kw) == (40.0, 50.0)
    assert plan.shortfall_kw == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("shed", "stages", "expected"),
    [
        # Largest first to the emptiest stage: a(10)->0, b(6)->1, c(5)->1 (6<10), d(3)->0
        # (11>10): stage kW 13 and 11, released smallest first: (b, c) at the end, (a, d) 5 min
        # later.
        ([("a", 10.0), ("b", 6.0), ("c", 5.0), ("d", 3.0)], 2,
         [(("b", "c"), 11.0, 0), (("a", "d"), 13.0, 300)]),
        # Three stages: a->0, b->1, c->2, d->2 (5 < 6 < 10): kW 10, 6, 8 -> b, then c+d, then a.
        ([("a", 10.0), ("b", 6.0), ("c", 5.0), ("d", 3.0)], 3,
         [(("b",), 6.0, 0), (("c", "d"), 8.0, 300), (("a",), 10.0, 600)]),
        # More stages than actions: one action a stage, smallest first.
        ([("a", 10.0), ("b", 6.0)], 4, [(("b",), 6.0, 0), (("a",), 10.0, 300)]),
    ],
)
def test_release_schedule(
    shed: list[tuple[str, float]], stages: int, expected: list[tuple[tuple[str, ...], float, int]]
) -> None:
    _, release = release_schedule(shed, event_end=END, stages=stages, stage_gap_s=300.0)
    got = [(s.target_ids, s.released_kw, int((s.release_at - END).total_seconds()))
           for s in release]
    assert got == expected
    bound = sum(kw for _, kw in shed) / min(stages, len(shed)) + max(kw for _, kw in shed)
    assert all(s.released_kw <= bound for s in release)


def test_plan_explains_itself_and_round_trips_json() -> None:
    plan = plan_reduction(inventory(), target_reduction_kw=25.0, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END, event_id="evt-1")
    hvac = next(a for a in plan.actions if a.kind == "hvac_setpoint")
    assert hvac.reason == "raise cooling setpoint by 2 degC (4 x 0.5 degC at 10 kW/degC)"
    # Lighting (6 kW) goes first at the event end, HVAC (20 kW) 5 min later.
    assert [(a.target_id, a.release_stage) for a in plan.actions] == [("z1", 1), ("l1", 0)]
    assert hvac.release_at == END + timedelta(minutes=5) and hvac.start == START
    assert Plan.from_json(plan.to_json()) == plan


def test_plan_times_are_utc() -> None:
    # An end at 18:00-05:00 is 23:00Z: the release time is kept in UTC; a naive end is refused.
    eastern = timezone(timedelta(hours=-5))
    _, [stage] = release_schedule([("a", 1.0)], event_end=END.astimezone(eastern))
    assert stage.release_at == END and stage.release_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="timezone"):
        release_schedule([("a", 1.0)], event_end=END.replace(tzinfo=None))


def test_inventory_from_the_simulated_building() -> None:
    # Design conditions: slope = 62.5 x (1 - 0.12) / 16 = 3.4375 kW/degC, compressor share
    # 62.5 x 0.88 = 55 kW; lighting 17.5 kW x 0.95 dimmable = 16.625 kW.
    building = BuildingModel(facility_id="fac-001", timezone="America/Los_Angeles", seed=7)
    design = inventory_from_building(building)
    zone = design.zones[0]
    assert (zone.zone_id, zone.kw_per_degc, zone.max_reduction_kw) == pytest.approx(
        ("zone-1", 3.4375, 55.0))
    assert design.lighting_groups[0].kw_at_full == pytest.approx(16.625)
    # A hot weekday afternoon: the plan's expected shed matches what the model then draws.
    building = BuildingModel(facility_id="fac-001", timezone="America/Los_Angeles", seed=7,
                             climate=Climate(22.0, 6.0, 8.0))
    at = datetime(2026, 7, 15, 22, tzinfo=UTC)  # 15:00 local
    plan = plan_reduction(inventory_from_building(building, at=at), target_reduction_kw=30.0,
                          forecast_upper_kw=[500.0], event_start=at,
                          event_end=at + timedelta(hours=1))
    assert plan.meets_target
    before = sum(building.loads_kw(at).values())
    for a in plan.actions:
        if a.setpoint_offset_c is not None:
            building.set_hvac_offset(a.target_id, a.setpoint_offset_c)
        if a.dim_level_pct is not None:
            building.set_lighting_level(a.target_id, a.dim_level_pct)
    after = sum(building.loads_kw(at).values())
    # HVAC carries +-3 % noise in the model: the shed agrees within that.
    assert before - after == pytest.approx(plan.expected_reduction_kw, rel=0.03)


def test_continuous_dimming() -> None:
    # No dimming step: 5 kW of a 20 kW group is 25 points, level 75 %, cost 0.5 x 25 = 12.5.
    group = LightingGroupResource(group_id="l2", kw_at_full=20.0, min_level_pct=50.0,
                                  comfort_cost_per_pct=0.5)
    plan = plan_reduction(Inventory(facility_id="fac-001", lighting_groups=(group,)),
                          target_reduction_kw=5.0, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == {"l2": 75.0}
    assert (plan.expected_reduction_kw, plan.objective_cost) == pytest.approx((5.0, 12.5))


def test_loads_are_shed_from_where_they_are_and_released_back_there() -> None:
    """A group already dimmed to 70 % has 20 points left above its 50 % floor, each worth
    0.2 kW of its 20 kW at 100 %; a zone already at +0.5 degC gets its offset on top. The
    release restores those levels, not 100 % and 0 degC."""
    inv = Inventory(
        facility_id="fac-001",
        zones=(HvacZoneResource(zone_id="z1", max_setpoint_offset_c=2.0, kw_per_degc=10.0,
                                comfort_cost_per_degc=4.0, current_offset_c=0.5),),
        lighting_groups=(LightingGroupResource(group_id="l1", kw_at_full=20.0,
                                               min_level_pct=50.0, comfort_cost_per_pct=0.5,
                                               dim_step_pct=10.0, level_pct=70.0),))
    # 24 kW: the zone's 20 kW (4 steps, +2 degC) and both lighting steps (4 kW) -- all there is.
    plan = plan_reduction(inv, target_reduction_kw=24.0, forecast_upper_kw=UPPER,
                          event_start=START, event_end=END)
    assert settings(plan) == {"z1": 2.5, "l1": 50.0}
    assert plan.expected_reduction_kw == pytest.approx(24.0) and plan.meets_target
    restore = {a.target_id: (a.restore_setpoint_offset_c, a.restore_level_pct)
               for a in plan.actions}
    assert restore == {"z1": (0.5, None), "l1": (None, 70.0)}
    # A group at its floor already has nothing to give.
    floor = LightingGroupResource(group_id="l1", kw_at_full=20.0, min_level_pct=50.0,
                                  comfort_cost_per_pct=0.5, level_pct=40.0)
    assert floor.max_dim_pct == 0.0
