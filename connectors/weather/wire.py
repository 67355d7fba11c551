"""WeatherAPI.com's wire format: the ``q`` of a location, the hours of an answer, the
history requests a range of dates needs, the error body. Pure functions, no I/O."""

from __future__ import annotations

import math
from datetime import date, timedelta

import orjson

from tables.ports.weather import Location

HISTORY_CHUNK_DAYS = 30  # dates per history request, end_dt - dt <= 29 d (the API allows 30)


class MalformedAnswer(ValueError):
    """A 200 whose body is not the documented shape."""


def query_for(location: Location) -> str:
    """``q=lat,lon`` rounded to 2 decimals (~1.1 km), the unit of caching."""
    lat = round(location.latitude, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    lon = round(location.longitude, 2) + 0.0
    return f"{lat:.2f},{lon:.2f}"


def parse_forecastdays(body: object) -> list[tuple[date, dict[int, float]]]:
    """``forecast.forecastday[]`` of a forecast or history answer: each local date with its
    hours (``time_epoch`` -> ``temp_c``)."""
    forecast = body.get("forecast") if isinstance(body, dict) else None
    days = forecast.get("forecastday") if isinstance(forecast, dict) else None
    if not isinstance(days, list):
        raise MalformedAnswer("no forecast.forecastday list")
    parsed = []
    for day in days:
        if not isinstance(day, dict) or not isinstance(day.get("hour"), list):
            raise MalformedAnswer("a forecastday without an hour list")
        try:
            local_date = date.fromisoformat(str(day.get("date")))
        except ValueError:
            raise MalformedAnswer(f"forecastday date {day.get('date')!r}") from None
        hours: dict[int, float] = {}
        for hour in day["hour"]:
            epoch = hour.get("time_epoch") if isinstance(hour, dict) else None
            temp = hour.get("temp_c") if isinstance(hour, dict) else None
            if (isinstance(epoch, bool) or not isinstance(epoch, int) or isinstance(temp, bool)
                    or not isinstance(temp, int | float) or not math.isfinite(temp)):
                raise MalformedAnswer(f"an hour of {local_date} without time_epoch and temp_c")
            hours[epoch] = float(temp)
        parsed.append((local_date, hours))
    return parsed


def history_requests(dates: list[date], *, max_days: int = HISTORY_CHUNK_DAYS
                     ) -> list[tuple[date, date]]:
    """(dt, end_dt) per request: runs of consecutive ``dates`` (sorted), at most ``max_days``
    dates each."""
    spans: list[tuple[date, date]] = []
    for day in dates:
        if (spans and day == spans[-1][1] + timedelta(days=1)
                and (day - spans[-1][0]).days < max_days):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans


def error_body(payload: bytes) -> tuple[int | None, str]:
    """``{"error": {"code", "message"}}`` of a 4xx: (code, message), (None, "") if absent."""
    try:
        error = orjson.loads(payload).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None, ""
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return None, ""
    return int(error["code"]), str(error.get("message", ""))[:200]
