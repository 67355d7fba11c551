"""The embedded runtime: every agent in one process over in-memory channels, SQLite storage.

Wiring (topic names match the Kafka runtime):

    MQTT or simulator -> raw -> ingest_agent -> sensor-readings -> rollup_agent -> rollups.*
                                           \\-> sensor-readings.dlq -> dead_letter_agent
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.deadletter import dead_letter_agent
from agents.forecast import ForecastService, forecast_agent
from agents.ingest import ingest_agent
from agents.rollup import RollupService, idle_timer, rollup_agent
from connectors.mqtt import BrokerAddress, MqttSource, RawMessage
from connectors.weather import build_weather
from schemas.deadletter import DeadLetter
from schemas.forecast import LoadForecast
from schemas.reading import SensorReading
from schemas.rollup import Rollup, WindowName
from schemas.validation import ValidationSettings
from streams.channels import Channel
from streams.dr_wiring import LocalDr
from streams.metrics import Metrics
from streams.registry import RegistryHolder
from streams.settings import Settings
from streams.shutdown import Step
from streams.stores import build_cache, build_store
from tables.ports import Cache, Store
from tables.rollups import RollupAggregator

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0


@dataclass
class Topics:
    raw: Channel[RawMessage]
    readings: Channel[SensorReading]
    dead_letters: Channel[DeadLetter]
    rollups: dict[WindowName, Channel[Rollup]]
    forecasts: Channel[LoadForecast]

    @classmethod
    def create(cls, capacity: int) -> Topics:
        return cls(
            raw=Channel("raw", capacity=capacity),
            readings=Channel("sensor-readings", capacity=capacity),
            dead_letters=Channel("sensor-readings.dlq", capacity=capacity),
            rollups={w: Channel(f"rollups.{w.value}", capacity=capacity) for w in WindowName},
            forecasts=Channel("load-forecasts", capacity=capacity),
        )


@dataclass
class LocalRuntime:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        s = self.settings
        self.store: Store = build_store(s, self.metrics)
        self.cache: Cache | None = build_cache(s)
        self.registry = RegistryHolder(self.store)
        self.topics = Topics.create(s.channel_capacity)
        self.rollup_service = RollupService(
            RollupAggregator(self.registry(), s.windows),
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            outputs=self.topics.rollups,
        )
        self.weather = build_weather(s)
        self.forecast_service = ForecastService(
            self.store, self.weather, publish=self.topics.forecasts.send, metrics=self.metrics,
            clock=self.clock, history_days=s.forecast_history_days,
            reselect_s=s.forecast_reselect_s)
        self.dr = LocalDr(s, self.store, self.metrics, self.clock)
        self.mqtt: MqttSource | None = None
        self._agents: list[asyncio.Task[Any]] = []
        self._services: list[asyncio.Task[Any]] = []

    @property
    def raw(self) -> Channel[RawMessage]:
        """Where meter payloads enter (the MQTT source, or the in-process simulator)."""
        return self.topics.raw

    async def open(self) -> None:
        """Open the store and load the registry; call before provisioning or :meth:`start`."""
        await self.store.open()
        await self.weather.open()
        await self.reload_registry()

    async def reload_registry(self) -> None:
        self.rollup_service.aggregator.registry = await self.registry.reload()

    async def start(self) -> None:
        s = self.settings
        replayed = await self.rollup_service.recover()
        if replayed:
            log.info("recovered open windows from %d stored readings", replayed)
        t = self.topics
        n, within = s.batch_max, s.batch_within_s
        self._agents = [
            self._spawn(ingest_agent(
                t.raw.stream().take(n, within=within),
                readings=t.readings,
                dead_letters=t.dead_letters,
                registry=self.registry,
                settings=ValidationSettings(max_future_s=s.max_future_s,
                                    max_age_s=s.retention_raw_days * 86_400.0),
                metrics=self.metrics,
                clock=self.clock,
            ), "ingest"),
            self._spawn(rollup_agent(t.readings.stream().batches(n, within=within),
                                     service=self.rollup_service), "rollup"),
            self._spawn(dead_letter_agent(t.dead_letters.stream().take(n, within=within),
                                          store=self.store), "dead-letters"),
        ]
        self._services = [
            self._spawn(idle_timer(self.rollup_service,
                                   interval_s=min(5.0, s.idle_timeout_s / 2)), "idle-timer"),
            self._spawn(self._prune_forever(), "retention"),
            self._spawn(self._gauge_forever(), "gauges"),
        ]
        if s.forecast_enabled:
            self._services += [
                self._spawn(forecast_agent(self.forecast_service,
                                           interval_s=s.forecast_interval_s,
                                           delay_s=s.forecast_delay_s), "forecast"),
                self._spawn(self.forecast_service.choose_forever(), "forecast-models"),
            ]
        self._services += [self._spawn(c, name) for c, name in await self.dr.start()]
        if s.mqtt_url:
            self.mqtt = MqttSource(
                BrokerAddress.parse(s.mqtt_url),
                client_id=s.mqtt_client_id,
                share_group=s.mqtt_share_group,
                out=t.raw,
                metrics=self.metrics,
                clock=self.clock,
            )
            self._services.append(self._spawn(self.mqtt.run(), "mqtt"))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._crashed)
        return task

    @staticmethod
    def _crashed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped", task.get_name(), exc_info=task.exception())

    def stop_steps(self) -> list[Step]:
        """The orderly stop, as named steps (``streams.shutdown`` runs them under the grace
        and names the one it abandons): stop the sources, let the agents drain what is already
        in the channels, commit, close."""
        return [
            ("sources stop", self._stop_services),
            ("ingest drain", self._drain_ingest),
            ("rollup and dead-letter drain", self._drain_agents),
            ("rollup commit", self.rollup_service.close),
            ("demand response close", self.dr.close),
            ("forecast workers close", self._close_forecasts),
            ("weather close", self.weather.close),
            ("store close", self.store.close),
        ]

    async def stop(self) -> None:
        """The stop steps, one after another, without a deadline (tests, benchmarks)."""
        for _, call in self.stop_steps():
            await call()

    async def _stop_services(self) -> None:
        for task in self._services:
            task.cancel()
        for task in self._services:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drain_ingest(self) -> None:
        await self.topics.raw.close()
        if self._agents:
            await self._agents[0]

    async def _drain_agents(self) -> None:
        t = self.topics
        await t.readings.close()
        await t.dead_letters.close()
        await asyncio.gather(*self._agents[1:], return_exceptions=True)

    async def _close_forecasts(self) -> None:
        self.forecast_service.close()

    async def _prune_forever(self) -> None:
        s = self.settings
        while True:
            now = self.clock()
            deleted = await self.store.prune(
                readings_before=now - timedelta(days=s.retention_raw_days),
                minute_rollups_before=now - timedelta(days=s.retention_rollup_1m_days),
                rollups_before=now - timedelta(days=s.retention_rollup_days),
            )
            if deleted:
                log.info("retention: deleted %d rows", deleted)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def _gauge_forever(self) -> None:
        t = self.topics
        channels: list[Channel[Any]] = [t.raw, t.readings, t.dead_letters,
                                        *t.rollups.values()]
        while True:
            for ch in channels:
                self.metrics.channel_depth.labels(ch.name).set(ch.depth())
            await asyncio.sleep(1.0)
