"""``Forecast`` -> the ``LoadForecast`` record the forecast agent publishes."""

from __future__ import annotations

from agents.forecasting.cycle import Forecast
from schemas.forecast import LoadForecast, LoadForecastPoint


def to_record(fc: Forecast, *, facility_id: str) -> LoadForecast:
    """The record of ``fc``: the 80 % band goes to ``confidence_lower``/``confidence_upper``
    (the column names of ``load_forecasts``), the 95 % band to ``lower_95``/``upper_95``."""
    points = [
        LoadForecastPoint(timestamp=p.timestamp, predicted_load_kw=p.predicted_load_kw,
                          confidence_lower=p.lower_80_kw, confidence_upper=p.upper_80_kw,
                          lower_95=p.lower_95_kw, upper_95=p.upper_95_kw)
        for p in fc.points
    ]
    return LoadForecast(facility_id=facility_id, made_at=fc.made_at, model=fc.model,
                        weather_used=fc.weather_used, step_s=int(fc.step.total_seconds()),
                        points=points)
