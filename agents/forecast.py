"""Forecast agent: every 15 minutes, each facility's next 24 h with 80 % and 95 % bands.

The thin shell around ``agents/forecasting`` (pure): it reads a facility's 15-minute rollups
and weather, runs the forecaster, stores the forecast (``load_forecasts``, the newest run wins)
and publishes it on the ``load-forecasts`` stream.

Model choice (a rolling-origin backtest: 5-10 s per facility) is kept apart from the 15-minute
cycle (a refit of the chosen model: about 25 ms). A facility without a choice yet, or with one
older than ``reselect_s``, is forecast with the default model meanwhile and queued for a
choice, which a background task makes one facility at a time between cycles. CPU work runs
on one worker
thread, so the event loop (rollups, the API) keeps running while models fit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol, TypeVar

import pandas as pd

from agents.forecasting import (
    Choice,
    Forecast,
    ForecastInputError,
    InsufficientHistory,
    choose_model,
    forecast,
)
from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility
from schemas.rollup import Scope, WindowName
from streams.logs import new_trace_id, trace_id_var
from streams.metrics import Metrics
from tables.ports import (
    ForecastStore,
    Location,
    MetadataStore,
    StoreUnavailable,
    TimeSeriesStore,
    WeatherProvider,
    WeatherUnavailable,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

STEP = timedelta(minutes=15)
HORIZON = timedelta(hours=24)
DEFAULT_MODEL = "fourier_ols"
"""Used until a facility's backtest has chosen; the fallback chain replaces it while the
history is too short for it."""
MIN_COVERAGE = 0.5
"""15-minute rollups covering less of their window than this are left out as gaps: their mean
comes from too few samples to stand for the quarter hour."""


class ForecastSource(TimeSeriesStore, MetadataStore, ForecastStore, Protocol):
    """What the agent reads and writes: rollups, facilities, forecasts."""


Publish = Callable[[LoadForecast], Awaitable[None]]


@dataclass
class ForecastService:
    store: ForecastSource
    weather: WeatherProvider
    publish: Publish
    metrics: Metrics
    clock: Callable[[], datetime]
    history_days: int = 56
    reselect_s: float = 86_400.0
    _choices: dict[str, tuple[float, Choice]] = field(default_factory=dict)
    _to_choose: asyncio.Queue[Facility] = field(default_factory=asyncio.Queue)
    _queued: set[str] = field(default_factory=set)
    _no_cycle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no cycle runs: choices (seconds each) wait for it, so that they never delay
    a cycle by more than the one choice under way."""
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="forecast"))

    async def run_cycle(self, facilities: Iterable[Facility] | None = None) -> list[LoadForecast]:
        """Forecast each facility (all registered ones by default); one facility's failure is
        logged and counted and does not stop the others."""
        self._no_cycle.clear()
        try:
            return await self._cycle(facilities)
        finally:
            self._no_cycle.set()

    async def _cycle(self, facilities: Iterable[Facility] | None) -> list[LoadForecast]:
        now = self.clock()
        started = time.perf_counter()
        if facilities is None:
            facilities = await self.store.facilities()
        made: list[LoadForecast] = []
        for facility in facilities:
            trace_id_var.set(new_trace_id())  # one per facility forecast, on its log records
            try:
                made.append(await self.forecast_facility(facility, now))
            except InsufficientHistory:
                self.metrics.forecasts.labels("no_history").inc()
                log.info("forecast %s: no load history yet", facility.facility_id)
            except ForecastInputError as exc:
                self.metrics.forecasts.labels("bad_input").inc()
                log.warning("forecast %s: %s", facility.facility_id, exc)
            except StoreUnavailable as exc:
                self.metrics.forecasts.labels("store_unavailable").inc()
                log.warning("forecast %s: store unavailable: %s", facility.facility_id, exc)
            except Exception:  # a model that fails on one facility's data must not stop others
                self.metrics.forecasts.labels("error").inc()
                log.exception("forecast %s failed", facility.facility_id)
        self.metrics.forecast_cycle_duration.observe(time.perf_counter() - started)
        return made

    async def forecast_facility(self, facility: Facility, now: datetime) -> LoadForecast:
        started = time.perf_counter()
        history = await self.history(facility.facility_id, now)
        temperature = await self.temperature(facility, now)
        choice = self._fresh_choice(facility)
        result: Forecast = await self._in_worker(
            forecast, history, now=now, timezone=facility.timezone, temperature_c=temperature,
            country=facility.country, model=None if choice else DEFAULT_MODEL, choice=choice,
            horizon=HORIZON, step=STEP)
        record = to_record(facility.facility_id, result)
        await self.store.upsert_forecast(record)
        await self.publish(record)
        m = self.metrics
        m.forecasts.labels("ok").inc()
        m.forecast_duration.observe(time.perf_counter() - started)
        m.forecast_last_success.labels(facility.facility_id).set(record.made_at.timestamp())
        m.forecast_weather_used.labels(facility.facility_id).set(1 if result.weather_used else 0)
        return record

    async def history(self, facility_id: str, now: datetime) -> pd.Series:
        """Mean kW of the facility's closed 15-minute windows over ``history_days``."""
        start = now - timedelta(days=self.history_days)
        rows = await self.store.rollups(scope=Scope.FACILITY, scope_id=facility_id,
                                        window=WindowName.MIN_15, start=start, end=now,
                                        limit=self.history_days * 96 + 96)
        kept = [r for r in rows if r.coverage >= MIN_COVERAGE]
        index = pd.DatetimeIndex([r.window_start for r in kept], tz="UTC")
        return pd.Series([r.avg_power_kw for r in kept], index=index, dtype="float64")

    async def temperature(self, facility: Facility, now: datetime) -> pd.Series | None:
        """Hourly °C over the history and the horizon, or None (the forecast then runs without
        weather and says so)."""
        if facility.latitude is None or facility.longitude is None:
            return None
        try:
            return await self.weather.hourly_temperature_c(
                Location(facility.latitude, facility.longitude),
                start=now - timedelta(days=self.history_days), end=now + HORIZON + STEP)
        except WeatherUnavailable as exc:
            self.metrics.forecast_weather_failures.inc()
            log.warning("forecast %s: no weather (%s); forecasting without it",
                        facility.facility_id, exc)
            return None

    def _fresh_choice(self, facility: Facility) -> Choice | None:
        held = self._choices.get(facility.facility_id)
        if held is None or time.monotonic() - held[0] > self.reselect_s:
            if facility.facility_id not in self._queued:
                self._queued.add(facility.facility_id)
                self._to_choose.put_nowait(facility)
        return held[1] if held is not None else None

    async def choose_forever(self) -> None:
        """Make the queued model choices, one facility at a time."""
        self._no_cycle.set()
        while True:
            facility = await self._to_choose.get()
            await self._no_cycle.wait()
            try:
                await self.choose(facility)
            except (ForecastInputError, StoreUnavailable) as exc:
                log.info("model choice for %s postponed: %s", facility.facility_id, exc)
            finally:
                self._queued.discard(facility.facility_id)

    async def choose(self, facility: Facility) -> Choice:
        now = self.clock()
        history = await self.history(facility.facility_id, now)
        temperature = await self.temperature(facility, now)
        started = time.perf_counter()
        choice: Choice = await self._in_worker(
            choose_model, history, temperature_c=temperature, timezone=facility.timezone,
            country=facility.country, now=now, step=STEP, horizon=HORIZON)
        self.metrics.forecast_choice_duration.observe(time.perf_counter() - started)
        self._choices[facility.facility_id] = (time.monotonic(), choice)
        log.info("forecast model for %s: %s", facility.facility_id, choice.model)
        return choice

    async def _in_worker(self, fn: Callable[..., R], /, *args: object,
                         **kwargs: object) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def to_record(facility_id: str, result: Forecast) -> LoadForecast:
    return LoadForecast(
        facility_id=facility_id, made_at=result.made_at, model=result.model,
        weather_used=result.weather_used, step_s=round(result.step.total_seconds()),
        points=[LoadForecastPoint(timestamp=p.timestamp, predicted_load_kw=p.predicted_load_kw,
                                  confidence_lower=p.lower_80_kw, confidence_upper=p.upper_80_kw,
                                  lower_95=p.lower_95_kw, upper_95=p.upper_95_kw)
                for p in result.points])


