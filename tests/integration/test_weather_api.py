"""The WeatherAPI.com client against a real HTTP server on 127.0.0.1 that speaks WeatherAPI's
documented JSON (https://www.weatherapi.com/docs/): local dates and hours, ``time_epoch`` in
Unix seconds, ``{"error": {"code", "message"}}`` with 400/401/403. Failures are scripted per
request; the server counts what reaches it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
from aiohttp import web

from connectors.weather import ClimatologyWeather, WeatherApiClient, WeatherApiError
from tables.ports.weather import Location, WeatherProvider, WeatherUnavailable
from tests.servers import free_port

pytestmark = pytest.mark.integration

KEY = "k3y-Sekr3t/42+x"  # has characters that URL-encode, so the encoded form is checked too
NOW = datetime(2026, 11, 27, 17, 30, tzinfo=UTC)
BERLIN = Location(52.5163, 13.3777)  # q=52.52,13.38
HANG = "hang"  # a scripted step: accept the request and never answer


def temp_c(epoch: int) -> float:
    """The fake's weather: distinct per hour, so a shifted hour shows."""
    hour = epoch // 3600
    return round(5.0 + (hour % 24) * 0.5 + (hour // 24 % 7) * 0.1, 2)


@dataclass
class FakeWeatherApi:
    """WeatherAPI's forecast.json and history.json for one location ``utc_offset`` east of UTC."""

    utc_offset: timedelta = timedelta(hours=1)
    # per request: an HTTP status (with WeatherAPI's usual error code), (status, code), or HANG
    script: list[int | str | tuple[int, int]] = field(default_factory=list)
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/forecast.json", self.forecast)
        app.router.add_get("/v1/history.json", self.history)
        return app

    def count(self, endpoint: str) -> int:
        return sum(1 for path, _ in self.hits if path == endpoint)

    @staticmethod
    def error(status: int, code: int, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    async def scripted(self, request: web.Request, endpoint: str) -> web.Response | None:
        self.hits.append((endpoint, dict(request.query)))
        if self.script:
            step = self.script.pop(0)
            if step == HANG:
                await self.release.wait()
                return web.Response(status=503)
            if isinstance(step, tuple):
                return self.error(step[0], step[1], "API key does not have access to the "
                                  "resource. Please check pricing page.")
            status = int(step)
            if status == 401:
                return self.error(401, 2006, "API key is invalid.")
            if status == 403:
                return self.error(403, 2007, "API key has exceeded calls per month quota.")
            if status == 400:
                return self.error(400, 1006, "No matching location found.")
            return web.Response(status=status, text="<html>Service Unavailable</html>",
                                content_type="text/html")
        if request.query.get("key") != KEY:
            return self.error(401, 2006, "API key is invalid.")
        if not request.query.get("q"):
            return self.error(400, 1003, "Parameter q is missing.")
        return None

    def local_today(self) -> date:
        return (NOW + self.utc_offset).date()

    def day(self, local_date: date) -> dict[str, object]:
        midnight = datetime.combine(local_date, datetime.min.time(), UTC) - self.utc_offset
        instants = [midnight + timedelta(hours=h) for h in range(24)]
        temps = [temp_c(int(at.timestamp())) for at in instants]
        hours = [{"time_epoch": int(at.timestamp()),
                  "time": (at + self.utc_offset).strftime("%Y-%m-%d %H:%M"),
                  "temp_c": temp, "temp_f": round(temp * 1.8 + 32, 1),
                  "is_day": int(6 <= h < 18), "humidity": 80, "wind_kph": 11.2,
                  "condition": {"text": "Overcast", "code": 1009}}
                 for h, (at, temp) in enumerate(zip(instants, temps, strict=True))]
        return {"date": local_date.isoformat(), "date_epoch": int(midnight.timestamp()),
                "day": {"maxtemp_c": max(temps), "mintemp_c": min(temps)},
                "astro": {"sunrise": "07:45 AM"}, "hour": hours}

    def location(self) -> dict[str, object]:
        local = NOW + self.utc_offset
        return {"name": "Berlin", "region": "Berlin", "country": "Germany", "lat": 52.52,
                "lon": 13.38, "tz_id": "Europe/Berlin", "localtime_epoch": int(NOW.timestamp()),
                "localtime": local.strftime("%Y-%m-%d %H:%M")}

    async def forecast(self, request: web.Request) -> web.Response:
        if (refused := await self.scripted(request, "forecast")) is not None:
            return refused
        days = int(request.query.get("days", "1"))
        if not 1 <= days <= 14:
            return self.error(400, 1005, "API request url is invalid.")
        today = self.local_today()
        return web.json_response({
            "location": self.location(), "current": {"temp_c": temp_c(int(NOW.timestamp()))},
            "forecast": {"forecastday": [self.day(today + timedelta(days=i))
                                         for i in range(days)]}})

    async def history(self, request: web.Request) -> web.Response:
        if (refused := await self.scripted(request, "history")) is not None:
            return refused
        first = date.fromisoformat(request.query["dt"])
        last = date.fromisoformat(request.query.get("end_dt", request.query["dt"]))
        if first >= self.local_today() or last >= self.local_today() or last < first:
            return self.error(400, 1005, "API request url is invalid.")
        if (last - first).days > 30:
            return self.error(400, 1005, "API request url is invalid.")
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        return web.json_response({"location": self.location(),
                                  "forecast": {"forecastday": [self.day(d) for d in days]}})


@dataclass
class Served:
    fake: FakeWeatherApi
    url: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = FakeWeatherApi()
    # no access log: it is WeatherAPI's log (with the key in its URLs), not ours
    runner = web.AppRunner(fake.app(), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Served(fake, f"http://127.0.0.1:{port}")
    fake.release.set()  # let hanging handlers finish before the server stops
    await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def client_for(url: str, *, key: str = KEY, timeout_s: float = 2.0,
               clock: Callable[[], float] | None = None) -> WeatherApiClient:
    return WeatherApiClient(api_key=key, base_url=url, timeout_s=timeout_s, backoff_s=0.01,
                            now=lambda: NOW, clock=clock or FakeClock(), rng=random.Random(7))


def expected(index: pd.Index[Any]) -> list[float]:
    return [temp_c(int(t.timestamp())) for t in pd.DatetimeIndex(index)]


# 18:00 today to 17:00 tomorrow UTC: 24 hours, all in the forecast
TOMORROW = (NOW + timedelta(minutes=30), NOW + timedelta(hours=24, minutes=30))


async def test_forecast_is_parsed_on_utc_hours(served: Served) -> None:
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert str(pd.DatetimeIndex(series.index).tz) == "UTC" and len(series) == 24
    assert series.index[0] == pd.Timestamp("2026-11-27 18:00", tz="UTC")
    # time_epoch, not the local "time", places each value: an hour off would change it
    assert series.tolist() == expected(series.index)
    (endpoint, query), = served.fake.hits
    assert endpoint == "forecast"
    assert query == {"key": KEY, "q": "52.52,13.38", "days": "3", "aqi": "no", "alerts": "no"}


@pytest.mark.parametrize("utc_offset_h", [1, -5, 13])  # Berlin, New York, Tonga in November
async def test_history_and_forecast_are_stitched(served: Served, utc_offset_h: int) -> None:
    served.fake.utc_offset = timedelta(hours=utc_offset_h)
    start, end = NOW - timedelta(days=3), NOW + timedelta(days=1)
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=start, end=end)
    # the hours holding start and end, and every hour between
    index = pd.date_range("2026-11-24 17:00", "2026-11-28 17:00", freq="h", tz="UTC")
    pd.testing.assert_index_equal(series.index, index, check_exact=True, exact="equiv")
    assert series.tolist() == expected(index)
    assert (served.fake.count("forecast"), served.fake.count("history")) == (1, 1)


async def test_half_hour_time_zones_are_interpolated_onto_utc_hours(served: Served) -> None:
    served.fake.utc_offset = timedelta(hours=5, minutes=30)  # India: local hours at :30 UTC
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert not series.isna().any()
    for t, value in zip(pd.DatetimeIndex(series.index), series.tolist(), strict=True):
        epoch = int(t.timestamp())
        assert value == pytest.approx((temp_c(epoch - 1800) + temp_c(epoch + 1800)) / 2)


async def test_long_history_is_asked_in_chunks_of_at_most_30_days(served: Served) -> None:
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=NOW - timedelta(days=45),
                                                   end=NOW - timedelta(days=2))
    assert series.tolist() == expected(series.index)
    spans = [(date.fromisoformat(q["dt"]), date.fromisoformat(q.get("end_dt", q["dt"])))
             for endpoint, q in served.fake.hits if endpoint == "history"]
    assert len(spans) == 2 and all(0 <= (last - first).days <= 29 for first, last in spans)
    assert spans[1][0] == spans[0][1] + timedelta(days=1)


async def test_beyond_the_forecast_horizon_is_nan(served: Served) -> None:
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=NOW,
                                                   end=NOW + timedelta(days=20))
    assert served.fake.hits[0][1]["days"] == "14"
    # 14 local days from 27 Nov (UTC+1): values to 10 Dec 22:00 UTC, held 3 h, then NaN
    assert series.last_valid_index() == pd.Timestamp("2026-12-11 01:00", tz="UTC")
    assert series[:"2026-12-11 01:00"].notna().all()


async def test_retries_a_503_then_succeeds(served: Served,
                                           caplog: pytest.LogCaptureFixture) -> None:
    served.fake.script = [503]
    caplog.set_level(logging.DEBUG)
    async with client_for(served.url) as client:
        series = await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert len(served.fake.hits) == 2
    assert series.tolist() == expected(series.index)
    assert "HTTP 503 (attempt 1 of 3)" in caplog.text


async def test_gives_up_after_three_attempts(served: Served) -> None:
    served.fake.script = [500, 502, 503, 503]
    async with client_for(served.url) as client:
        with pytest.raises(WeatherApiError) as raised:
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
        assert len(served.fake.hits) == 3
        assert raised.value.retryable and raised.value.status == 503
        assert "3 attempts" in str(raised.value)
        # then it stays away for the cooldown instead of trying again per facility
        with pytest.raises(WeatherUnavailable, match="failed recently"):
            await client.hourly_temperature_c(Location(48.14, 11.58), start=TOMORROW[0],
                                              end=TOMORROW[1])
        assert len(served.fake.hits) == 3


@pytest.mark.parametrize(("status", "code"), [
    (401, 2006),  # invalid key
    (403, 2007),  # monthly quota exceeded
    (400, 1006),  # no such location
])
async def test_client_errors_are_not_retried(served: Served, status: int, code: int) -> None:
    served.fake.script = [status]
    async with client_for(served.url) as client:
        with pytest.raises(WeatherApiError) as raised:
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert len(served.fake.hits) == 1
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (
        status, code, False)
    assert f"error {code}" in str(raised.value)


@pytest.mark.parametrize(("step", "others_asked"), [
    ((403, 2009), True),  # this request is not on the plan: others may still be
    ((403, 2007), False),  # the monthly quota is spent: nothing will be answered
    (401, False),  # the key is invalid
    (400, True),  # no such location
])
async def test_only_failures_of_every_request_stop_the_others(
        served: Served, step: int | tuple[int, int], others_asked: bool) -> None:
    served.fake.script = [step]
    async with client_for(served.url) as client:
        with pytest.raises(WeatherApiError):
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
        try:
            await client.hourly_temperature_c(Location(48.14, 11.58), start=TOMORROW[0],
                                              end=TOMORROW[1])
        except WeatherApiError as exc:
            assert "failed recently" in str(exc)
    assert len(served.fake.hits) == (2 if others_asked else 1)


async def test_a_wrong_key_is_refused_by_the_server_and_not_retried(served: Served) -> None:
    async with client_for(served.url, key="not-the-key") as client:
        with pytest.raises(WeatherApiError, match="HTTP 401, error 2006"):
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert len(served.fake.hits) == 1


async def test_an_unanswered_request_times_out_and_is_retried(served: Served) -> None:
    served.fake.script = [HANG, HANG, HANG]
    async with client_for(served.url, timeout_s=0.2) as client:
        with pytest.raises(WeatherApiError, match=r"no answer within 0\.2 s, 3 attempts"):
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert len(served.fake.hits) == 3


async def test_a_timeout_then_an_answer_succeeds(served: Served) -> None:
    served.fake.script = [HANG]
    async with client_for(served.url, timeout_s=0.2) as client:
        series = await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    assert len(served.fake.hits) == 2 and series.notna().all()


def messages(exc: BaseException) -> str:
    """Everything an exception could print: its text, repr, attributes and chain."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(vars(seen)) if hasattr(seen, "__dict__") else ""]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


async def test_the_key_never_appears_in_errors_or_logs(served: Served,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    encoded = ("k3y-Sekr3t%2F42%2Bx", "k3y-Sekr3t/42%2Bx")  # urllib's and yarl's
    failures: list[BaseException] = []
    for script, timeout_s in (([503, 503, 503], 2.0), ([401], 2.0), ([HANG] * 3, 0.2)):
        served.fake.script = list(script)
        async with client_for(served.url, timeout_s=timeout_s) as client:
            with pytest.raises(WeatherUnavailable) as raised:
                await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
        failures.append(raised.value)
    async with client_for(f"http://127.0.0.1:{free_port()}") as client:  # nothing listens
        with pytest.raises(WeatherUnavailable) as refused:
            await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    failures.append(refused.value)
    assert "ClientConnectorError" in str(refused.value)
    for failure in failures:
        text = messages(failure)
        assert all(secret not in text for secret in (KEY, *encoded)), text
        assert failure.__cause__ is None and failure.__context__ is None
    assert caplog.records
    assert all(secret not in caplog.text for secret in (KEY, *encoded))


async def test_answers_are_cached_and_shared_by_neighbours(served: Served) -> None:
    clock = FakeClock()
    start, end = NOW - timedelta(days=5), NOW + timedelta(days=1)
    async with client_for(served.url, clock=clock) as client:
        first = await client.hourly_temperature_c(BERLIN, start=start, end=end)
        assert len(served.fake.hits) == 2  # forecast + history
        again = await client.hourly_temperature_c(BERLIN, start=start, end=end)
        # 300 m away, same q after rounding; a shorter range is inside what is cached
        near = await client.hourly_temperature_c(Location(52.5180, 13.3800), start=NOW,
                                                 end=NOW + timedelta(hours=6))
        assert len(served.fake.hits) == 2
        pd.testing.assert_series_equal(first, again)
        assert near.tolist() == expected(near.index)
        # An hour later the forecast is asked again, and yesterday's history; older days not.
        clock.now_s += 3601
        await client.hourly_temperature_c(BERLIN, start=start, end=end)
        refreshed = served.fake.hits[2:]
        assert [endpoint for endpoint, _ in refreshed] == ["forecast", "history"]
        assert refreshed[1][1]["dt"] == "2026-11-26" and "end_dt" not in refreshed[1][1]


async def test_concurrent_calls_for_one_location_ask_once(served: Served) -> None:
    async with client_for(served.url) as client:
        results = await asyncio.gather(*(
            client.hourly_temperature_c(Location(52.52 + i * 0.001, 13.38), start=TOMORROW[0],
                                        end=TOMORROW[1]) for i in range(4)))
    assert len(served.fake.hits) == 1
    assert all(np.array_equal(r.to_numpy(), results[0].to_numpy()) for r in results)


async def test_a_malformed_answer_is_unavailable_and_not_retried(served: Served) -> None:
    async def broken(request: web.Request) -> web.Response:
        served.fake.hits.append(("forecast", dict(request.query)))
        return web.json_response({"forecast": {"forecastday": [{"date": "2026-11-27",
                                                                 "hour": [{"temp_c": 1}]}]}})

    app = web.Application()
    app.router.add_get("/v1/forecast.json", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with client_for(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(WeatherApiError, match="malformed answer"):
                await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])
    finally:
        await runner.cleanup()
    assert len(served.fake.hits) == 1


async def test_using_a_closed_client_is_a_programming_error() -> None:
    client = client_for("http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="not open"):
        await client.hourly_temperature_c(BERLIN, start=TOMORROW[0], end=TOMORROW[1])


@pytest.mark.parametrize("kind", ["offline", "weatherapi"])
async def test_every_provider_keeps_the_port_contract(served: Served, kind: str) -> None:
    """The same promises from each adapter: hourly float64 values on a tz-UTC index from the
    hour holding start to the last hour before end, past and future alike."""
    provider: WeatherProvider = (ClimatologyWeather() if kind == "offline"
                                 else client_for(served.url))
    start, end = NOW - timedelta(days=2, minutes=10), NOW + timedelta(hours=36)
    await provider.open()
    try:
        series = await provider.hourly_temperature_c(BERLIN, start=start, end=end)
    finally:
        await provider.close()
    index = pd.DatetimeIndex(series.index)
    assert str(index.tz) == "UTC" and series.dtype == np.float64
    assert index[0] == pd.Timestamp("2026-11-25 17:00", tz="UTC")
    assert index[-1] == pd.Timestamp("2026-11-29 05:00", tz="UTC")
    assert (index.to_series().diff().dropna() == pd.Timedelta(hours=1)).all()
    assert series.notna().all() and provider.source in {"climatology", "weatherapi"}
