"""WeatherAPI.com: hourly temperature from ``history.json`` (the past) and ``forecast.json``
(the location's local today and the days after), stitched on ``time_epoch``.

As documented (https://www.weatherapi.com/docs/)::

    GET {base}/v1/forecast.json?key=K&q=LAT,LON&days=N&aqi=no&alerts=no
        N = 1..14 days from the location's local today
    GET {base}/v1/history.json?key=K&q=LAT,LON&dt=YYYY-MM-DD&end_dt=YYYY-MM-DD
        local dates, end_dt at most 30 days after dt

Both answer ``forecast.forecastday[] {date, hour[] {time_epoch, time, temp_c, ...}}`` where
``date`` and ``time`` are local and ``time_epoch`` is Unix seconds; errors are
``{"error": {"code": ..., "message": ...}}`` with HTTP 400 (1003 no q, 1005 bad URL, 1006 no
such location), 401 (1002 no key, 2006 invalid key) or 403 (2007 monthly quota, 2008 key
disabled, 2009 not on the key's plan).

A 4xx is not retried; a 5xx, a timeout (``timeout_s`` per request) or a connection error is
retried with exponential backoff and jitter, at most ``max_attempts`` (3) attempts in all. After
a failure that concerns every request (attempts exhausted, 401, 429, a 403 other than 2009)
every request fails fast for ``cooldown_s``, so a dead API or an exhausted quota costs one round
of attempts, not one per facility. The key travels in the query string, so it is redacted from
every message this module writes, and no aiohttp exception is chained to the errors it raises.

Caching: coordinates are rounded to 2 decimals (about 1 km) before they become ``q``, so
neighbouring facilities share answers. A forecast is reused for ``forecast_ttl_s`` (1 h); a
history day is kept for good once it is two local days old (yesterday is refreshed like the
forecast), least recently used first out beyond ``history_cache_days``. Concurrent calls for
the same ``q`` wait for each other, so 100 facilities polled at once ask once per location.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Self
from urllib.parse import quote, quote_plus

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from yarl import URL

from connectors.weather.hours import as_utc, hourly_index, onto_hours, temperature_series
from connectors.weather.wire import (
    MalformedAnswer,
    error_body,
    history_requests,
    parse_forecastdays,
    query_for,
)
from tables.ports.weather import Location, WeatherUnavailable

log = logging.getLogger(__name__)

FORECAST_DAYS_MIN = 3  # local today + 2 days: always at least 48 h beyond now
FORECAST_DAYS_MAX = 14
# A local date lies within [UTC - 12 h, UTC + 14 h] of the UTC instant.
_WEST = timedelta(hours=12)
_EAST = timedelta(hours=14)
_DAY = timedelta(days=1)
NOT_ON_PLAN = 2009  # 403: the key's plan does not include this request


class WeatherApiError(WeatherUnavailable):
    """WeatherAPI failed or refused: ``status`` is the HTTP status (None: no answer), ``code``
    WeatherAPI's error code when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable


@dataclass(slots=True)
class _Failure:
    detail: str
    retryable: bool
    status: int | None = None
    code: int | None = None