def next_run(now: datetime, *, interval_s: float, delay_s: float) -> datetime:
    """The next quarter-hour boundary plus ``delay_s`` (time for the quarter's rollup to
    close) after ``now``."""
    epoch_s = now.timestamp()
    boundary_s = (epoch_s - delay_s) // interval_s * interval_s + interval_s + delay_s
    return datetime.fromtimestamp(boundary_s, tz=now.tzinfo)


async def forecast_agent(service: ForecastService, *, interval_s: float, delay_s: float,
                         owned: Callable[[list[Facility]], list[Facility]] | None = None,
                         poll_s: float = 5.0, retry_s: float = 60.0) -> None:
    """One forecast per facility per period of ``interval_s`` on the wall clock (periods start
    ``delay_s`` after the boundary), the first at start-up. Every ``poll_s`` it looks for
    facilities not yet forecast in this period: new ones, ones this worker was just given
    (``owned`` picks a worker's share in the kafka runtime), and failed ones, which are tried
    again after ``retry_s`` (a new facility has no history for its first minutes)."""
    done: set[str] = set()
    retry_at: dict[str, float] = {}  # monotonic s
    due = service.clock()
    while True:
        now = service.clock()
        if now >= due:
            done.clear()
            retry_at.clear()
            due = next_run(now, interval_s=interval_s, delay_s=delay_s)
        facilities = await service.store.facilities()
        if owned is not None:
            facilities = owned(facilities)
        mono_s = time.monotonic()
        todo = [f for f in facilities if f.facility_id not in done
                and retry_at.get(f.facility_id, mono_s) <= mono_s]
        if todo:
            made = {r.facility_id for r in await service.run_cycle(todo)}
            done.update(made)
            later = time.monotonic() + retry_s
            retry_at.update({f.facility_id: later for f in todo if f.facility_id not in made})
        wait_s = (due - service.clock()).total_seconds()
        await asyncio.sleep(min(poll_s, max(0.0, wait_s)))
