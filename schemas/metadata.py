"""Facilities and meters: the registry that readings are validated against."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Identifier


class MeterType(StrEnum):
    """What a meter measures. Only ``main`` (revenue) meters add up to the facility total;
    the others are submeters that break it down and would double count if added."""

    MAIN = "main"
    HVAC = "hvac"
    LIGHTING = "lighting"
    PLUG_LOAD = "plug_load"
    PROCESS = "process"
    EV_CHARGING = "ev_charging"
    OTHER = "other"


DrBaselineMethod = Literal["auto", "forecast", "caiso_10_in_10", "pjm_high_4_of_5",
                          "meter_before"]
"""How a facility's DR baseline is computed (agents/dr_baseline_source.py; "auto": the first
the data allows of forecast, CAISO 10-in-10, meter-before)."""


class Facility(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    facility_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", description="IANA zone of the site, for local schedules")
    contract_demand_kw: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    latitude: Annotated[float | None, Field(
        ge=-90, le=90, allow_inf_nan=False, description="site latitude, for its weather")] = None
    longitude: Annotated[float | None, Field(
        ge=-180, le=180, allow_inf_nan=False, description="site longitude, for its weather")] = None
    country: Annotated[str | None, Field(
        pattern=r"^[A-Z]{2}$",
        description="ISO 3166-1 alpha-2 code of the site, for its public holidays")] = None
    dr_baseline: DrBaselineMethod | None = Field(
        default=None, description="the baseline its DR events settle with (its utility "
        "program's); unset: SEMS_DR_BASELINE")


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_id: Identifier
    facility_id: Identifier
    meter_type: MeterType
    sample_interval_s: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="Nominal reporting interval; a sample holds its power at most this long",
        ),
    ] = 15.0


@dataclass(frozen=True, slots=True)
class Registry:
    """An immutable snapshot of the known facilities and meters.

    Meter ids are unique across facilities (a meter belongs to exactly one site).
    """

    facilities: Mapping[str, Facility] = field(default_factory=dict)
    meters: Mapping[str, Meter] = field(default_factory=dict)
    main_meters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, facilities: Iterable[Facility], meters: Iterable[Meter]) -> Registry:
        fac = {f.facility_id: f for f in facilities}
        met: dict[str, Meter] = {}
        mains: dict[str, list[str]] = {f: [] for f in fac}
        for m in meters:
            if m.facility_id not in fac:
                raise ValueError(f"meter {m.meter_id} names unknown facility {m.facility_id}")
            if m.meter_id in met:
                raise ValueError(f"meter id {m.meter_id} is registered twice")
            met[m.meter_id] = m
            if m.meter_type is MeterType.MAIN:
                mains[m.facility_id].append(m.meter_id)
        return cls(
            facilities=fac,
            meters=met,
            main_meters={f: tuple(sorted(ids)) for f, ids in mains.items()},
        )

    def meters_of(self, facility_id: str) -> list[Meter]:
        return [m for m in self.meters.values() if m.facility_id == facility_id]
