"""The weather port: hourly outdoor temperature at a location. Adapters in
``connectors/weather/``: an offline climatology and WeatherAPI.com."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a facility is, in decimal degrees (WGS 84); what weather providers are asked for."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        # The comparisons are False for NaN, so NaN is refused too.
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"latitude must be within [-90, 90], got {self.latitude}")
        if not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"longitude must be within [-180, 180], got {self.longitude}")


class WeatherUnavailable(RuntimeError):
    """No weather for this request: the provider is disabled, unreachable, refused it, or has
    nothing for the range. Forecasts then go on without weather features and say so."""


class WeatherProvider(Protocol):
    """Hourly outdoor temperature at a location, for the past (to fit a model) and the next
    hours (to forecast). ``connectors/weather/``: an offline climatology (the embedded default)
    and WeatherAPI.com."""

    @property
    def source(self) -> str:
        """What the values are (``climatology``, ``weatherapi``, ``none``), for the forecast to
        say what it used."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def hourly_temperature_c(
        self, location: Location, *, start: datetime, end: datetime
    ) -> pd.Series[float]:
        """Temperature (°C) for every hour ``h`` with ``floor_hour(start) <= h < end``: a
        float64 series on an hourly, tz-UTC ``DatetimeIndex``. An hour the provider has no
        value for is NaN (gaps of up to 3 h are interpolated); nothing at all, or a failed
        request, raises ``WeatherUnavailable``. ``start`` and ``end`` must be timezone-aware
        and ``start < end`` (``ValueError`` otherwise)."""
        ...
