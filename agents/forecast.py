"""Forecast agent: every 15 minutes, each facility's next 24 h with 80 % and 95 % bands.

The thin shell around ``agents/forecasting`` (pure): it reads a facility's 15-minute rollups
and weather, runs the forecaster, stores the forecast (``load_forecasts``, the newest run wins)
and publishes it on the ``load-forecasts`` stream.

Model choice (a rolling-origin backtest: 5-10 s per facility) is kept apart from the 15-minute
cycle (a refit of the chosen model: about 25 ms). A facility without a choice yet, or with one
older than ``reselect_s``, is forecast with the default model meanwhile and queued for a
choice, which a background task makes one facility at a time between cycles.

CPU work (choices and fits) runs in a worker process (``agents/forecast_pool.py``): on a
thread it would hold the GIL of the API's process for seconds. Each facility fails alone: an
exception or a timeout skips that facility's forecast or choice with a reason, counted in
``sems_item_failures_total{loop="forecast"|"forecast_choice"}`` and logged once
(``agents/item_failures.py``); a store outage ends the cycle, which is tried again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import pandas as pd

from agents.forecast_pool import ProcessRunner
from agents.forecasting import (
    Choice,
    Forecast,
    ForecastInputError,
    InsufficientHistory,
    choose_model,
    forecast,
)
from agents.item_failures import ItemFailures
from core.logs import new_trace_id, trace_id_var
from core.metrics import Metrics
from schemas.forecast import LoadForecast, LoadForecastPoint
from schemas.metadata import Facility
from schemas.rollup import Scope, WindowName
from tables.ports.forecasts import ForecastStore
from tables.ports.metadata import MetadataStore
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import TimeSeriesStore
from tables.ports.weather import Location, WeatherProvider, WeatherUnavailable

log = logging.getLogger(__name__)

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
    fit_timeout_s: float = 60.0
    """A facility's refit (tens of ms) running longer than this fails that facility."""
    choice_timeout_s: float = 300.0
    """A facility's backtest (seconds) running longer than this fails its choice."""
    choice_retry_s: float = 3_600.0
    """A failed choice is tried again after this; the default model forecasts meanwhile."""
    workers: int = 1
    _choices: dict[str, tuple[float, Choice]] = field(default_factory=dict)
    _choice_failed_s: dict[str, float] = field(default_factory=dict)
    _to_choose: asyncio.Queue[Facility] = field(default_factory=asyncio.Queue)
    _queued: set[str] = field(default_factory=set)
    _no_cycle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no cycle runs: choices (seconds each) wait for it, so that they never delay
    a cycle by more than the one choice under way."""
    _no_history: set[str] = field(default_factory=set)
    """Facilities whose lack of history was logged (once, not every retry)."""
    _runner: ProcessRunner = field(init=False)
    _forecast_failures: ItemFailures = field(init=False)
    _choice_failures: ItemFailures = field(init=False)

    def __post_init__(self) -> None:
        self._runner = ProcessRunner(workers=self.workers, timeout_s=self.fit_timeout_s)
        self._forecast_failures = ItemFailures("forecast", self.metrics, log)
        self._choice_failures = ItemFailures("forecast_choice", self.metrics, log)

    async def run_cycle(self, facilities: Iterable[Facility] | None = None) -> list[LoadForecast]:
        """Forecast each facility (all registered ones by default); one facility's failure is
        logged and counted and does not stop the others. A store outage ends the cycle: the
        facilities not forecast are tried again by the agent."""
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
            fid = facility.facility_id
            trace_id_var.set(new_trace_id())  # one per facility forecast, on its log records
            try:
                made.append(await self.forecast_facility(facility, now))
            except InsufficientHistory:
                self.metrics.forecasts.labels("no_history").inc()
                if fid not in self._no_history:
                    self._no_history.add(fid)
                    log.info("forecast %s: no load history yet", fid)
                continue
            except StoreUnavailable as exc:
                self.metrics.forecasts.labels("store_unavailable").inc()
                log.warning("forecast cycle stopped at %s: store unavailable (%s); the "
                            "facilities not forecast are tried again later", fid, exc)
                break
            except ForecastInputError as exc:
                self.metrics.forecasts.labels("bad_input").inc()
                self._forecast_failures.failed(fid, exc, what="forecast skipped for")
                continue
            except Exception as exc:  # a model that fails on one facility must not stop others
                self.metrics.forecasts.labels("error").inc()
                self._forecast_failures.failed(fid, exc, what="forecast skipped for")
                continue
            self._no_history.discard(fid)
            self._forecast_failures.succeeded(fid)
        self.metrics.forecast_cycle_duration.observe(time.perf_counter() - started)
        return made

    async def forecast_facility(self, facility: Facility, now: datetime) -> LoadForecast:
        started = time.perf_counter()
        history = await self.history(facility.facility_id, now)
        temperature = await self.temperature(facility, now)
        choice = self._fresh_choice(facility)
        result: Forecast = await self._runner.run(
            forecast, history, now=now, timezone=facility.timezone, temperature_c=temperature,
            country=facility.country, model=None if choice else DEFAULT_MODEL, choice=choice,
            horizon=HORIZON, step=STEP, timeout_s=self.fit_timeout_s)
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
        fid = facility.facility_id
        held = self._choices.get(fid)
        mono_s = time.monotonic()
        failed_s = self._choice_failed_s.get(fid)
        retry = failed_s is None or mono_s - failed_s >= self.choice_retry_s
        if (held is None or mono_s - held[0] > self.reselect_s) and retry:
            if fid not in self._queued:
                self._queued.add(fid)
                self._to_choose.put_nowait(facility)
        return held[1] if held is not None else None

    async def choose_forever(self) -> None:
        """Make the queued model choices, one facility at a time; a facility whose choice
        fails keeps its previous model (or the default) and is tried again later."""
        self._no_cycle.set()
        while True:
            facility = await self._to_choose.get()
            fid = facility.facility_id
            await self._no_cycle.wait()
            trace_id_var.set(new_trace_id())
            try:
                await self.choose(facility)
            except (InsufficientHistory, StoreUnavailable) as exc:
                log.info("model choice for %s postponed: %s", fid, exc)
            except Exception as exc:  # one facility's backtest must not stop the others'
                self._choice_failed_s[fid] = time.monotonic()
                self._choice_failures.failed(fid, exc, what="model choice skipped for")
            else:
                self._choice_failed_s.pop(fid, None)
                self._choice_failures.succeeded(fid)
            finally:
                self._queued.discard(fid)

    async def choose(self, facility: Facility) -> Choice:
        now = self.clock()
        history = await self.history(facility.facility_id, now)
        temperature = await self.temperature(facility, now)
        started = time.perf_counter()
        choice: Choice = await self._runner.run(
            choose_model, history, temperature_c=temperature, timezone=facility.timezone,
            country=facility.country, now=now, step=STEP, horizon=HORIZON,
            timeout_s=self.choice_timeout_s)
        self.metrics.forecast_choice_duration.observe(time.perf_counter() - started)
        self._choices[facility.facility_id] = (time.monotonic(), choice)
        log.info("forecast model for %s: %s", facility.facility_id, choice.model)
        return choice

    def close(self) -> None:
        """Never waits for a fit: queued work is cancelled, the workers are killed."""
        self._runner.close()


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
    outage: str | None = None
    while True:
        try:
            now = service.clock()
            if now >= due:
                done.clear()
                retry_at.clear()
                due = next_run(now, interval_s=interval_s, delay_s=delay_s)
            facilities = await service.store.facilities()
            if outage is not None:
                log.info("forecast agent: the store is back")
                outage = None
            if owned is not None:
                facilities = owned(facilities)
            mono_s = time.monotonic()
            todo = [f for f in facilities if f.facility_id not in done
                    and retry_at.get(f.facility_id, mono_s) <= mono_s]
            if todo:
                made = {r.facility_id for r in await service.run_cycle(todo)}
                done.update(made)
                later = time.monotonic() + retry_s
                retry_at.update({f.facility_id: later for f in todo
                                 if f.facility_id not in made})
        except Exception as exc:  # the store is down, or a bug: the loop goes on
            reason = f"{type(exc).__name__}: {exc}"
            if reason != outage:
                log.warning("forecast agent: %s; trying again in %g s", reason, poll_s,
                            exc_info=not isinstance(exc, StoreUnavailable))
                outage = reason
        wait_s = (due - service.clock()).total_seconds()
        await asyncio.sleep(min(poll_s, max(0.0, wait_s)))
