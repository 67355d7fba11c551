"""The ``rollups.1m`` / ``rollups.15m`` / ``rollups.1h`` record: one closed event-time window."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.common import Identifier


class Scope(StrEnum):
    FACILITY = "facility"
    METER = "meter"


class WindowName(StrEnum):
    MIN_1 = "1m"
    MIN_15 = "15m"
    HOUR_1 = "1h"


WINDOW_SECONDS: dict[WindowName, int] = {
    WindowName.MIN_1: 60,
    WindowName.MIN_15: 900,
    WindowName.HOUR_1: 3600,
}


class Rollup(BaseModel):
    """Aggregate of one meter, or of a facility's main meters, over one tumbling window.

    Energy integrates power over the time the samples actually cover; a gap is missing
    energy, not zero power, and shows as ``coverage`` < 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scope: Scope
    facility_id: Identifier
    meter_id: Annotated[Identifier | None, Field(description="null for facility scope")] = None
    window: WindowName
    window_start: AwareDatetime
    window_end: AwareDatetime
    avg_power_kw: Annotated[float, Field(description="mean power over the covered time")]
    max_power_kw: Annotated[
        float | None,
        Field(description="facility scope: null when no instant had every main meter reporting"),
    ]
    min_power_kw: float | None
    total_energy_kwh: float
    sample_count: Annotated[int, Field(ge=0)]
    covered_s: Annotated[float, Field(ge=0, description="seconds of the window covered by data")]
    coverage: Annotated[float, Field(ge=0, le=1, description="covered time / window length")]

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        """Identity of the window: stores upsert on it."""
        return (self.scope.value, self.meter_id or self.facility_id, self.window.value,
                self.window_start)
