"""Weather for the load forecasts behind the ``WeatherProvider`` port (``tables/ports.py``):
an offline climatology (the embedded default), WeatherAPI.com, or none.

Whichever is chosen, a forecast that cannot get weather (``WeatherUnavailable``) is still
produced, without weather features, and says so.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from connectors.weather.offline import ClimatologyWeather, typical_temperature_c
from connectors.weather.weatherapi import WeatherApiClient, WeatherApiError
from tables.ports.weather import Location, WeatherProvider, WeatherUnavailable

__all__ = ["ClimatologyWeather", "Location", "NoWeather", "WeatherApiClient", "WeatherApiError",
           "WeatherProvider", "WeatherUnavailable", "typical_temperature_c"]


class NoWeather:
    """``SEMS_WEATHER_PROVIDER=none``: every request is ``WeatherUnavailable``."""

    source = "none"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def hourly_temperature_c(self, location: Location, *, start: datetime,
                                   end: datetime) -> pd.Series[float]:
        raise WeatherUnavailable("weather is switched off (SEMS_WEATHER_PROVIDER=none)")
