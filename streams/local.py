"""The embedded runtime: every agent in one process over in-memory channels.

Wiring (topic names match the Kafka runtime):

    MQTT or simulator -> raw -> ingest_agent -> sensor-readings -> rollup_agent -> rollups.*
                                           \\-> sensor-readings.dlq -> dead_letter_agent

and every agent ``streams/compose.py`` registers, each on the channel of its topic.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from agents.ingest import ingest_agent
from agents.rollup import idle_timer, rollup_agent
from agents.rollup_service import RollupService
from connectors import kafka as topics
from connectors.mqtt import BrokerAddress, MqttSource
from core.channels import Channel, Sink
from schemas.rollup import WindowName
from streams.runtime import AgentSpec, Parts, Runtime, ServiceSpec, log_crash
from tables.rollups import RollupAggregator

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0


class LocalRuntime(Runtime):
    """The transport is a bounded in-process channel per topic."""

    name = "local"

    def __init__(self, parts: Parts, *, agents: tuple[AgentSpec[Any], ...],
                 services: tuple[ServiceSpec, ...]) -> None:
        self.channels: dict[str, Channel[Any]] = {}
        super().__init__(parts, agents=agents, services=services)
        s = parts.settings
        self.rollup_service = RollupService(
            RollupAggregator(self.registry(), s.windows),
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            outputs={w: self.channel(topics.ROLLUP_TOPICS[w.value]) for w in WindowName},
        )
        self.mqtt: MqttSource | None = None
        self._ingest: asyncio.Task[None] | None = None
        self._agents: list[asyncio.Task[None]] = []

    def channel(self, topic: str) -> Channel[Any]:
        """The topic's channel (created on first use)."""
        channel = self.channels.get(topic)
        if channel is None:
            channel = self.channels[topic] = Channel(
                topic, capacity=self.settings.channel_capacity)
        return channel

    def sink(self, topic: str, **_: Any) -> Sink[Any]:
        return self.channel(topic)

    def forecast_sink(self) -> Sink[Any]:
        return self.channel(topics.FORECASTS)

    async def reload_registry(self) -> None:
        self.rollup_service.aggregator.registry = await self.registry.reload()

    async def start(self) -> None:
        """Recover the open windows, open demand response, then start the agents, the
        services and the MQTT source; :meth:`stop` stops them in reverse."""
        s, life = self.settings, self.life
        await life.start("rollup commit", self._recover, self.rollup_service.close)
        await life.start("demand response close", self.dr.open, self.dr.close)
        await life.start("agents drain", self._start_agents, self._drain_agents)
        await life.start("ingest drain", self._start_ingest, self._drain_ingest)
        await self.start_services()
        for coro, name in ((idle_timer(self.rollup_service,
                                       interval_s=min(5.0, s.idle_timeout_s / 2)), "idle-timer"),
                           (self._prune_forever(), "retention"),
                           (self._gauge_forever(), "gauges")):
            self.spawn(coro, name)
        if s.mqtt_url:
            self.mqtt = MqttSource(
                BrokerAddress.parse(s.mqtt_url), client_id=s.mqtt_client_id,
                share_group=s.mqtt_share_group, out=self.raw, metrics=self.metrics,
                clock=self.clock)
            self.spawn(self.mqtt.run(), "mqtt")

    async def _recover(self) -> None:
        replayed = await self.rollup_service.recover()
        if replayed:
            log.info("recovered open windows from %d stored readings", replayed)

    async def _start_agents(self) -> None:
        n, within = self.settings.batch_max, self.settings.batch_within_s
        self._agents = [asyncio.create_task(
            rollup_agent(self.channel(topics.READINGS).stream().batches(n, within=within),
                         service=self.rollup_service), name="rollup")]
        self._agents += [
            asyncio.create_task(spec.run(self, self.channel(spec.topic).stream().take(
                n, within=within)), name=spec.name)
            for spec in self.agents]
        for task in self._agents:
            task.add_done_callback(log_crash)

    async def _start_ingest(self) -> None:
        s = self.settings
        self._ingest = asyncio.create_task(ingest_agent(
            self.raw.stream().batches(s.batch_max, within=s.batch_within_s),
            readings=self.channel(topics.READINGS),
            dead_letters=self.channel(topics.DEAD_LETTERS),
            registry=self.registry,
            settings=self.parts.validation,
            metrics=self.metrics,
            clock=self.clock,
        ), name="ingest")
        self._ingest.add_done_callback(log_crash)

    async def _drain_ingest(self) -> None:
        """Ingest handles what the sources sent before they stopped."""
        await self.raw.close()
        if self._ingest is not None:
            await self._ingest

    async def _drain_agents(self) -> None:
        """Every agent handles what is in its channel, then ends: the rollup agent first (what
        it folds may still go to the others' channels), then the others. Channels no agent
        reads (rollups.*, load-forecasts: for subscribers in tests) stay open."""
        rollup, *others = self._agents
        await self.channel(topics.READINGS).close()
        await asyncio.gather(rollup, return_exceptions=True)
        for spec in self.agents:
            await self.channel(spec.topic).close()
        await asyncio.gather(*others, return_exceptions=True)

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
        channels = [self.raw, *self.channels.values()]
        while True:
            for ch in channels:
                self.metrics.channel_depth.labels(ch.name).set(ch.depth())
            await asyncio.sleep(1.0)
