"""The ``load-forecasts`` record: one facility's forecast of the next hours, made at one time.

Field names follow the PostgreSQL table ``load_forecasts`` (migration 0001): a point's
``timestamp`` is its ``forecast_timestamp`` (start of the interval, UTC),
``confidence_lower``/``confidence_upper`` are the 80 % interval, ``lower_95``/``upper_95``
the 95 % one.
"""

from datetime import datetime
from itertools import pairwise
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import Identifier


class LoadForecastPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    timestamp: Annotated[AwareDatetime, Field(description="start of the interval forecast")]
    predicted_load_kw: Annotated[float, Field(description="mean kW over the interval")]
    confidence_lower: Annotated[float, Field(description="80 % interval, lower bound, kW")]
    confidence_upper: Annotated[float, Field(description="80 % interval, upper bound, kW")]
    lower_95: Annotated[float, Field(description="95 % interval, lower bound, kW")]
    upper_95: Annotated[float, Field(description="95 % interval, upper bound, kW")]

    @model_validator(mode="after")
    def _nested(self) -> "LoadForecastPoint":
        if not (self.lower_95 <= self.confidence_lower <= self.confidence_upper
                <= self.upper_95):
            raise ValueError("intervals must nest: lower_95 <= confidence_lower <= "
                             "confidence_upper <= upper_95")
        return self


class LoadForecast(BaseModel):
    """What the forecast agent publishes every 15 minutes per facility."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    facility_id: Identifier
    made_at: AwareDatetime
    model: Annotated[str, Field(min_length=1, max_length=64,
                                description="e.g. fourier_ols, mstl_ets, seasonal_naive")]
    weather_used: bool
    step_s: Annotated[int, Field(gt=0, le=3600, description="spacing of the points, s")]
    points: Annotated[list[LoadForecastPoint], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _ordered(self) -> "LoadForecast":
        times: list[datetime] = [p.timestamp for p in self.points]
        if any(b <= a for a, b in pairwise(times)):
            raise ValueError("points must be in increasing timestamp order")
        return self
