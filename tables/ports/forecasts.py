"""The forecast port: the newest 24 h load forecast of each facility. Adapters: SQLite,
PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.forecast import LoadForecast, LoadForecastPoint


@dataclass(frozen=True, slots=True)
class ForecastRow:
    """One stored forecast point and the run it comes from."""

    point: LoadForecastPoint
    model: str
    made_at: datetime
    weather_used: bool


class ForecastStore(Protocol):
    """``load_forecasts``: one row per facility and time, the newest run's."""

    async def upsert_forecast(self, forecast: LoadForecast) -> None: ...

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        """Rows with ``start <= timestamp < end``, in time order."""
        ...
