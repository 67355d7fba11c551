"""Typical-year temperature without a network: the embedded default weather provider.

A smooth climatology from latitude and longitude, the same for every year:

    T = mean(lat) - annual(lat) * cos(2π (t - 20 Jan) / year)
                  + diurnal(lat) * cos(2π (solar hour - 15) / 24)

``mean`` and ``annual`` (half the difference between the warmest and the coldest month) are
read off rounded zonal climatologies of land stations; ``annual`` is negative south of the
equator, so the coldest day falls on 20 January in the north and six months later in the south,
and the seasons change sign smoothly across the equator. The day is warmest at 15:00 and
coldest at 03:00 local solar time (UTC + longitude / 15 h). It knows no weather, only the
time of year and of day: enough for the pipeline and heating/cooling-degree features to run
everywhere, not a substitute for measured weather. Deterministic; no dependency.

pvlib's TMY files were the other candidate: pvlib is not installed and ships only a handful of
US sites, so it would add a dependency without covering other places.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from connectors.weather.hours import epoch_seconds, hourly_index, temperature_series
from tables.ports.weather import Location

DAY_S = 86_400
YEAR_DAYS = 365.2425
# Days from the Unix epoch to 2000-01-20 00:00 UTC, the coldest day of a northern year.
COLDEST_DAY = 10_976.0
WARMEST_SOLAR_HOUR = 15.0

# Rounded zonal climatology of land stations, by latitude (°): annual mean, annual half-range
# (signed: negative in the south), diurnal half-range, all in °C.
LATITUDES = np.array([-90, -75, -60, -45, -30, -15, 0, 15, 30, 45, 60, 75, 90], dtype=float)
MEAN_C = np.array([-49, -25, -3, 8, 17, 23, 26, 26, 20, 11, 3, -12, -18], dtype=float)
ANNUAL_C = np.array([-16, -12, -5, -5, -6, -3, 0, 3, 9, 12, 13, 15, 15], dtype=float)
DIURNAL_C = np.array([1, 2, 3, 4, 6, 5, 4, 5, 6, 5, 4, 2, 1], dtype=float)


def typical_temperature_c(location: Location,
                          index: pd.DatetimeIndex) -> npt.NDArray[np.float64]:
    """The climatological temperature at each instant of the tz-UTC ``index``."""
    lat = location.latitude
    mean = float(np.interp(lat, LATITUDES, MEAN_C))
    annual = float(np.interp(lat, LATITUDES, ANNUAL_C))
    diurnal = float(np.interp(lat, LATITUDES, DIURNAL_C))
    seconds = epoch_seconds(index).astype(np.float64)
    days = seconds / DAY_S
    solar_h = np.mod(seconds / 3600.0 + location.longitude / 15.0, 24.0)
    season = np.cos(2 * np.pi * (days - COLDEST_DAY) / YEAR_DAYS)
    day = np.cos(2 * np.pi * (solar_h - WARMEST_SOLAR_HOUR) / 24.0)
    values: npt.NDArray[np.float64] = mean - annual * season + diurnal * day
    return values


class ClimatologyWeather:
    """``WeatherProvider`` from ``typical_temperature_c``: never fails, never NaN."""

    source = "climatology"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def hourly_temperature_c(self, location: Location, *, start: datetime,
                                   end: datetime) -> pd.Series[float]:
        index = hourly_index(start, end)
        return temperature_series(typical_temperature_c(location, index), index)
