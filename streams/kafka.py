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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.deadletter import dead_letter_agent
from agents.forecast import ForecastService, forecast_agent
from agents.ingest import ingest_agent
from agents.rollup import RollupService
from connectors import kafka as topics
from connectors.kafka import KafkaSink, ensure_topics, partition_for, producer, topic_specs
from connectors.mqtt import BrokerAddress, MqttSource, RawMessage
from connectors.weather import build_weather
from schemas.deadletter import DeadLetter, RejectReason
from schemas.forecast import LoadForecast
from schemas.metadata import Facility
from schemas.reading import SensorReading
from schemas.rollup import Rollup, WindowName
from schemas.validation import ValidationSettings, dead_letter, decode_reading
from streams.channels import Channel
from streams.dr_wiring import KafkaDr
from streams.logs import TRACE_HEADER, trace_id_of_header, trace_id_var
from streams.metrics import Metrics
from streams.registry import RegistryHolder
from streams.settings import Settings
from streams.shutdown import Step
from streams.stores import build_cache, build_store
from tables.codec import dump_state, load_state
from tables.ports import Cache, Store
from tables.rollups import FacilityWindows, RollupAggregator

log = logging.getLogger(__name__)

STATE_TABLE = "rollup-state"
LAG_INTERVAL_S = 5.0


class FaustTableState:
    """``WindowStateStore`` on a Faust table keyed by facility. ``use_partitioner`` places each
    key by the same hash as the facility-keyed topics, so state and readings of a facility
    always share a partition number, and writes outside a stream event (the idle timer) are
    allowed."""

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


def _facility_id(rollup: Rollup) -> str:
    return rollup.facility_id


def _json(rollup: Rollup) -> bytes:
    return rollup.model_dump_json().encode()


def _dead_letter_sink(kafka: AIOKafkaProducer, *, fail_stop: bool = True
                      ) -> KafkaSink[DeadLetter]:
    """``sensor-readings.dlq``, keyed by each dead letter's source."""
    return KafkaSink(kafka, topics.DEAD_LETTERS, key=lambda d: d.source,
                     encode=lambda d: d.model_dump_json().encode(), fail_stop=fail_stop)


@dataclass(slots=True)
class Fetched:
    """The records of one fetch from a topic in ``FETCHED_TOPICS``, delivered to its agent's
    stream as one event rather than one event per record (see ``_RewindingConsumer``)."""

    messages: list[Any]  # Faust Messages, in partition order
    consumer: Any

    def ack(self) -> None:
        """Marks every record safe to commit (Faust commits acknowledged offsets)."""
        ack = self.consumer.ack
        for message in self.messages:
            ack(message)

    def header(self, name: str) -> bytes | None:
        """A header of the first record."""
        for key, value in self.messages[0].headers or ():
            if key == name:
                return cast(bytes, value)
        return None


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


FETCHED_TOPICS = frozenset({topics.READINGS})
"""Topics whose records reach their (single) agent a fetch at a time, as one ``Fetched``
event: Faust's per-record path (the conductor's callback, an ``Event``, the stream iterator)
was about half of a worker's CPU."""
FETCHED_QUEUE_DEPTH = 2
"""Fetches waiting for the agent at most (bounded memory while the store is slow or away)."""