@dataclass(slots=True)
class _Forecast:
    fetched_at: float
    days: int
    first_date: date  # the location's local today when fetched
    hours: dict[int, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Day:
    expires_at: float
    epochs: npt.NDArray[np.int64]
    temps_c: npt.NDArray[np.float64]


def _affects_every_request(failure: _Failure) -> bool:
    """The API is down, the key is bad, disabled or out of quota, or we are throttled; not a
    refusal of this one request (400, or 403 error 2009: not on the key's plan)."""
    if failure.retryable or failure.status in (401, 429):
        return True
    return failure.status == 403 and failure.code != NOT_ON_PLAN


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WeatherApiClient:
    """``WeatherProvider`` on WeatherAPI.com. ``open()`` at start-up, ``close()`` at shutdown
    (or ``async with``)."""

    source = "weatherapi"

    def __init__(self, *, api_key: str, base_url: str = "https://api.weatherapi.com",
                 timeout_s: float = 10.0, max_attempts: int = 3, backoff_s: float = 0.5,
                 cooldown_s: float = 60.0, forecast_ttl_s: float = 3600.0,
                 history_cache_days: int = 20_000, now: Callable[[], datetime] = _utc_now,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        if not api_key:
            raise ValueError("WeatherAPI needs an API key")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._key = api_key
        # The key as given, and as it may appear in a URL (yarl's and urllib's encodings).
        in_url = URL.build(query={"key": api_key}).raw_query_string.removeprefix("key=")
        self._secrets = {api_key, in_url, quote(api_key, safe=""), quote_plus(api_key)}
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self.forecast_ttl_s = forecast_ttl_s
        self.history_cache_days = history_cache_days
        self._now = now
        self._clock = clock
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._forecasts: dict[str, _Forecast] = {}
        self._days: OrderedDict[tuple[str, date], _Day] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._down_until = -math.inf
        self._down_reason = ""

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def hourly_temperature_c(self, location: Location, *, start: datetime,
                                   end: datetime) -> pd.Series[float]:
        index = hourly_index(start, end)
        q = query_for(location)
        async with self._locks.setdefault(q, asyncio.Lock()):
            known = await self._known_hours(q, index[0].to_pydatetime(),
                                            index[-1].to_pydatetime())
        values = onto_hours(known, index)
        if np.isnan(values).all():
            raise WeatherApiError(f"WeatherAPI has no temperature for q={q} from "
                                  f"{index[0].isoformat()} to {index[-1].isoformat()}")
        return temperature_series(values, index)

    async def _known_hours(self, q: str, first: datetime, last: datetime) -> dict[int, float]:
        """Every hour the forecast and the history give for the local dates that [first, last]
        may touch, wherever the location is."""
        earliest_today = (as_utc(self._now(), name="now") - _WEST).date()
        first_date, last_date = (first - _WEST).date(), (last + _EAST).date()
        known: dict[int, float] = {}
        local_today = earliest_today
        history_last = last_date
        if last_date >= earliest_today:  # may reach the location's today: ask the forecast
            days = (last_date - earliest_today).days + 1
            forecast = await self._forecast(q, min(FORECAST_DAYS_MAX,
                                                   max(FORECAST_DAYS_MIN, days)))
            known.update(forecast.hours)
            local_today = forecast.first_date
            history_last = min(last_date, local_today - _DAY)
            if forecast.hours and first.timestamp() >= min(forecast.hours):
                return known
        if first_date <= history_last:
            known.update(await self._history(q, first_date, history_last, local_today))
        return known

    async def _forecast(self, q: str, days: int) -> _Forecast:
        cached = self._forecasts.get(q)
        if (cached is not None and cached.days >= days
                and self._clock() - cached.fetched_at < self.forecast_ttl_s):
            return cached
        params = {"q": q, "days": str(days), "aqi": "no", "alerts": "no"}
        parsed = self._parse("forecast", params, await self._get("forecast", params))
        if not parsed:
            raise WeatherApiError(f"WeatherAPI forecast q={q}: answered no forecast days")
        forecast = _Forecast(self._clock(), days, parsed[0][0])
        for _, hours in parsed:
            forecast.hours.update(hours)
        self._forecasts[q] = forecast
        return forecast

    async def _history(self, q: str, first: date, last: date,
                       local_today: date) -> dict[int, float]:
        known: dict[int, float] = {}
        missing = []
        day = first
        while day <= last:
            cached = self._days.get((q, day))
            if cached is not None and cached.expires_at > self._clock():
                self._days.move_to_end((q, day))
                known.update(zip(cached.epochs.tolist(), cached.temps_c.tolist(), strict=True))
            else:
                missing.append(day)
            day += _DAY
        for dt, end_dt in history_requests(missing):
            params = {"q": q, "dt": dt.isoformat()}
            if end_dt > dt:
                params["end_dt"] = end_dt.isoformat()
            for local_date, hours in self._parse("history", params,
                                                 await self._get("history", params)):
                if dt <= local_date <= end_dt and hours:
                    known.update(hours)
                    settled = local_date < local_today - _DAY
                    self._remember(q, local_date, hours, settled=settled)
        return known

    def _remember(self, q: str, local_date: date, hours: dict[int, float], *,
                  settled: bool) -> None:
        expires_at = math.inf if settled else self._clock() + self.forecast_ttl_s
        epochs = np.fromiter(hours.keys(), dtype=np.int64, count=len(hours))
        temps = np.fromiter(hours.values(), dtype=np.float64, count=len(hours))
        self._days[(q, local_date)] = _Day(expires_at, epochs, temps)
        self._days.move_to_end((q, local_date))
        while len(self._days) > self.history_cache_days:
            self._days.popitem(last=False)

    def _parse(self, endpoint: str, params: dict[str, str],
               body: object) -> list[tuple[date, dict[int, float]]]:
        try:
            return parse_forecastdays(body)
        except MalformedAnswer as exc:
            raise WeatherApiError(self._redact(
                f"WeatherAPI {endpoint} q={params['q']}: malformed answer: {exc}")) from None

    async def _get(self, endpoint: str, params: dict[str, str]) -> object:
        """The JSON body of a 200, after at most ``max_attempts`` attempts."""
        what = f"WeatherAPI {endpoint} q={params['q']}"
        if self._session is None:
            raise RuntimeError("WeatherApiClient is not open: call open() at start-up")
        if self._clock() < self._down_until:
            raise WeatherApiError(self._redact(
                f"{what}: not asked, WeatherAPI failed recently ({self._down_reason})"))
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(self._session, endpoint, params)
            if not isinstance(outcome, _Failure):
                return outcome
            if not outcome.retryable or attempt >= self.max_attempts:
                break
            delay_s = self._backoff_s(attempt)
            log.warning("%s: %s (attempt %d of %d); retrying in %.2f s", what,
                        outcome.detail, attempt, self.max_attempts, delay_s)
            await asyncio.sleep(delay_s)
        detail = outcome.detail + (f", {attempt} attempts" if outcome.retryable else "")
        if _affects_every_request(outcome):
            self._down_until = self._clock() + self.cooldown_s
            self._down_reason = detail
        message = self._redact(f"{what}: {detail}")
        log.warning("%s", message)
        raise WeatherApiError(message, status=outcome.status, code=outcome.code,
                              retryable=outcome.retryable)

    async def _attempt(self, session: aiohttp.ClientSession, endpoint: str,
                       params: dict[str, str]) -> object:
        """The decoded body of a 200, or a ``_Failure`` (built outside the ``except`` so no
        exception holding the URL, and the key, is chained to what we raise)."""
        url = f"{self.base_url}/v1/{endpoint}.json"
        failure: _Failure | None = None
        try:
            async with session.get(url, params={"key": self._key, **params}) as response:
                status = response.status
                payload = await response.read()
        except TimeoutError:
            failure = _Failure(f"no answer within {self.timeout_s:g} s", retryable=True)
        except aiohttp.ClientError as exc:
            failure = _Failure(self._redact(f"{type(exc).__name__}: {exc}"), retryable=True)
        if failure is not None:
            return failure
        if status == 200:
            try:
                body: object = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return _Failure("HTTP 200 with a body that is not JSON", retryable=False,
                                status=status)
            return body
        if status >= 500:
            return _Failure(f"HTTP {status}", retryable=True, status=status)
        code, message = error_body(payload)
        detail = f"HTTP {status}" if code is None else f"HTTP {status}, error {code}: {message}"
        return _Failure(self._redact(detail), retryable=False, status=status, code=code)

    def _backoff_s(self, attempt: int) -> float:
        """Half of ``backoff_s * 2**(attempt-1)`` fixed, half random ("equal jitter")."""
        ceiling_s: float = self.backoff_s * 2.0 ** (attempt - 1)
        return ceiling_s / 2 + self._rng.uniform(0.0, ceiling_s / 2)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
