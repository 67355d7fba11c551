"""Load forecasts in PostgreSQL (``ForecastStore``): table ``load_forecasts``."""

from __future__ import annotations

from datetime import datetime

from connectors.postgres.db import PostgresDb
from schemas.forecast import LoadForecast, LoadForecastPoint
from tables.ports.forecasts import ForecastRow

# A run replaces the values of the same facility and time, unless the stored ones come from a
# newer run (a replayed old run changes nothing).
UPSERT_LOAD_FORECASTS = (
    "INSERT INTO load_forecasts (facility_id, forecast_timestamp, predicted_load_kw, "
    "confidence_lower, confidence_upper, lower_95, upper_95, model, made_at, weather_used) "
    "SELECT f, t, p, l8, u8, l9, u9, %s, %s, %s "
    "FROM unnest(%b::text[], %b::timestamptz[], %b::float8[], %b::float8[], "
    "%b::float8[], %b::float8[], %b::float8[]) AS u(f, t, p, l8, u8, l9, u9) "
    "ON CONFLICT (facility_id, forecast_timestamp) DO UPDATE SET "
    "predicted_load_kw = excluded.predicted_load_kw, "
    "confidence_lower = excluded.confidence_lower, confidence_upper = excluded.confidence_upper, "
    "lower_95 = excluded.lower_95, upper_95 = excluded.upper_95, model = excluded.model, "
    "made_at = excluded.made_at, weather_used = excluded.weather_used "
    "WHERE load_forecasts.made_at <= excluded.made_at"
)


class PostgresForecasts:
    """``ForecastStore`` through the store's pool (``PostgresDb``)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    async def upsert_forecast(self, forecast: LoadForecast) -> None:
        pts = forecast.points
        async with self._db.transaction("upsert_forecast") as conn:
            await conn.execute(UPSERT_LOAD_FORECASTS, (
                forecast.model, forecast.made_at, forecast.weather_used,
                [forecast.facility_id] * len(pts), [p.timestamp for p in pts],
                [p.predicted_load_kw for p in pts], [p.confidence_lower for p in pts],
                [p.confidence_upper for p in pts], [p.lower_95 for p in pts],
                [p.upper_95 for p in pts]))
        self._db.written("load_forecasts", len(pts))

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        rows = await self._db.read(
            "forecast_rows",
            "SELECT forecast_timestamp, predicted_load_kw, confidence_lower, confidence_upper, "
            "lower_95, upper_95, model, made_at, weather_used FROM load_forecasts "
            "WHERE facility_id = %s AND forecast_timestamp >= %s AND forecast_timestamp < %s "
            "ORDER BY forecast_timestamp", (facility_id, start, end))
        return [ForecastRow(
            point=LoadForecastPoint(timestamp=r[0], predicted_load_kw=r[1], confidence_lower=r[2],
                                    confidence_upper=r[3], lower_95=r[4], upper_95=r[5]),
            model=r[6], made_at=r[7], weather_used=r[8]) for r in rows]
