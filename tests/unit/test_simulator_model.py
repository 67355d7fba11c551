"""Behaviour of the building simulator that demos, load tests and DR work rely on."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schemas.metadata import MeterType
from schemas.reading import SensorReading
from simulators.building import (
    BuildingModel,
    HvacZone,
    LightingGroup,
    UnknownLoadError,
    diurnal_shape,
    load_kind,
)
from simulators.fleet import Fleet, build_fleet, meter_layout

NEW_YORK = ZoneInfo("America/New_York")


def at_ny(iso: str) -> datetime:
    """A New York wall-clock time (fac-001 is in New York)."""
    return datetime.fromisoformat(iso).replace(tzinfo=NEW_YORK)


def total_kw(model: BuildingModel, ts: datetime) -> float:
    return math.fsum(model.loads_kw(ts).values())


def kind_kw(model: BuildingModel, ts: datetime, kind: str) -> float:
    return math.fsum(kw for name, kw in model.loads_kw(ts).items() if load_kind(name) == kind)


def local_at(fleet: Fleet, facility_id: str, iso: str) -> datetime:
    tz = ZoneInfo(fleet.models[facility_id].timezone)
    return datetime.fromisoformat(iso).replace(tzinfo=tz)


# --- determinism -------------------------------------------------------------------------


@pytest.mark.unit
def test_same_seed_gives_identical_readings_whatever_the_call_order() -> None:
    instants = [datetime(2024, 7, 17, 19, 0, 15, tzinfo=UTC) + timedelta(hours=h) for h in range(3)]
    a = build_fleet(facilities=3, meters_per_facility=6, seed=42)
    b = build_fleet(facilities=3, meters_per_facility=6, seed=42)
    forward = [a.readings_at(ts) for ts in instants]
    backward = [b.readings_at(ts) for ts in reversed(instants)]
    assert forward == list(reversed(backward))


@pytest.mark.unit
def test_different_seed_gives_different_readings() -> None:
    ts = datetime(2024, 7, 17, 19, 0, tzinfo=UTC)
    a = build_fleet(facilities=2, meters_per_facility=4, seed=1).readings_at(ts)
    b = build_fleet(facilities=2, meters_per_facility=4, seed=2).readings_at(ts)
    assert [r.meter_id for r in a] == [r.meter_id for r in b]
    assert all(ra.active_power_kw != rb.active_power_kw for ra, rb in zip(a, b, strict=True))


@pytest.mark.unit
def test_naive_timestamp_is_refused() -> None:
    fleet = build_fleet(facilities=1, meters_per_facility=1, seed=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        fleet.readings_at(datetime(2024, 7, 17, 12, 0))


# --- schedule and weather ----------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("local_iso", "expected"),
    [
        ("2024-05-15T03:00", 0.0),  # Wednesday night: empty
        ("2024-05-15T06:00", 0.0),  # ramp-up starts
        ("2024-05-15T07:00", 0.5),  # halfway up the 06-08 ramp
        ("2024-05-15T07:30", 0.75),  # 1.5 h of 2 h
        ("2024-05-15T12:00", 1.0),  # occupied core hours
        ("2024-05-15T18:00", 1.0),  # ramp-down starts
        ("2024-05-15T19:00", 0.5),  # halfway down the 18-20 ramp
        ("2024-05-15T20:00", 0.0),  # empty again
        ("2024-05-18T12:00", 0.15),  # Saturday: weekend occupancy
        ("2024-05-18T07:00", 0.075),  # Saturday ramp: 0.15 * 0.5
    ],
)
def test_occupancy_schedule(local_iso: str, expected: float) -> None:
    model = BuildingModel(facility_id="fac-x", timezone="America/New_York", seed=1)
    assert model.occupancy_fraction(at_ny(local_iso)) == pytest.approx(expected)


@pytest.mark.unit
def test_occupancy_follows_facility_local_time() -> None:
    ts = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)  # 08:00 in New York, 05:00 in Los Angeles
    ny = BuildingModel(facility_id="fac-a", timezone="America/New_York", seed=1)
    la = BuildingModel(facility_id="fac-b", timezone="America/Los_Angeles", seed=1)
    assert ny.occupancy_fraction(ts) == 1.0
    assert la.occupancy_fraction(ts) == 0.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("hour", "expected"),
    [
        (5.0, -1.0),  # coldest at 05:00
        (10.0, 0.0),  # midway through the 10 h warming half-cosine
        (15.0, 1.0),  # warmest at 15:00
        (22.0, 0.0),  # midway through the 14 h cooling half-cosine
    ],
)
def test_diurnal_shape(hour: float, expected: float) -> None:
    assert diurnal_shape(hour) == pytest.approx(expected, abs=1e-12)


@pytest.mark.unit
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outdoor_temperature_peaks_in_afternoon_and_summer(seed: int) -> None:
    fleet = build_fleet(facilities=1, meters_per_facility=1, seed=seed)
    model = fleet.models["fac-001"]
    assert model.outdoor_temp_c(at_ny("2024-07-17T15:00")) > model.outdoor_temp_c(
        at_ny("2024-07-17T05:00")
    )
    assert model.outdoor_temp_c(at_ny("2024-07-17T15:00")) > model.outdoor_temp_c(
        at_ny("2024-01-17T15:00")
    )


# --- load shape --------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("facility_id", ["fac-001", "fac-002", "fac-003", "fac-004"])
@pytest.mark.parametrize("wednesday", ["2024-01-17", "2024-04-17", "2024-07-17", "2024-10-16"])
def test_weekday_afternoon_load_clearly_above_night_and_saturday(
    facility_id: str, wednesday: str
) -> None:
    fleet = build_fleet(facilities=4, meters_per_facility=1, seed=7)
    model = fleet.models[facility_id]
    saturday = (datetime.fromisoformat(wednesday) + timedelta(days=3)).date().isoformat()
    afternoon = total_kw(model, local_at(fleet, facility_id, f"{wednesday}T14:00"))
    night = total_kw(model, local_at(fleet, facility_id, f"{wednesday}T03:00"))
    saturday_afternoon = total_kw(model, local_at(fleet, facility_id, f"{saturday}T14:00"))
    assert afternoon > 1.3 * night
    assert afternoon > 1.3 * saturday_afternoon


@pytest.mark.unit
@pytest.mark.parametrize(
    ("outdoor_c", "occupancy", "offset_c", "expected_kw"),
    [
        # rated 100 kW: fans 12 kW, slope 88/16 = 5.5 kW/degC, internal gains +4 degC
        (32.0, 1.0, 0.0, 78.0),  # 32+4-24 = 12 degC -> 12 + 66
        (32.0, 1.0, 2.0, 67.0),  # setpoint 26: 10 degC -> 12 + 55
        (20.0, 1.0, 0.0, 12.0),  # mild: inside the dead band, fans only
        (10.0, 1.0, 0.0, 45.0),  # heating: 20-(10+4) = 6 degC -> 12 + 33
        (45.0, 1.0, 0.0, 100.0),  # 25 degC gap -> 149.5, capped at rated
        (32.0, 0.0, 0.0, 11.0),  # unoccupied, band 16..28: 4 degC * 5.5 * 0.5
        (20.0, 0.0, 0.0, 0.0),  # unoccupied and mild: off
        (32.0, 0.5, 0.0, 44.5),  # half occupied: (78 + 11) / 2
    ],
)
def test_hvac_zone_power(
    outdoor_c: float, occupancy: float, offset_c: float, expected_kw: float
) -> None:
    zone = HvacZone("z", rated_kw=100.0, setpoint_offset_c=offset_c)
    assert zone.power_kw(outdoor_temp_c=outdoor_c, occupancy=occupancy) == pytest.approx(
        expected_kw
    )


@pytest.mark.unit
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hot_afternoon_draws_more_hvac_than_mild_afternoon(seed: int) -> None:
    model = build_fleet(facilities=1, meters_per_facility=1, seed=seed).models["fac-001"]
    hot, mild = at_ny("2024-07-17T15:00"), at_ny("2024-04-17T15:00")
    assert model.outdoor_temp_c(hot) > model.outdoor_temp_c(mild) + 5.0
    assert kind_kw(model, hot, "hvac") > 1.5 * kind_kw(model, mild, "hvac")


@pytest.mark.unit
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cooling_offset_sheds_hvac_on_hot_occupied_afternoon(seed: int) -> None:
    model = build_fleet(facilities=1, meters_per_facility=1, seed=seed).models["fac-001"]
    ts = at_ny("2024-07-17T15:00")
    assert 26.0 < model.outdoor_temp_c(ts) < 35.0  # cooling, but below the rated-kW cap
    before = model.loads_kw(ts)
    for zone in model.zones:
        model.set_hvac_offset(zone.zone_id, 2.0)
    after = model.loads_kw(ts)
    for zone in model.zones:
        name = f"hvac:{zone.zone_id}"
        # 2 degC at 5.5 kW/degC per 100 kW rated, scaled by the +-3 % noise
        assert after[name] < before[name] - 0.09 * zone.rated_kw
    assert {k: v for k, v in after.items() if not k.startswith("hvac:")} == {
        k: v for k, v in before.items() if not k.startswith("hvac:")
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("occupancy", "level_pct", "expected_kw"),
    [
        (1.0, 100.0, 20.0),  # full
        (1.0, 50.0, 10.5),  # 20 * (0.05 + 0.95 * 0.5)
        (0.0, 100.0, 1.0),  # night: the 5 % security floor
        (0.15, 100.0, 3.85),  # weekend: 20 * (0.05 + 0.95 * 0.15)
    ],
)
def test_lighting_group_power(occupancy: float, level_pct: float, expected_kw: float) -> None:
    group = LightingGroup("g", rated_kw=20.0, level_pct=level_pct)
    assert group.power_kw(occupancy=occupancy) == pytest.approx(expected_kw)


@pytest.mark.unit
def test_dimming_to_half_halves_lighting_above_the_floor() -> None:
    model = build_fleet(facilities=1, meters_per_facility=1, seed=5).models["fac-001"]
    ts = at_ny("2024-05-15T11:00")
    full = model.loads_kw(ts)
    for group in model.lighting_groups:
        model.set_lighting_level(group.group_id, 50.0)
    half = model.loads_kw(ts)
    for group in model.lighting_groups:
        name = f"lighting:{group.group_id}"
        floor_kw = group.rated_kw * group.floor_fraction
        assert half[name] - floor_kw == pytest.approx((full[name] - floor_kw) / 2)


@pytest.mark.unit
def test_commands_to_unknown_loads_or_out_of_range_are_refused() -> None:
    model = BuildingModel(facility_id="fac-x", timezone="America/Chicago", seed=1)
    with pytest.raises(UnknownLoadError):
        model.set_hvac_offset("no-such-zone", 2.0)
    with pytest.raises(UnknownLoadError):
        model.set_lighting_level("no-such-floor", 50.0)
    with pytest.raises(ValueError):
        model.set_lighting_level("floor-1", 120.0)
    with pytest.raises(ValueError):
        model.set_hvac_offset("zone-1", 15.0)


# --- meters ------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("meters_per_facility", "expected"),
    [
        (1, [("main", MeterType.MAIN)]),
        (
            4,
            [
                ("main", MeterType.MAIN),
                ("hvac", MeterType.HVAC),
                ("lighting", MeterType.LIGHTING),
                ("plug_load", MeterType.PLUG_LOAD),
            ],
        ),
        (
            6,  # two service entrances from six meters on
            [
                ("main-1", MeterType.MAIN),
                ("main-2", MeterType.MAIN),
                ("hvac", MeterType.HVAC),
                ("lighting", MeterType.LIGHTING),
                ("plug_load", MeterType.PLUG_LOAD),
                ("process", MeterType.PROCESS),
            ],
        ),
    ],
)
def test_meter_layout(meters_per_facility: int, expected: list[tuple[str, MeterType]]) -> None:
    fleet = build_fleet(facilities=2, meters_per_facility=meters_per_facility, seed=1)
    for fac in ("fac-001", "fac-002"):
        got = [(m.meter_id, m.meter_type) for m in fleet.registry.meters_of(fac)]
        assert got == [(f"{fac}-{suffix}", t) for suffix, t in expected]
    mains = tuple(f"fac-001-{s}" for s, t in expected if t is MeterType.MAIN)
    assert fleet.registry.main_meters["fac-001"] == mains
    assert len(fleet.meters) == 2 * meters_per_facility


@pytest.mark.unit
def test_meter_layout_rejects_no_meters() -> None:
    with pytest.raises(ValueError):
        meter_layout(0)


INSTANTS = [
    datetime(2024, 1, 17, 8, 0, tzinfo=UTC),
    datetime(2024, 7, 17, 19, 0, 15, tzinfo=UTC),
    datetime(2024, 7, 20, 19, 0, 30, tzinfo=UTC),
]


@pytest.mark.unit
@pytest.mark.parametrize("meters_per_facility", [1, 4, 6, 9])
@pytest.mark.parametrize("ts", INSTANTS)
def test_main_meters_add_up_to_total_building_load(meters_per_facility: int, ts: datetime) -> None:
    fleet = build_fleet(facilities=4, meters_per_facility=meters_per_facility, seed=3)
    readings = fleet.readings_at(ts)
    for fac in fleet.facilities:
        mains = [
            r.active_power_kw
            for r in readings
            if r.facility_id == fac.facility_id and r.meter_type is MeterType.MAIN
        ]
        assert math.fsum(mains) == pytest.approx(total_kw(fleet.models[fac.facility_id], ts))


@pytest.mark.unit
@pytest.mark.parametrize("ts", INSTANTS)
def test_submeters_equal_their_load_groups(ts: datetime) -> None:
    fleet = build_fleet(facilities=2, meters_per_facility=8, seed=3)
    by_id = {r.meter_id: r.active_power_kw for r in fleet.readings_at(ts)}
    for fac in fleet.facilities:
        loads = fleet.models[fac.facility_id].loads_kw(ts)
        fid = fac.facility_id

        def kind_sum(kind: str, loads: dict[str, float] = loads) -> float:
            return math.fsum(kw for name, kw in loads.items() if load_kind(name) == kind)

        assert by_id[f"{fid}-hvac"] == pytest.approx(kind_sum("hvac"))
        assert by_id[f"{fid}-lighting"] == pytest.approx(kind_sum("lighting"))
        assert by_id[f"{fid}-plug_load"] == pytest.approx(loads["plug"])
        assert by_id[f"{fid}-process"] == pytest.approx(loads["process"])
        assert by_id[f"{fid}-other-01"] == pytest.approx(loads["other:01"])
        assert by_id[f"{fid}-other-02"] == pytest.approx(loads["other:02"])
        # main-2 feeds lighting, plug and base; main-1 everything else
        main_2 = kind_sum("lighting") + loads["plug"] + loads["base"]
        assert by_id[f"{fid}-main-2"] == pytest.approx(main_2)


@pytest.mark.unit
@pytest.mark.parametrize("day", ["2024-01-17", "2024-07-17", "2024-07-20"])
def test_every_reading_is_a_valid_plausible_sample(day: str) -> None:
    fleet = build_fleet(facilities=4, meters_per_facility=7, seed=11)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    contract = {f.facility_id: f.contract_demand_kw for f in fleet.facilities}
    for hour in range(24):
        ts = start + timedelta(hours=hour, seconds=15)
        readings = fleet.readings_at(ts)
        assert len(readings) == len(fleet.meters)
        for r in readings:
            assert SensorReading.model_validate_json(r.model_dump_json()) == r
            assert r.timestamp == ts and r.timestamp.utcoffset() == timedelta(0)
            assert 0.0 <= r.active_power_kw < contract[r.facility_id]  # HVAC may be off
            if r.meter_type is MeterType.MAIN:
                assert r.active_power_kw > 0.0
            if r.active_power_kw > 0.0:
                apparent_kva = math.hypot(r.active_power_kw, r.reactive_power_kvar)
                assert 0.9 - 1e-9 <= r.active_power_kw / apparent_kva <= 0.97
            assert 480.0 * 0.99 <= r.voltage_v <= 480.0 * 1.01
            assert 59.98 <= r.frequency_hz <= 60.02
