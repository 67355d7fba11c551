"""A fleet of simulated facilities: registry metadata, meter layout and readings at an instant.

Each meter measures a fixed set of the building's loads, so the main meters of a facility add
up to its total load and each submeter equals the loads of its kind, exactly as downstream
rollups assume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.reading import SensorReading
from simulators.building import (
    BuildingModel,
    Climate,
    LoadKind,
    load_kind,
    reactive_kvar,
    require_aware,
    unit_noise,
)

SITES: tuple[tuple[str, str, Climate, float, float], ...] = (
    ("America/New_York", "New York", Climate(13.0, 12.5, 9.0), 40.71, -74.01),
    ("America/Chicago", "Chicago", Climate(10.5, 14.0, 10.0), 41.88, -87.63),
    ("America/Los_Angeles", "Los Angeles", Climate(18.5, 4.5, 8.0), 34.05, -118.24),
    ("America/Phoenix", "Phoenix", Climate(24.0, 11.0, 13.0), 33.45, -112.07),
)
"""(IANA zone, city, climate, latitude, longitude); facilities take them in turn (all in
the US, for public holidays)."""

SUBMETER_ORDER: tuple[tuple[MeterType, LoadKind], ...] = (
    (MeterType.HVAC, "hvac"),
    (MeterType.LIGHTING, "lighting"),
    (MeterType.PLUG_LOAD, "plug"),
    (MeterType.PROCESS, "process"),
)
TWO_MAINS_FROM = 6  # meters per facility at which the site gets a second service entrance
ALL_KINDS: frozenset[LoadKind] = frozenset(get_args(LoadKind))
# Second service entrance feeds the general panels; the first feeds mechanical plant.
MAIN_2_KINDS: frozenset[LoadKind] = frozenset({"lighting", "plug", "base"})
CONTRACT_MARGIN = 1.1
SAMPLE_INTERVAL_S = 15.0
SIZE_SCALE_RANGE = (0.6, 1.5)


@dataclass(frozen=True, slots=True)
class MeterSlot:
    """One meter position: id suffix, type, and the loads it measures."""

    suffix: str
    meter_type: MeterType
    kinds: frozenset[LoadKind]
    load_name: str | None = None  # pins a single circuit (the ``other-NN`` meters)

    def measures(self, load_name: str) -> bool:
        if self.load_name is not None:
            return load_name == self.load_name
        return load_kind(load_name) in self.kinds


def meter_layout(meters_per_facility: int) -> tuple[MeterSlot, ...]:
    """Meters of one facility: main(s), then hvac, lighting, plug_load, process, other-NN."""
    if meters_per_facility < 1:
        raise ValueError("meters_per_facility must be at least 1")
    if meters_per_facility < TWO_MAINS_FROM:
        slots = [MeterSlot("main", MeterType.MAIN, ALL_KINDS)]
    else:
        slots = [
            MeterSlot("main-1", MeterType.MAIN, ALL_KINDS - MAIN_2_KINDS),
            MeterSlot("main-2", MeterType.MAIN, MAIN_2_KINDS),
        ]
    for i in range(meters_per_facility - len(slots)):
        if i < len(SUBMETER_ORDER):
            meter_type, kind = SUBMETER_ORDER[i]
            slots.append(MeterSlot(meter_type.value, meter_type, frozenset({kind})))
        else:
            n = i - len(SUBMETER_ORDER) + 1
            slots.append(
                MeterSlot(f"other-{n:02d}", MeterType.OTHER, frozenset({"other"}), f"other:{n:02d}")
            )
    return tuple(slots)


def other_circuits_for(meters_per_facility: int) -> int:
    """Extra circuits the building needs so every ``other-NN`` meter has its own load."""
    return max(0, meters_per_facility - TWO_MAINS_FROM)


@dataclass(frozen=True, slots=True)
class Fleet:
    facilities: tuple[Facility, ...]
    meters: tuple[Meter, ...]
    registry: Registry
    models: dict[str, BuildingModel]
    meter_loads: Mapping[str, tuple[str, ...]]  # meter id -> load names it measures

    def readings_at(self, ts: datetime) -> list[SensorReading]:
        """One reading per meter at ``ts`` (callers align it to the 15 s grid)."""
        require_aware(ts)
        utc = ts.astimezone(UTC)
        loads_by_facility = {fid: model.loads_kw(utc) for fid, model in self.models.items()}
        readings: list[SensorReading] = []
        for meter in self.meters:
            model = self.models[meter.facility_id]
            loads = loads_by_facility[meter.facility_id]
            names = self.meter_loads[meter.meter_id]
            readings.append(
                SensorReading(
                    facility_id=meter.facility_id,
                    meter_id=meter.meter_id,
                    meter_type=meter.meter_type,
                    timestamp=utc,
                    active_power_kw=math.fsum(loads[n] for n in names),
                    reactive_power_kvar=math.fsum(reactive_kvar(n, loads[n]) for n in names),
                    voltage_v=model.voltage_v(utc, point=meter.meter_id),
                    frequency_hz=model.frequency_hz(utc, point=meter.meter_id),
                )
            )
        return readings


def build_fleet(*, facilities: int, meters_per_facility: int, seed: int) -> Fleet:
    """Facilities ``fac-001``... with sites in turn from ``SITES`` and seeded building sizes."""
    if facilities < 1:
        raise ValueError("facilities must be at least 1")
    layout = meter_layout(meters_per_facility)
    facs: list[Facility] = []
    meters: list[Meter] = []
    models: dict[str, BuildingModel] = {}
    meter_loads: dict[str, tuple[str, ...]] = {}
    lo, hi = SIZE_SCALE_RANGE
    for i in range(1, facilities + 1):
        facility_id = f"fac-{i:03d}"
        timezone, city, climate, latitude, longitude = SITES[(i - 1) % len(SITES)]
        model = BuildingModel(
            facility_id=facility_id,
            timezone=timezone,
            seed=seed,
            size_scale=lo + (hi - lo) * unit_noise(seed, facility_id, "size"),
            climate=climate,
            other_circuits=other_circuits_for(meters_per_facility),
        )
        models[facility_id] = model
        facs.append(
            Facility(
                facility_id=facility_id,
                name=f"{city} office {i:03d}",
                timezone=timezone,
                contract_demand_kw=math.ceil(model.design_peak_kw * CONTRACT_MARGIN / 10) * 10.0,
                latitude=latitude,
                longitude=longitude,
                country="US",
            )
        )
        names = model.load_names()
        for slot in layout:
            meter_id = f"{facility_id}-{slot.suffix}"
            meters.append(
                Meter(
                    meter_id=meter_id,
                    facility_id=facility_id,
                    meter_type=slot.meter_type,
                    sample_interval_s=SAMPLE_INTERVAL_S,
                )
            )
            meter_loads[meter_id] = tuple(n for n in names if slot.measures(n))
    return Fleet(
        facilities=tuple(facs),
        meters=tuple(meters),
        registry=Registry.build(facs, meters),
        models=models,
        meter_loads=meter_loads,
    )
