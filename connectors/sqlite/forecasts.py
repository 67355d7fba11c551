"""Load forecasts in the embedded store (``ForecastStore``)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import orjson

from connectors.sqlite.db import SqliteDb
from schemas.forecast import LoadForecast, LoadForecastPoint
from tables.ports.forecasts import ForecastRow


def _ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SqliteForecasts:
    """``ForecastStore`` through the file's connection object, shared with the other areas."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def upsert_forecast(self, forecast: LoadForecast) -> None:
        """A newer run replaces an older one's values; a replayed older run changes nothing."""
        made_at_ms = _ms(forecast.made_at)
        rows = [(forecast.facility_id, _ms(p.timestamp), p.predicted_load_kw, p.confidence_lower,
                 p.confidence_upper, p.lower_95, p.upper_95, forecast.model, made_at_ms,
                 int(forecast.weather_used)) for p in forecast.points]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO load_forecasts (facility_id, ts_ms, predicted_load_kw, "
                "confidence_lower, confidence_upper, lower_95, upper_95, model, made_at_ms, "
                "weather_used) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, "
                "value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 "
                "FROM json_each(?) WHERE true ON CONFLICT (facility_id, ts_ms) DO UPDATE SET "
                "predicted_load_kw = excluded.predicted_load_kw, "
                "confidence_lower = excluded.confidence_lower, "
                "confidence_upper = excluded.confidence_upper, lower_95 = excluded.lower_95, "
                "upper_95 = excluded.upper_95, model = excluded.model, "
                "made_at_ms = excluded.made_at_ms, weather_used = excluded.weather_used "
                "WHERE load_forecasts.made_at_ms <= excluded.made_at_ms",
                (orjson.dumps(rows),))

        await self._db.write(write, op="upsert_forecast")

    async def forecast_rows(self, facility_id: str, *, start: datetime,
                            end: datetime) -> list[ForecastRow]:
        rows = await self._db.read(
            "SELECT ts_ms, predicted_load_kw, confidence_lower, confidence_upper, lower_95, "
            "upper_95, model, made_at_ms, weather_used FROM load_forecasts "
            "WHERE facility_id = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
            (facility_id, _ms(start), _ms(end)))
        return [ForecastRow(
            point=LoadForecastPoint(timestamp=_dt(r[0]), predicted_load_kw=r[1],
                                    confidence_lower=r[2], confidence_upper=r[3], lower_95=r[4],
                                    upper_95=r[5]),
            model=r[6], made_at=_dt(r[7]), weather_used=bool(r[8])) for r in rows]
