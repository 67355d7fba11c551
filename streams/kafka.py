"""The distributed runtime: the same agents as faust-streaming workers on Apache Kafka.

    MQTT -> MqttSource -> raw -> ingest_agent -> [sensor-readings] -> rollup agent (Faust)
                                      \\-> [sensor-readings.dlq] -> dead-letter agent (Faust)

Topics are partitioned by facility. The rollup agent keeps each facility's open windows in a
Faust table (``rollup-state``, changelog-backed, written once per facility per batch) and
writes readings, rollups and checkpoints to the store before Faust commits the batch's offsets,
so a killed worker's replacement resumes from the table and the store absorbs the replay.
Faust's own windowed tables are not used: their windows close on wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaProducer

from agents.ingest import ingest_agent
from agents.rollup_service import RollupService
from connectors import kafka as topics
from connectors.kafka import KafkaSink, ensure_topics, partition_for, producer, topic_specs
from connectors.mqtt import BrokerAddress, MqttSource
from core.logs import TRACE_HEADER, trace_id_of_header, trace_id_var
from schemas.deadletter import DeadLetter, RejectReason
from schemas.metadata import Facility
from schemas.reading import SensorReading
from schemas.rollup import WindowName
from schemas.validation import dead_letter, decode_reading
from streams.faust_patches import (
    FETCHED_QUEUE_DEPTH,
    Fetched,
    Transport,
    check_versions,
    committed_offset,
    crashed,
    hold_flow_until_seek,
)
from streams.runtime import AgentSpec, Parts, Runtime, ServiceSpec, decoded, log_crash
from tables.codec import dump_state, load_state
from tables.rollups import FacilityWindows, RollupAggregator

log = logging.getLogger(__name__)

STATE_TABLE = "rollup-state"
LAG_INTERVAL_S = 5.0


class FaustTableState:
    """The window-state port (``tables.ports.window_state``) on a Faust table keyed by
    facility. ``use_partitioner`` places each key by the same hash as the facility-keyed
    topics, so state and readings of a facility always share a partition number, and writes
    outside a stream event (the idle timer) are allowed."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def load(self, facility_id: str) -> FacilityWindows | None:
        blob = self.table.get(facility_id.encode())
        return None if blob is None else load_state(orjson.loads(blob))

    def encode(self, state: FacilityWindows) -> bytes:
        return orjson.dumps(dump_state(state))

    def save(self, encoded: Mapping[str, bytes]) -> None:
        for facility_id, blob in encoded.items():
            self.table[facility_id.encode()] = blob

    def facility_ids(self) -> Iterable[str]:
        """Facilities whose state partition this worker owns now. After a rebalance the local
        table still holds what this worker wrote for partitions that moved away (Faust drops
        only what it restored from the changelog): ticking those would close the new owner's
        windows from stale state and overwrite its rollups."""
        changelog = self.table.changelog_topic.get_topic_name()
        owned = {tp.partition for tp in self.table.app.assignor.assigned_actives()
                 if tp.topic == changelog}
        ids = (bytes(k).decode() for k in self.table.keys())
        return [f for f in ids if partition_for(f.encode(), self.table.partitions) in owned]


async def _decoded(batches: AsyncIterator[list[bytes]],
                   decode: Callable[[bytes], Any]) -> AsyncIterator[list[Any]]:
    async for batch in batches:
        yield [decode(v) for v in batch]


def decode_fetched(fetched: Fetched, *, now: datetime) -> tuple[list[SensorReading],
                                                               list[DeadLetter]]:
    """The readings of a fetch, and a dead letter for each record that breaks the topic's
    contract (produced by something other than SEMS's ingest): one bad record must not stop
    the partition."""
    readings: list[SensorReading] = []
    rejected: list[DeadLetter] = []
    for message in fetched.messages:
        value = message.value
        result = (decode_reading(value, source=topics.READINGS, now=now)
                  if isinstance(value, bytes) else
                  dead_letter(RejectReason.MALFORMED_JSON, "malformed_json: record has no value",
                              payload=b"", source=topics.READINGS, received_at=now))
        if isinstance(result, SensorReading):
            readings.append(result)
        else:
            rejected.append(result)
    return readings, rejected


