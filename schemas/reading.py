"""The ``sensor-readings`` record: one smart-meter sample."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from schemas.common import Identifier
from schemas.metadata import MeterType

# Plausible physical ranges for C&I sites. Negative power is export (on-site generation).
ACTIVE_POWER_KW_MAX = 100_000.0
REACTIVE_POWER_KVAR_MAX = 100_000.0
VOLTAGE_V_MAX = 50_000.0  # up to medium-voltage metering
FREQUENCY_HZ_MIN = 45.0
FREQUENCY_HZ_MAX = 65.0
# What the stores and the window arithmetic represent (epoch milliseconds, InfluxDB's int64
# nanoseconds up to 2262); the clock checks (future, retention) then narrow it to "now".
TIMESTAMP_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX = datetime(2100, 1, 1, tzinfo=UTC)
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
"""The pydantic error type of a timestamp outside [TIMESTAMP_MIN, TIMESTAMP_MAX)."""


def _to_utc(ts: datetime) -> datetime:
    """UTC, within the supported range. 0001-01-01T00:00+05:00 has no UTC datetime at all
    (``astimezone`` overflows): it is refused like any other out-of-range time, not raised."""
    try:
        utc = ts.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not TIMESTAMP_MIN <= utc < TIMESTAMP_MAX:
        raise PydanticCustomError(
            TIMESTAMP_OUT_OF_RANGE,
            "timestamp must be from {min} to before {max} (UTC)",
            {"min": TIMESTAMP_MIN.isoformat(), "max": TIMESTAMP_MAX.isoformat()})
    return utc


class SensorReading(BaseModel):
    """A smart-meter sample, published every 15 s per meter.

    ``active_power_kw`` is the instantaneous real power; energy is derived downstream by
    integrating it over the time each sample covers.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"additionalProperties": False},
    )

    facility_id: Identifier
    meter_id: Identifier
    meter_type: MeterType
    timestamp: Annotated[
        AwareDatetime,
        AfterValidator(_to_utc),
        Field(description="ISO 8601 with an offset, from 1970-01-01 to before 2100-01-01 "
                          "UTC; normalised to UTC"),
    ]
    active_power_kw: Annotated[
        float, Field(ge=-ACTIVE_POWER_KW_MAX, le=ACTIVE_POWER_KW_MAX)
    ]
    reactive_power_kvar: Annotated[
        float, Field(ge=-REACTIVE_POWER_KVAR_MAX, le=REACTIVE_POWER_KVAR_MAX)
    ]
    voltage_v: Annotated[float, Field(ge=0, le=VOLTAGE_V_MAX)]
    frequency_hz: Annotated[float, Field(ge=FREQUENCY_HZ_MIN, le=FREQUENCY_HZ_MAX)]