class _RewindingConsumer(faust_aiokafka.Consumer):
    """Faust's consumer, except that records it does not deliver are fetched again, and the
    records of ``FETCHED_TOPICS`` are delivered a fetch at a time.

    faust-streaming 0.15 discards the records a fetch returns for a partition that is paused
    by then (a rebalance, a table recovery) without moving the fetch position back. A stream
    partition with a committed offset gets them back from the seek to the committed offsets
    that follows; the rest are lost: the dead letters of a never-committed
    ``sensor-readings.dlq``, and the changelog records a recovery waits for, forever. Here the
    first record not delivered is where the partition is fetched from next, nothing after it
    is delivered in between, and partitions never committed restart from their first offset,
    as ``auto_offset_reset=earliest`` says; the store absorbs what is read twice.
    """

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        generation = self.app.consumer_generation_id
        flowing = self.flow_active
        rewind: dict[Any, int] = {}
        for tp, record in self.scheduler.iterate(records):
            if tp in rewind:
                continue
            if not (self.flow_active and self.app.consumer_generation_id == generation and (
                    active is None or tp in active or tp in self._buffered_partitions)):
                rewind[tp] = record.offset
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)
        assigned = self.assignment()
        for tp, offset in rewind.items():
            if tp in assigned:  # a revoked partition's next owner reads it from the commit
                await self.seek(tp, offset)
        if not flowing:
            # Stopped for a rebalance: queued records may have been cleared unprocessed. A
            # partition revoked meanwhile is not ours to seek: the rebalance that took it
            # seeks the new assignment itself.
            with contextlib.suppress(IllegalStateError):
                await self.perform_seek()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        """Faust's fetch loop, racing each *fetch* rather than each message against a flow
        stop. Faust awaits ``wait_first(callback(message), suspend_flow.wait())`` per message:
        four tasks and an ``asyncio.wait`` for every record, the largest share of a worker's
        CPU in the kafka benchmark. Here one such race covers a fetch's records. When the
        flow stops mid-fetch the rest are dropped undelivered, as Faust drops the message
        whose race the stop won; they are not acknowledged, so the seek to the committed
        offsets that follows every rebalance fetches them again."""
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = [pair async for pair in self.getmany(timeout=1.0)]
                await self.sleep(0)
                if fetched and not self.should_stop:
                    await self.wait_first(self._deliver(fetched), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, fetched: list[tuple[Any, Any]]) -> None:
        """Faust's per-message bookkeeping (read offsets, gaps, commit-every), then the
        conductor's callback, awaited directly; the records of ``FETCHED_TOPICS`` go to their
        agent together, after the others."""
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        chunks: dict[str, list[Any]] = {}
        for tp, message in fetched:
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            if message.topic in FETCHED_TOPICS:
                chunks.setdefault(message.topic, []).append(message)
            else:
                await callback(message)
            read_offset[tp] = offset
        for topic, messages in chunks.items():
            await self._deliver_fetched(topic, messages)

    async def _deliver_fetched(self, topic: str, messages: list[Any]) -> None:
        """What the conductor does for a record, once for all of a fetch's records of a topic:
        wait while the flow is stopped (a rebalance) or the producer's buffer is full, then
        put one event on the subscribed agent's queue, waiting while it is full (a bounded
        queue: back-pressure to the fetch loop). The first record stands for the event in
        Faust's stream (its generation check, its unacknowledged set); the agent acknowledges
        them all once stored."""
        app = self.app
        channels = cast(Any, app.topics)._topic_name_index.get(topic)
        if not channels:
            # No agent subscribed (the conductor is rebuilding its index): read them again.
            await self._refetch(messages)
            return
        if len(channels) != 1:
            raise RuntimeError(f"{topic} is delivered a fetch at a time to one agent, "
                               f"but {len(channels)} subscribe to it")
        (channel,) = channels
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        head = messages[0]
        head.incref(1)
        event = app.create_event(head.key, Fetched(messages, self), head.headers, head)
        try:
            await channel.queue.put(event)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # A rebalance cleared the queue, cancelling this waiting put (Faust's conductor
            # survives the same through asyncio.wait). The records stay unacknowledged and the
            # seek to the committed offsets that follows every rebalance reads them again.

    async def _refetch(self, messages: list[Any]) -> None:
        """Fetch these records again: each partition from its first one here."""
        first: dict[Any, int] = {}
        for message in messages:
            first.setdefault(message.tp, message.offset)
        assigned = self.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                await self.seek(tp, offset)

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's livelock check (every 2.5 commit intervals), except for a partition
        awaiting its position: after the seek to the beginning below, until aiokafka has reset
        it. Faust reads ``position`` expecting None there, but aiokafka 0.14 asserts it is set:
        the check raised AssertionError and crashed the consumer, leaving the worker running
        and consuming nothing. Such a partition has nothing to verify yet."""
        if self._awaiting_position(tp):
            return None
        try:
            return super().verify_event_path(now, tp)
        except (AssertionError, AttributeError):
            # aiokafka's fetcher thread reset the position (an out-of-range offset) or a
            # rebalance took the partition between the check above and Faust's read.
            if self._awaiting_position(tp) or not self._assigned_state(tp):
                return None
            raise

    def _assigned_state(self, tp: Any) -> Any:
        """aiokafka's state of the partition, None when it is not assigned (now)."""
        consumer = self._thread._consumer
        subscription = consumer._subscription.subscription if consumer is not None else None
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return None
        return assignment.state_value(TopicPartition(tp.topic, tp.partition))

    def _awaiting_position(self, tp: Any) -> bool:
        state = self._assigned_state(tp)  # None: Faust's own check logs it is not assigned
        return state is not None and not state.has_valid_position

    async def perform_seek(self) -> None:
        await super().perform_seek()
        fresh = [TopicPartition(tp.topic, tp.partition) for tp in self.assignment()
                 if not self._is_changelog_tp(tp) and not self._committed_offset.get(tp)]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)


