"""Weather without a network: the offline climatology, the hourly grid, the factory, and the
WeatherAPI client's pure helpers (its HTTP behaviour is tests/integration/test_weather_api.py)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from connectors.weather import (
    ClimatologyWeather,
    NoWeather,
    WeatherApiClient,
    typical_temperature_c,
)
from connectors.weather.hours import HOUR_S, hourly_index, onto_hours
from connectors.weather.wire import (
    MalformedAnswer,
    history_requests,
    parse_forecastdays,
    query_for,
)
from streams.settings import SettingsError, load_settings
from streams.stores import build_weather
from tables.ports.weather import Location, WeatherProvider, WeatherUnavailable

pytestmark = pytest.mark.unit

MUNICH = Location(48.14, 11.58)
SYDNEY = Location(-33.87, 151.21)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- the climatology ------------------------------------------------------------------------

@pytest.mark.parametrize(("location", "moment", "expected_c"), [
    # 45° N: mean 11, annual 12, diurnal 5. 20 Jan (coldest day) 15:00 solar (warmest hour):
    # 11 - 12 * cos(2π * 0.625 d / 365.2425 d) + 5 * 1 = 11 - 11.9993 + 5
    (Location(45, 0), at(2000, 1, 20, 15), 4.0007),
    # Half a year on, 03:00 solar: 11 - 12 * cos(2π * 182.125 / 365.2425) - 5 = 11 + 11.9996 - 5
    (Location(45, 0), at(2000, 7, 20, 3), 17.9996),
    # 30° S: mean 17, annual -6 (summer in January), diurnal 6; 09:00 UTC at 90° E is 15:00
    # solar: 17 + 6 * cos(2π * 0.375 / 365.2425) + 6
    (Location(-30, 90), at(2000, 1, 20, 9), 29.0),
    # Equator: mean 26, no season, diurnal 4; 03:00 UTC at 180° is 15:00 solar: 26 + 4
    (Location(0, 180), at(2000, 1, 20, 3), 30.0),
    # 60° N: mean 3, annual 13, diurnal 4; 09:00 UTC at 90° W is 03:00 solar: 3 - 13 - 4
    (Location(60, -90), at(2000, 1, 20, 9), -14.0),
])
def test_typical_temperature_by_hand(location: Location, moment: datetime,
                                     expected_c: float) -> None:
    value = typical_temperature_c(location, pd.DatetimeIndex([moment]))[0]
    assert value == pytest.approx(expected_c, abs=0.001)


async def year_of(location: Location) -> pd.Series[float]:
    return await ClimatologyWeather().hourly_temperature_c(
        location, start=at(2026, 1, 1), end=at(2027, 1, 1))


@pytest.mark.parametrize("latitude", range(-60, 71, 10))
@pytest.mark.parametrize("longitude", [-180, -90, 0, 90, 180])
async def test_values_are_plausible_everywhere(latitude: int, longitude: int) -> None:
    year = await year_of(Location(latitude, longitude))
    assert len(year) == 8760 and not year.isna().any()
    assert -40 <= year.min() and year.max() <= 45
    assert year.max() - year.min() < 50


async def test_seasons_are_opposite_in_the_southern_hemisphere() -> None:
    munich, sydney = await year_of(MUNICH), await year_of(SYDNEY)
    month = pd.DatetimeIndex(munich.index).month
    january, july = month == 1, month == 7
    assert munich[july].mean() - munich[january].mean() > 15
    assert sydney[january].mean() - sydney[july].mean() > 8
    assert 5 < munich.mean() < 15 and 13 < sydney.mean() < 22


async def test_afternoons_are_warmer_than_nights_in_local_solar_time() -> None:
    day = await ClimatologyWeather().hourly_temperature_c(
        SYDNEY, start=at(2026, 3, 1), end=at(2026, 3, 2))
    # Sydney is UTC + 10 h 05 min in solar time: warmest near 05:00 UTC, coldest near 17:00.
    assert day.idxmax() == pd.Timestamp("2026-03-01 05:00", tz="UTC")
    assert day.idxmin() == pd.Timestamp("2026-03-01 17:00", tz="UTC")


async def test_deterministic() -> None:
    start, end = at(2026, 11, 1), at(2026, 11, 29)
    a = await ClimatologyWeather().hourly_temperature_c(MUNICH, start=start, end=end)
    b = await ClimatologyWeather().hourly_temperature_c(MUNICH, start=start, end=end)
    pd.testing.assert_series_equal(a, b)


@pytest.mark.parametrize(("start", "end", "first", "hours"), [
    # from the hour holding start, to the last hour starting before end
    (at(2026, 3, 1, 10, 30), at(2026, 3, 1, 14), at(2026, 3, 1, 10), 4),
    (at(2026, 3, 1, 10), at(2026, 3, 1, 10, 1), at(2026, 3, 1, 10), 1),
    # 12:15 at UTC+2 is 10:15 UTC
    (datetime(2026, 3, 1, 12, 15, tzinfo=timezone(timedelta(hours=2))),
     datetime(2026, 3, 1, 16, tzinfo=timezone(timedelta(hours=2))), at(2026, 3, 1, 10), 4),
    # across a new year
    (at(2025, 12, 31, 22), at(2026, 1, 1, 2), at(2025, 12, 31, 22), 4),
])
async def test_hourly_utc_index_covers_the_range(start: datetime, end: datetime,
                                                 first: datetime, hours: int) -> None:
    series = await ClimatologyWeather().hourly_temperature_c(MUNICH, start=start, end=end)
    assert str(pd.DatetimeIndex(series.index).tz) == "UTC"
    assert series.index[0] == pd.Timestamp(first)
    assert len(series) == hours
    assert (series.index.to_series().diff().dropna() == pd.Timedelta(hours=1)).all()
    assert series.dtype == np.float64 and series.name == "temperature_c"
    assert not series.isna().any()


@pytest.mark.parametrize(("start", "end"), [
    (datetime(2026, 3, 1), at(2026, 3, 2)),  # naive start
    (at(2026, 3, 1), datetime(2026, 3, 2)),  # naive end
    (at(2026, 3, 2), at(2026, 3, 2)),  # empty
    (at(2026, 3, 2), at(2026, 3, 1)),  # reversed
])
def test_bad_ranges_are_refused(start: datetime, end: datetime) -> None:
    with pytest.raises(ValueError):
        hourly_index(start, end)


@pytest.mark.parametrize(("latitude", "longitude"), [
    (90.5, 0), (-91, 0), (0, 180.1), (0, -181), (math.nan, 0), (0, math.nan)])
def test_location_is_validated(latitude: float, longitude: float) -> None:
    with pytest.raises(ValueError):
        Location(latitude, longitude)


# -- the grid -------------------------------------------------------------------------------

H = HOUR_S


@pytest.mark.parametrize(("known", "hours", "expected"), [
    ({0: 10.0, H: 12.0}, [0, 1], [10.0, 12.0]),  # on the hours
    ({H // 2: 10.0, 3 * H // 2: 14.0}, [1], [12.0]),  # local hours at :30 UTC: halfway
    ({0: 0.0, 4 * H: 8.0}, [1, 2, 3], [2.0, 4.0, 6.0]),  # 3 missing hours: interpolated
    ({0: 0.0, 5 * H: 10.0}, [2], [math.nan]),  # 4 missing hours: a gap
    ({0: 5.0}, [-3, -4, 3, 4], [5.0, math.nan, 5.0, math.nan]),  # held up to 3 h at the ends
    ({}, [0, 1], [math.nan, math.nan]),
])
def test_onto_hours(known: dict[int, float], hours: list[int], expected: list[float]) -> None:
    index = pd.DatetimeIndex([pd.Timestamp(h * H, unit="s", tz="UTC") for h in hours])
    np.testing.assert_allclose(onto_hours(known, index), expected)


# -- the WeatherAPI client's pure helpers --------------------------------------------------

D = date(2026, 1, 1)


def days(*offsets: int) -> list[date]:
    return [D + timedelta(days=o) for o in offsets]


@pytest.mark.parametrize(("dates", "spans"), [
    ([], []),
    (days(0, 1, 2), [(D, D + timedelta(days=2))]),
    (days(0, 1, 3), [(D, D + timedelta(days=1)), (D + timedelta(days=3),) * 2]),
    # 45 days: 30 dates (end_dt - dt = 29 d), then 15
    (days(*range(45)), [(D, D + timedelta(days=29)),
                        (D + timedelta(days=30), D + timedelta(days=44))]),
])
def test_history_requests(dates: list[date], spans: list[tuple[date, date]]) -> None:
    assert history_requests(dates) == spans


@pytest.mark.parametrize(("location", "q"), [
    (Location(52.5163, 13.3777), "52.52,13.38"),
    (Location(-33.868, 151.209), "-33.87,151.21"),
    (Location(-0.004, -0.001), "0.00,0.00"),  # no "-0.00"
])
def test_query_rounds_to_two_decimals(location: Location, q: str) -> None:
    assert query_for(location) == q


def test_parse_forecastdays() -> None:
    body = {"forecast": {"forecastday": [
        {"date": "2026-11-27", "hour": [{"time_epoch": 1795734000, "time": "2026-11-27 00:00",
                                         "temp_c": 3}]}]}}
    assert parse_forecastdays(body) == [(date(2026, 11, 27), {1795734000: 3.0})]


@pytest.mark.parametrize("body", [
    {},  # no forecast
    {"forecast": {"forecastday": [{"date": "2026-11-27"}]}},  # no hours
    {"forecast": {"forecastday": [{"date": "27.11.2026", "hour": []}]}},  # not ISO
    {"forecast": {"forecastday": [{"date": "2026-11-27", "hour": [{"temp_c": 3}]}]}},
    {"forecast": {"forecastday": [{"date": "2026-11-27",
                                   "hour": [{"time_epoch": 1, "temp_c": True}]}]}},
])
def test_parse_forecastdays_refuses_malformed_answers(body: object) -> None:
    with pytest.raises(MalformedAnswer):
        parse_forecastdays(body)


# -- the factory and the settings -----------------------------------------------------------

@pytest.mark.parametrize(("environ", "kind", "source"), [
    ({}, ClimatologyWeather, "climatology"),
    ({"SEMS_WEATHER_PROVIDER": "none"}, NoWeather, "none"),
    ({"SEMS_WEATHER_PROVIDER": "weatherapi", "SEMS_WEATHER_API_KEY": "k"}, WeatherApiClient,
     "weatherapi"),
])
def test_build_weather_by_settings(environ: dict[str, str], kind: type,
                                   source: str) -> None:
    provider: WeatherProvider = build_weather(load_settings(environ))
    assert isinstance(provider, kind) and provider.source == source


def test_weatherapi_takes_url_key_and_timeout_from_settings() -> None:
    settings = load_settings({"SEMS_WEATHER_PROVIDER": "weatherapi",
                              "SEMS_WEATHER_API_KEY": "k", "SEMS_WEATHER_TIMEOUT_S": "2.5",
                              "SEMS_WEATHER_API_URL": "http://127.0.0.1:9/"})
    client = build_weather(settings)
    assert isinstance(client, WeatherApiClient)
    assert (client.base_url, client.timeout_s) == ("http://127.0.0.1:9", 2.5)
    assert "k" not in repr(settings.weather_api_key)


@pytest.mark.parametrize("environ", [
    {"SEMS_WEATHER_PROVIDER": "weatherapi"},  # no key
    {"SEMS_WEATHER_PROVIDER": "weatherapi", "SEMS_WEATHER_API_KEY": ""},  # empty key
])
def test_weatherapi_without_a_key_is_refused_at_start_up(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SEMS_WEATHER_API_KEY"):
        load_settings(environ)


@pytest.mark.parametrize(("key", "value"), [
    ("SEMS_WEATHER_PROVIDER", "openmeteo"), ("SEMS_WEATHER_TIMEOUT_S", "0")])
def test_bad_weather_settings_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        load_settings({key: value})


async def test_no_weather_is_always_unavailable() -> None:
    with pytest.raises(WeatherUnavailable, match="SEMS_WEATHER_PROVIDER=none"):
        await NoWeather().hourly_temperature_c(MUNICH, start=at(2026, 1, 1),
                                               end=at(2026, 1, 2))