class KafkaRuntime(Runtime):
    """The transport is Kafka: a Faust app for the agents (a worker), and producers of our own
    for what the agents and the ingest service send. ``start(ingest=, worker=)`` picks the
    roles: ``sems worker`` is a worker, ``sems ingest`` the ingest service, ``sems run
    --runtime kafka`` both."""

    name = "kafka"
    vital = "faust worker"

    def __init__(self, parts: Parts, *, agents: tuple[AgentSpec[Any], ...],
                 services: tuple[ServiceSpec, ...]) -> None:
        check_versions()  # the consumer patches were written for the pinned Faust and aiokafka
        s = parts.settings
        self._rollup_producer = producer(s.kafka_bootstrap)
        self._worker_sinks: list[KafkaSink[Any]] = []
        super().__init__(parts, agents=agents, services=services)
        self.mqtt: MqttSource | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ingest: asyncio.Task[None] | None = None
        self._lag_labels: set[tuple[str, str]] = set()
        self._sinks: list[KafkaSink[Any]] = []
        self.app = self._faust_app()

    def sink(self, topic: str, *, key: Callable[[Any], str], kept: bool = False
             ) -> KafkaSink[Any]:
        """A sink on the worker's producer (delivered before it stops)."""
        sink: KafkaSink[Any] = KafkaSink(self._rollup_producer, topic, key=key, encode=_json,
                                         fail_stop=not kept)
        self._worker_sinks.append(sink)
        return sink

    def forecast_sink(self) -> KafkaSink[Any]:
        return self.sink(topics.FORECASTS, key=_facility_id)

    # -- the Faust worker ------------------------------------------------------------------

    def _faust_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.kafka_app_id,
            broker=f"kafka://{s.kafka_bootstrap}",
            store="memory://",
            # Faust's own folder, which it would otherwise create in the working directory.
            datadir=str(s.data_dir / "faust"),
            topic_partitions=s.kafka_partitions,
            topic_replication_factor=1,
            table_standby_replicas=0,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            # A killed worker's partitions move on after 10 s, not Faust's default 60 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            web_enabled=False,
            autodiscover=False,
            producer_acks=-1,
            # Rollups and table changelog records go out in batches: with Faust's default
            # linger of 0 nearly every record was a produce request of its own.
            producer_linger=0.01,
            producer_compression_type="lz4",
            # A fetch is the rollup agent's batch (``Fetched``).
            broker_max_poll_records=s.batch_max,
        )
        app.transport = Transport(app.conf.broker_consumer, app)
        app.on_rebalance_complete.connect(hold_flow_until_seek)
        raw_topic: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        readings = app.topic(topics.READINGS, **raw_topic)
        # Its events are whole fetches (``Fetched``): a queue of two of them at most, not
        # Faust's 4,096 events (which bounded records, not fetches). Set on the topic, as
        # app.topic() drops its ``maxsize`` argument (faust-streaming 0.15.3); the agent's
        # channel is a clone and keeps it.
        readings.maxsize = FETCHED_QUEUE_DEPTH
        # Raw UTF-8 keys, as on the facility-keyed topics: the partitioner must hash a
        # facility's state to the partition of its readings (Faust would JSON-encode keys).
        # The types, not attributes set afterwards, pick the codec: app.Table() builds the
        # changelog topic at once, and a replacement worker's recovery decodes with that.
        table: Any = app.Table(STATE_TABLE, default=None, partitions=s.kafka_partitions,
                               use_partitioner=True, key_type=bytes, value_type=bytes)
        self.rollup_service = RollupService(
            RollupAggregator(self.registry(), s.windows),
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            # Rollups go out through a producer of our own in record batches (KafkaSink); a
            # batch of readings is acknowledged once its rollups are stored by Kafka.
            outputs={w: self.sink(topics.ROLLUP_TOPICS[w.value], key=_facility_id)
                     for w in WindowName},
            # Late readings and records that are not readings, for whoever reads the topic
            # (the dead-letter agent stores them again: one row per source and payload).
            dead_letters=self.sink(topics.DEAD_LETTERS, key=_source, kept=True),
            state_store=FaustTableState(table),
        )
        batch, within = s.batch_max, s.batch_within_s

        async def rollup_agent(stream: Any) -> None:
            # One event per fetch (up to ``broker_max_poll_records``), acknowledged by the
            # service once stored, so folding the next fetch overlaps the store's commit of
            # this one.
            fetched: Fetched
            async for fetched in stream.noack():
                # The trace id of the ingest batch that produced the first record.
                trace_id_var.set(trace_id_of_header(fetched.header(TRACE_HEADER)))
                readings, rejected = decode_fetched(fetched, now=self.clock())
                await self.rollup_service.process(readings, ack=fetched.ack, rejected=rejected)

        app.agent(readings, name="sems.rollups")(rollup_agent)
        for spec in self.agents:
            app.agent(app.topic(spec.topic, **raw_topic), name=f"sems.{spec.name}")(
                self._faust_agent(spec, batch, within))

        async def idle_tick() -> None:
            await self.rollup_service.tick()

        async def revoked(*_: Any, **__: Any) -> None:
            await self.rollup_service.release()

        async def lag_tick() -> None:
            self._record_lag()

        app.timer(interval=min(5.0, s.idle_timeout_s / 2))(idle_tick)
        app.timer(interval=LAG_INTERVAL_S)(lag_tick)
        app.on_partitions_revoked.connect(revoked)
        return app

    def _faust_agent(self, spec: AgentSpec[Any], batch: int, within: float
                     ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def agent(stream: Any) -> None:
            await spec.run(self, decoded(spec.topic, spec.record,
                                         stream.take(batch, within=within)))

        return agent

    def _record_lag(self) -> None:
        """Consumer lag of this worker's input partitions: the partition's end offset minus
        the group's committed offset (what a restart would replay). Partitions that moved to
        another worker stop being reported here."""
        consumer: Any = self.app.consumer
        gauge = self.metrics.kafka_lag
        reported: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            if tp.topic not in (topics.READINGS, topics.DEAD_LETTERS):
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue
            committed = committed_offset(consumer, tp)
            labels = (tp.topic, str(tp.partition))
            gauge.labels(*labels).set(max(0, end - committed))
            reported.add(labels)
        for labels in self._lag_labels - reported:
            gauge.remove(*labels)
        self._lag_labels = reported

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        # Faust keeps its own folder there, whatever the store (SQLite or the servers).
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await super().open()
        await self.life.start("topics", self._ensure_topics)

    async def _ensure_topics(self) -> None:
        await ensure_topics(self.settings.kafka_bootstrap,
                            topic_specs(partitions=self.settings.kafka_partitions))

    async def reload_registry(self) -> None:
        self.rollup_service.aggregator.registry = await self.registry.reload()

    async def start(self, *, ingest: bool = True, worker: bool = True) -> None:
        """Start a worker (the Faust app, demand response, the services) and/or the MQTT (or
        in-process) ingest service; :meth:`stop` stops them in reverse."""
        life = self.life
        if worker:
            await life.start("kafka producer stop (worker)", self._rollup_producer.start,
                             self._rollup_producer.stop)
            await life.start("demand response close", self.dr.open, self.dr.close)
            await life.start("faust worker", self._start_worker)
            life.push_steps(lambda: [
                ("rollup commit", self.rollup_service.flush),
                ("faust worker stop", self.app.stop),
                ("rollup committer close", self.rollup_service.close),
                ("kafka producer flush (rollups, forecasts, DR)", self._flush_worker_sinks),
            ])
            await self.start_services()
        if ingest:
            await life.start("kafka producer flush (ingest)", self._start_ingest,
                             self._flush_ingest)
            life.push("ingest drain", self._drain_ingest)
            s = self.settings
            if s.mqtt_url:
                self.mqtt = MqttSource(BrokerAddress.parse(s.mqtt_url),
                                       client_id=s.mqtt_client_id,
                                       share_group=s.mqtt_share_group, out=self.raw,
                                       metrics=self.metrics, clock=self.clock)
                mqtt = self.spawn(self.mqtt.run(), "mqtt")
                life.push("mqtt stop", lambda: _cancelled(mqtt))

    async def _start_worker(self) -> None:
        await self.app.start()
        # Faust's Monitor keeps per-event statistics for its web views, which SEMS does not
        # serve (its own metrics are on /metrics): 3 % of a worker's CPU.
        if self.app.monitor in self.app.sensors:
            self.app.sensors.remove(self.app.monitor)

    async def _start_ingest(self) -> None:
        s = self.settings
        self._producer = producer(s.kafka_bootstrap)
        await self._producer.start()
        readings: KafkaSink[SensorReading] = KafkaSink(
            self._producer, topics.READINGS, key=_facility_id, encode=_json)
        dead: KafkaSink[DeadLetter] = KafkaSink(self._producer, topics.DEAD_LETTERS,
                                               key=_source, encode=_json)
        self._sinks = [readings, dead]
        self._ingest = asyncio.create_task(ingest_agent(
            self.raw.stream().batches(s.batch_max, within=s.batch_within_s),
            readings=readings, dead_letters=dead, registry=self.registry,
            settings=self.parts.validation, metrics=self.metrics, clock=self.clock,
        ), name="ingest")
        self._ingest.add_done_callback(log_crash)

    async def until_failed(self) -> str:
        """Returns, with the reason, once the Faust worker has crashed: its consumer (or
        another of its services) stopped on an error it does not recover from. Faust's own
        ``faust worker`` command then exits; a SEMS process must too (``Shutdown.stop_when``),
        as it would otherwise run on consuming nothing while its partitions stay assigned to
        it, and its supervisor restarts it."""
        services: list[Any] = [self.app, self.app.consumer]
        waits = [asyncio.ensure_future(crashed(s).wait()) for s in services]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        failed = next(s for s in services if s.crashed)
        return f"{type(failed).__name__} crashed: {getattr(failed, 'crash_reason', None)!r}"

    def owns(self, facility_id: str) -> bool:
        """The facilities whose ``dr-events`` partition this worker holds: it schedules and
        commands their DR."""
        assigned = {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == topics.DR_EVENTS}
        return partition_for(facility_id.encode(), self.settings.kafka_partitions) in assigned

    def owned_facilities(self, facilities: list[Facility]) -> list[Facility]:
        """The facilities whose readings partition this worker holds: each worker forecasts its
        own, so forecasting scales out with the workers like the rollups do."""
        assigned = {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == topics.READINGS}
        n = self.settings.kafka_partitions
        return [f for f in facilities
                if partition_for(f.facility_id.encode(), n) in assigned]

    async def _drain_ingest(self) -> None:
        await self.raw.close()
        if self._ingest is not None:
            await self._ingest

    async def _flush_ingest(self) -> None:
        for sink in self._sinks:
            with contextlib.suppress(Exception):  # a failed delivery was logged already
                await sink.close()
        if self._producer is not None:
            await self._producer.stop()

    async def _flush_worker_sinks(self) -> None:
        for sink in self._worker_sinks:
            with contextlib.suppress(Exception):  # a failed delivery was logged already
                await sink.close()


def _facility_id(record: Any) -> str:
    return str(record.facility_id)


def _source(dead: DeadLetter) -> str:
    return dead.source


def _json(record: Any) -> bytes:
    return cast(bytes, record.model_dump_json().encode())


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
