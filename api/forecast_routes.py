"""``GET /api/facilities/{facility_id}/forecast``: the facility's load forecast."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict

from api.context import DEPS, facility_or_404, json_response, parse_time
from api.endpoints import EVERY_ROLE, FACILITY_ID, Endpoint, Param
from api.errors import ApiError, bad_parameter
from schemas.forecast import LoadForecastPoint
from tables.ports.forecasts import ForecastRow

HORIZON = timedelta(hours=24)
QUARTER_S = 900
GRANULARITY_S = {"15min": 900, "1hour": 3600}


class FacilityForecast(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facility_id: str
    granularity: Literal["15min", "1hour"]
    start_time: AwareDatetime
    end_time: AwareDatetime
    model: str | None
    """The newest run's model among the points (null: no forecast yet)."""
    made_at: AwareDatetime | None
    weather_used: bool | None
    points: list[LoadForecastPoint]


def hourly(rows: list[ForecastRow]) -> list[LoadForecastPoint]:
    """Hours whose four quarter hours are all forecast, each field the mean of the four.
    The mean of the quarters' bounds is a slightly wide (conservative) bound for the hour's
    mean load: the quarters' errors are positively correlated but not identical."""
    by_hour: dict[datetime, list[LoadForecastPoint]] = {}
    for row in rows:
        ts = row.point.timestamp
        by_hour.setdefault(ts.replace(minute=0, second=0, microsecond=0), []).append(row.point)
    out = []
    for hour, pts in sorted(by_hour.items()):
        if len(pts) != 4:
            continue

        def mean(field: str, pts: list[LoadForecastPoint] = pts) -> float:
            return sum(float(getattr(p, field)) for p in pts) / 4

        out.append(LoadForecastPoint(
            timestamp=hour, predicted_load_kw=mean("predicted_load_kw"),
            confidence_lower=mean("confidence_lower"), confidence_upper=mean("confidence_upper"),
            lower_95=mean("lower_95"), upper_95=mean("upper_95")))
    return out


async def facility_forecast(request: web.Request) -> web.Response:
    """The next 24 h from ``start_time`` (default: the current quarter hour)."""
    deps = request.app[DEPS]
    facility = await facility_or_404(request)
    granularity = request.query.get("granularity", "15min")
    if granularity not in GRANULARITY_S:
        raise bad_parameter("granularity", "granularity must be 15min or 1hour",
                            value=granularity)
    step_s = GRANULARITY_S[granularity]
    start = parse_time(request, "start_time")
    if start is None:
        now_s = deps.clock().timestamp()
        start = datetime.fromtimestamp(now_s // QUARTER_S * QUARTER_S, tz=deps.clock().tzinfo)
    start_s = start.timestamp()
    if start_s % step_s:  # align to the granularity, rounding down
        start = datetime.fromtimestamp(start_s // step_s * step_s, tz=start.tzinfo)
    end = start + HORIZON
    if deps.forecasts is None:
        raise ApiError(503, "forecasts_unavailable", "this API has no forecast store")
    rows = await deps.forecasts.forecast_rows(facility.facility_id, start=start, end=end)
    newest = max(rows, key=lambda r: r.made_at, default=None)
    points = [r.point for r in rows] if granularity == "15min" else hourly(rows)
    body: dict[str, Any] = {
        "facility_id": facility.facility_id, "granularity": granularity,
        "start_time": start.isoformat(), "end_time": end.isoformat(),
        "model": newest.model if newest else None,
        "made_at": newest.made_at.isoformat() if newest else None,
        "weather_used": newest.weather_used if newest else None,
        "points": [p.model_dump(mode="json") for p in points],
    }
    return json_response(body)


ENDPOINTS = [
    Endpoint("GET", "/api/facilities/{facility_id}/forecast", facility_forecast,
             "Load forecast of a facility: the next 24 h with 80 % and 95 % bands", "forecasts",
             roles=EVERY_ROLE, response=FacilityForecast, errors=(404,), params=(
                 FACILITY_ID,
                 Param("start_time", "query", {"type": "string", "format": "date-time"},
                       "first interval (default: the current quarter hour); rounded down to "
                       "the granularity"),
                 Param("granularity", "query", {"type": "string", "enum": ["15min", "1hour"],
                                                "default": "15min"},
                       "15-minute points, or hourly means of four complete quarter hours"),
             ),
             description="Made every 15 minutes per facility (docs/forecasting.md). "
                         "confidence_lower/confidence_upper bound the 80 % interval, "
                         "lower_95/upper_95 the 95 % one. Points come from the newest run "
                         "covering each time; model, made_at and weather_used describe the "
                         "newest run among them. No forecast yet: empty points, null model."),
]
