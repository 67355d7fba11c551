"""Response bodies of the API, as pydantic models: the OpenAPI document's schemas come from
here, and tests validate responses against them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.deadletter import DeadLetter
from schemas.metadata import Facility, MeterType
from schemas.rollup import Rollup


class Error(BaseModel):
    """The one error body of every route."""

    model_config = ConfigDict(extra="forbid")
    error_code: str = Field(description="stable machine-readable code, e.g. invalid_parameter")
    message: str = Field(description="what went wrong, for a person")
    details: dict[str, Any] | list[Any] = Field(description="what the code needs to act on it")


class FacilityMeter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meter_id: str
    meter_type: MeterType
    sample_interval_s: float


class FacilityOut(Facility):
    meters: list[FacilityMeter]


class Facilities(BaseModel):
    facilities: list[FacilityOut]


class MeterNow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meter_id: str
    meter_type: MeterType
    timestamp: AwareDatetime
    active_power_kw: float
    reactive_power_kvar: float
    voltage_v: float
    frequency_hz: float
    age_s: float


class Current(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facility_id: str
    as_of: AwareDatetime
    total_power_kw: float | None = Field(description="sum of the main meters' latest readings")
    contract_demand_kw: float
    contract_utilization_pct: float | None
    data_timestamp: AwareDatetime | None = Field(description="the oldest main meter's latest")
    data_age_s: float | None
    meters: list[MeterNow]


class Rollups(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facility_id: str
    scope: Literal["facility", "meter"]
    meter_id: str | None
    window: Literal["1m", "15m", "1h"]
    start: AwareDatetime
    end: AwareDatetime
    truncated: bool = Field(description="more rollups exist in the range than limit")
    rollups: list[Rollup]


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetter]


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


class Jwks(BaseModel):
    keys: list[dict[str, Any]]