class _Transport(faust_aiokafka.Transport):
    Consumer = _RewindingConsumer


async def _hold_flow_until_seek(app: Any, /, *_: Any, **__: Any) -> None:
    """Sent when table recovery ends. Faust then resumes the stream partitions before it seeks
    them back to their committed offsets, with the flow already running for the recovery: a
    fetch in between delivers records from wherever a discarded fetch left the position, and
    the seek then delivers the skipped ones after them, late for their windows. Stopped here,
    the flow restarts once Faust has seeked."""
    app.consumer.stop_flow()


@dataclass
class KafkaRuntime:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        s = self.settings
        self.store: Store = build_store(s, self.metrics)
        self.cache: Cache | None = build_cache(s)
        self.registry = RegistryHolder(self.store)
        self.raw: Channel[RawMessage] = Channel("raw", capacity=s.channel_capacity)
        self.mqtt: MqttSource | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_started = False
        self._lag_labels: set[tuple[str, str]] = set()
        self._sinks: list[KafkaSink[Any]] = []
        self._rollup_producer = producer(s.kafka_bootstrap)
        self.app = self._faust_app()
        self.weather = build_weather(s)
        self._forecast_sink: KafkaSink[LoadForecast] = KafkaSink(
            self._rollup_producer, topics.FORECASTS, key=lambda f: f.facility_id,
            encode=lambda f: f.model_dump_json().encode())
        self.forecast_service = ForecastService(
            self.store, self.weather, publish=self._forecast_sink.send, metrics=self.metrics,
            clock=self.clock, history_days=s.forecast_history_days,
            reselect_s=s.forecast_reselect_s)
        self.dr = KafkaDr(s, self.store, self.metrics, self.clock,
                          producer=self._rollup_producer, app=self.app)

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
        app.transport = _Transport(app.conf.broker_consumer, app)
        app.on_rebalance_complete.connect(_hold_flow_until_seek)
        raw_topic: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        readings = app.topic(topics.READINGS, **raw_topic)
        # Its events are whole fetches (``Fetched``): a queue of two of them at most, not
        # Faust's 4,096 events (which bounded records, not fetches). Set on the topic, as
        # app.topic() drops its ``maxsize`` argument (faust-streaming 0.15.3); the agent's
        # channel is a clone and keeps it.
        readings.maxsize = FETCHED_QUEUE_DEPTH
        dead = app.topic(topics.DEAD_LETTERS, **raw_topic)
        # Raw UTF-8 keys, as on the facility-keyed topics: the partitioner must hash a
        # facility's state to the partition of its readings (Faust would JSON-encode keys).
        # The types, not attributes set afterwards, pick the codec: app.Table() builds the
        # changelog topic at once, and a replacement worker's recovery decodes with that.
        table: Any = app.Table(STATE_TABLE, default=None, partitions=s.kafka_partitions,
                               use_partitioner=True, key_type=bytes, value_type=bytes)
        self.service = RollupService(
            RollupAggregator(self.registry(), s.windows),
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            # Rollups go out through a producer of our own in record batches (KafkaSink); a
            # batch of readings is acknowledged once its rollups are stored by Kafka.
            outputs={w: KafkaSink(self._rollup_producer, topics.ROLLUP_TOPICS[w.value],
                                  key=_facility_id, encode=_json)
                     for w in WindowName},
            # Late readings and records that are not readings, for whoever reads the topic
            # (the dead-letter agent stores them again: one row per source and payload).
            dead_letters=_dead_letter_sink(self._rollup_producer, fail_stop=False),
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
                await self.service.process(readings, ack=fetched.ack, rejected=rejected)

        async def dead_letters(stream: Any) -> None:
            await dead_letter_agent(
                _decoded(stream.take(batch, within=within), DeadLetter.model_validate_json),
                store=self.store,
            )

        async def idle_tick() -> None:
            await self.service.tick()

        async def revoked(*_: Any, **__: Any) -> None:
            await self.service.release()

        async def lag_tick() -> None:
            self._record_lag()

        app.agent(readings, name="sems.rollups")(rollup_agent)
        app.agent(dead, name="sems.dead-letters")(dead_letters)
        app.timer(interval=min(5.0, s.idle_timeout_s / 2))(idle_tick)
        app.timer(interval=LAG_INTERVAL_S)(lag_tick)
        app.on_partitions_revoked.connect(revoked)
        return app

    def _record_lag(self) -> None:
        """Consumer lag of this worker's input partitions: the partition's end offset minus
        the group's committed offset (what a restart would replay). Partitions that moved to
        another worker stop being reported here."""
        consumer: Any = self.app.consumer  # Faust's Consumer: _committed_offset is not typed
        gauge = self.metrics.kafka_lag
        reported: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            if tp.topic not in (topics.READINGS, topics.DEAD_LETTERS):
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue
            committed = consumer._committed_offset.get(tp) or 0
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
        await self.store.open()
        await self.weather.open()
        await self.reload_registry()
        await ensure_topics(self.settings.kafka_bootstrap,
                            topic_specs(partitions=self.settings.kafka_partitions))

    async def reload_registry(self) -> None:
        self.service.aggregator.registry = await self.registry.reload()

    async def start(self, *, ingest: bool = True, worker: bool = True) -> None:
        """Start a worker (the Faust app) and/or the MQTT (or in-process) ingest service."""
        s = self.settings
        if worker:
            await self._rollup_producer.start()
            await self.app.start()
            # Faust's Monitor keeps per-event statistics for its web views, which SEMS does not
            # serve (its own metrics are on /metrics): 3 % of a worker's CPU.
            if self.app.monitor in self.app.sensors:
                self.app.sensors.remove(self.app.monitor)
            self._worker_started = True
            self._tasks += [asyncio.create_task(c, name=name) for c, name in await self.dr.start()]
            if s.forecast_enabled:
                self._tasks += [
                    asyncio.create_task(forecast_agent(
                        self.forecast_service, interval_s=s.forecast_interval_s,
                        delay_s=s.forecast_delay_s, owned=self.owned_facilities),
                        name="forecast"),
                    asyncio.create_task(self.forecast_service.choose_forever(),
                                        name="forecast-models"),
                ]
        if not ingest:
            return
        self._producer = producer(s.kafka_bootstrap)
        await self._producer.start()
        readings: KafkaSink[SensorReading] = KafkaSink(
            self._producer, topics.READINGS, key=lambda r: r.facility_id,
            encode=lambda r: r.model_dump_json().encode())
        dead = _dead_letter_sink(self._producer)
        self._sinks = [readings, dead]
        self._tasks.append(asyncio.create_task(ingest_agent(
            self.raw.stream().take(s.batch_max, within=s.batch_within_s),
            readings=readings, dead_letters=dead, registry=self.registry,
            settings=ValidationSettings(max_future_s=s.max_future_s,
                                    max_age_s=s.retention_raw_days * 86_400.0),
            metrics=self.metrics, clock=self.clock,
        ), name="ingest"))
        if s.mqtt_url:
            self.mqtt = MqttSource(BrokerAddress.parse(s.mqtt_url), client_id=s.mqtt_client_id,
                                   share_group=s.mqtt_share_group, out=self.raw,
                                   metrics=self.metrics, clock=self.clock)
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="mqtt"))

    async def until_failed(self) -> str:
        """Returns, with the reason, once the Faust worker has crashed: its consumer (or
        another of its services) stopped on an error it does not recover from. Faust's own
        ``faust worker`` command then exits; a SEMS process must too (``Shutdown.stop_when``),
        as it would otherwise run on consuming nothing while its partitions stay assigned to
        it, and its supervisor restarts it."""
        services: list[Any] = [self.app, self.app.consumer]
        waits = [asyncio.ensure_future(s._crashed.wait()) for s in services]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        crashed = next(s for s in services if s.crashed)
        return f"{type(crashed).__name__} crashed: {getattr(crashed, 'crash_reason', None)!r}"

    def owned_facilities(self, facilities: list[Facility]) -> list[Facility]:
        """The facilities whose readings partition this worker holds: each worker forecasts its
        own, so forecasting scales out with the workers like the rollups do."""
        assigned = {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == topics.READINGS}
        n = self.settings.kafka_partitions
        return [f for f in facilities
                if partition_for(f.facility_id.encode(), n) in assigned]

    def stop_steps(self) -> list[Step]:
        """The orderly stop, as named steps (``streams.shutdown`` runs them under the grace
        and names the one it abandons when a broker or store does not answer)."""
        steps: list[Step] = [("tasks stop", self._stop_tasks),
                             ("ingest drain", self._drain_ingest)]
        if self._sinks or self._producer is not None:
            steps.append(("kafka producer flush (ingest)", self._flush_ingest))
        if self._worker_started:
            steps += [
                ("rollup commit", self.service.flush),
                ("faust worker stop", self.app.stop),
                ("rollup committer close", self.service.close),
                ("kafka producer flush (rollups, forecasts)", self._flush_worker_sinks),
                ("demand response close", self.dr.close),
                ("kafka producer stop (worker)", self._rollup_producer.stop),
            ]
        steps += [("forecast workers close", self._close_forecasts),
                  ("weather close", self.weather.close),
                  ("store close", self.store.close)]
        return steps

    async def stop(self) -> None:
        """The stop steps, one after another, without a deadline (tests, benchmarks)."""
        for _, call in self.stop_steps():
            await call()

    def _ingest_task(self) -> asyncio.Task[None] | None:
        return next((t for t in self._tasks if t.get_name() == "ingest"), None)

    async def _stop_tasks(self) -> None:
        ingest_task = self._ingest_task()
        for task in self._tasks:
            if task is not ingest_task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drain_ingest(self) -> None:
        await self.raw.close()
        ingest_task = self._ingest_task()
        if ingest_task is not None:
            await ingest_task

    async def _flush_ingest(self) -> None:
        for sink in self._sinks:
            with contextlib.suppress(Exception):  # a failed delivery was logged already
                await sink.close()
        if self._producer is not None:
            await self._producer.stop()

    async def _flush_worker_sinks(self) -> None:
        sinks: list[Any] = [*self.service.outputs.values(), self.service.dead_letters,
                            self._forecast_sink]
        for out in sinks:
            with contextlib.suppress(Exception):  # a failed delivery was logged already
                await cast(KafkaSink[Any], out).close()

    async def _close_forecasts(self) -> None:
        self.forecast_service.close()
