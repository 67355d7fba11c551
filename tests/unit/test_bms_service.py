"""The BMS simulator's behaviour without SOAP: validation, idempotency on command_id, faults."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from simulators.bms.service import BmsFault, BmsService, CommandOutcome
from simulators.building import BuildingModel

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model() -> BuildingModel:
    return BuildingModel(facility_id="fac-001", timezone="America/New_York", seed=1)


@pytest.fixture
def service(model: BuildingModel, clock: Clock) -> BmsService:
    return BmsService({"fac-001": model}, clock=clock)


@pytest.mark.parametrize(
    ("offset_c", "fault_code"),
    [
        (10.0, None),  # the limit itself is allowed
        (-10.0, None),  # heating shed: a negative offset
        (0.0, None),  # the release
        (10.000001, "out_of_range"),
        (-11.0, "out_of_range"),
        (math.nan, "out_of_range"),  # NaN compares false with everything: must not slip through
        (math.inf, "out_of_range"),
    ],
)
def test_setpoint_offset_range(service: BmsService, model: BuildingModel, offset_c: float,
                               fault_code: str | None) -> None:
    if fault_code is None:
        outcome = service.set_zone_setpoint_offset("fac-001", "zone-2", offset_c,
                                                   command_id="c-1")
        assert outcome == CommandOutcome("c-1", True, T0)
        assert model.zones[1].setpoint_offset_c == offset_c
    else:
        with pytest.raises(BmsFault) as fault:
            service.set_zone_setpoint_offset("fac-001", "zone-2", offset_c, command_id="c-1")
        assert fault.value.code == fault_code
        assert model.zones[1].setpoint_offset_c == 0.0


@pytest.mark.parametrize(
    ("level_pct", "fault_code"),
    [
        (0.0, None),  # fully dimmed (the egress floor stays on in the model)
        (100.0, None),
        (-0.1, "out_of_range"),
        (100.1, "out_of_range"),
    ],
)
def test_lighting_level_range(service: BmsService, level_pct: float, fault_code: str | None
                              ) -> None:
    try:
        service.set_lighting_level("fac-001", "floor-1", level_pct, command_id="c-1")
    except BmsFault as fault:
        assert fault.code == fault_code
    else:
        assert fault_code is None


@pytest.mark.parametrize(
    ("facility_id", "target_id", "fault_code", "message"),
    [
        ("fac-002", "zone-1", "unknown_facility", "no facility 'fac-002'"),
        ("fac-001", "floor-1", "unknown_zone", "fac-001 has no HVAC zone 'floor-1'"),
    ],
)
def test_unknown_ids(service: BmsService, facility_id: str, target_id: str, fault_code: str,
                     message: str) -> None:
    with pytest.raises(BmsFault) as fault:
        service.set_zone_setpoint_offset(facility_id, target_id, 1.0, command_id="c-1")
    assert (fault.value.code, fault.value.message, fault.value.server_side) == (
        fault_code, message, False)


def test_a_repeated_command_id_returns_the_first_outcome_and_changes_nothing(
    service: BmsService, model: BuildingModel, clock: Clock
) -> None:
    first = service.set_zone_setpoint_offset("fac-001", "zone-1", 3.0, command_id="c-1")
    clock.now = T0 + timedelta(minutes=5)
    service.set_zone_setpoint_offset("fac-001", "zone-1", 0.0, command_id="c-2")  # release

    again = service.set_zone_setpoint_offset("fac-001", "zone-1", 3.0, command_id="c-1")

    assert again == CommandOutcome("c-1", True, T0, replayed=True)
    assert first == CommandOutcome("c-1", True, T0)
    assert model.zones[0].setpoint_offset_c == 0.0  # the release still holds


def test_a_command_id_reused_with_other_parameters_is_a_conflict(service: BmsService) -> None:
    service.set_lighting_level("fac-001", "floor-1", 50.0, command_id="c-1")

    with pytest.raises(BmsFault) as fault:
        service.set_lighting_level("fac-001", "floor-1", 60.0, command_id="c-1")
    assert fault.value.code == "command_id_conflict"
    used = re.escape("already used for lighting_level fac-001/floor-1=50.0")
    with pytest.raises(BmsFault, match=used):
        service.set_zone_setpoint_offset("fac-001", "floor-1", 50.0, command_id="c-1")


def test_a_failed_command_stays_failed_when_repeated(service: BmsService,
                                                     model: BuildingModel) -> None:
    service.faults.fail_next_commands = 1
    with pytest.raises(BmsFault) as first:
        service.set_lighting_level("fac-001", "floor-2", 20.0, command_id="c-1")

    with pytest.raises(BmsFault) as again:
        service.set_lighting_level("fac-001", "floor-2", 20.0, command_id="c-1")

    assert (first.value.code, again.value.code) == ("injected", "injected")
    assert first.value.server_side and again.value is not first.value
    assert model.lighting_groups[1].level_pct == 100.0
    # The injection was used up by c-1: a new command goes through.
    service.set_lighting_level("fac-001", "floor-2", 20.0, command_id="c-2")
    assert model.lighting_groups[1].level_pct == 20.0


def test_faulty_and_overridden_ids(service: BmsService, model: BuildingModel) -> None:
    service.faults.faulty_ids.add("zone-3")
    service.faults.overridden_ids.add("zone-4")

    with pytest.raises(BmsFault, match="controller for zone-3 is not responding"):
        service.set_zone_setpoint_offset("fac-001", "zone-3", 1.0, command_id="c-1")
    overridden = service.set_zone_setpoint_offset("fac-001", "zone-4", 1.0, command_id="c-2")

    assert overridden == CommandOutcome("c-2", False, None,
                                        "zone-4 is under a local operator override")
    assert [z.setpoint_offset_c for z in model.zones] == [0.0, 0.0, 0.0, 0.0]


def test_point_values_add_up_to_the_site(service: BmsService, model: BuildingModel) -> None:
    service.set_lighting_level("fac-001", "floor-1", 10.0, command_id="c-1")

    at, points = service.point_values("fac-001")

    by_id = {p.point_id: p.value for p in points}
    loads = model.loads_kw(T0)
    assert at == T0
    assert by_id["lighting:floor-1/level_pct"] == 10.0
    assert by_id["lighting:floor-1/power_kw"] == loads["lighting:floor-1"]
    assert by_id["site/power_kw"] == pytest.approx(sum(loads.values()))
    assert len(points) == 2 * 4 + 2 * 4 + 1  # zones and groups: setting and kW; the site


def test_listing(service: BmsService, model: BuildingModel) -> None:
    zones = service.list_zones("fac-001")
    groups = service.list_lighting_groups("fac-001")

    assert [(z.zone_id, z.max_offset_c) for z in zones] == [
        ("zone-1", 10.0), ("zone-2", 10.0), ("zone-3", 10.0), ("zone-4", 10.0)]
    assert [g.rated_kw for g in groups] == [g.rated_kw for g in model.lighting_groups]
