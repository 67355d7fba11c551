"""Kafka: the topic contracts as code, and an idempotent producer with acks.

Topics are created by SEMS with explicit partitions and configs (the broker does not
auto-create them); docs/topics.md documents them and a test reads them with kcat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from core.acks import Ack
from core.logs import TRACE_HEADER, trace_id_var

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY_MS = 86_400_000

READINGS = "sensor-readings"
DEAD_LETTERS = "sensor-readings.dlq"
ROLLUP_TOPICS = {"1m": "rollups.1m", "15m": "rollups.15m", "1h": "rollups.1h"}
FORECASTS = "load-forecasts"
DR_EVENTS = "dr-events"
BMS_COMMANDS = "bms-commands"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value_schema: str
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(*, partitions: int) -> list[TopicSpec]:
    """Every topic SEMS owns. Facility-keyed topics share one partition count so that a
    facility's readings, rollups and table state live in the same partition number."""

    def delete(days: int) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS),
                "compression.type": "producer"}

    return [
        TopicSpec(READINGS, partitions, "facility_id", "sensor-reading.schema.json",
                  delete(7)),
        TopicSpec(DEAD_LETTERS, 1, "source", "dead-letter.schema.json", delete(30)),
        TopicSpec(ROLLUP_TOPICS["1m"], partitions, "facility_id", "rollup.schema.json",
                  delete(7)),
        TopicSpec(ROLLUP_TOPICS["15m"], partitions, "facility_id", "rollup.schema.json",
                  delete(30)),
        TopicSpec(ROLLUP_TOPICS["1h"], partitions, "facility_id", "rollup.schema.json",
                  delete(90)),
        # Filled by the forecasting and demand-response work (issues 6 and 7).
        TopicSpec(FORECASTS, partitions, "facility_id", "(issue 6)",
                  {"cleanup.policy": "compact", "compression.type": "producer"}),
        TopicSpec(DR_EVENTS, partitions, "facility_id", "(issue 7)", delete(365)),
        TopicSpec(BMS_COMMANDS, partitions, "facility_id", "(issue 7)", delete(365)),
    ]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` under the producers' default partitioner (Kafka's murmur2),
    the placement every facility-keyed topic and table shares."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> None:
    """Create missing topics with their configs; refuse existing ones with another partition
    count (re-partitioning would break per-facility ordering and state)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(s.name, s.partitions, 1, topic_configs=s.config)
               for s in specs if s.name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
        partitions = await _partition_counts(admin, [s.name for s in specs])
        for s in specs:
            if partitions.get(s.name) != s.partitions:
                raise RuntimeError(
                    f"topic {s.name} has {partitions.get(s.name)} partitions, SEMS expects "
                    f"{s.partitions}"
                )
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str], *,
                            timeout_s: float = 15.0) -> dict[str, int]:
    """Partitions per topic as the broker describes them. A topic created a moment ago can
    still show none until its metadata reaches the broker, so this waits for every topic to
    show some, up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        if all(counts.get(n) for n in names) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


def producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """Idempotent, acks from all in-sync replicas, batched and lz4-compressed."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 10,
        "max_batch_size": 256 * 1024,
        "compression_type": "lz4",
        "request_timeout_ms": 30_000,
        **overrides,
    }
    return AIOKafkaProducer(**options)


class DeliveryFailed(RuntimeError):
    pass


@dataclass(slots=True)
class _OpenBatch:
    """A record batch being filled for one partition, and the acks of its records."""

    batch: Any  # aiokafka's BatchBuilder
    acks: list[Ack | None] = field(default_factory=list)


class KafkaSink(Generic[T]):
    """Sends values to a topic, acknowledging each one upstream once Kafka has it.

    The same ``send(value, *, ack=...)`` shape as an in-process channel, so the ingest agent
    runs unchanged. Values are appended to one open record batch per partition (aiokafka's
    ``BatchBuilder``), placed by the default partitioner's hash of the key. A batch is shipped
    when it is full, or at the end of the event-loop turn in which values were sent if its
    partition has nothing on the way to the producer; otherwise it goes on filling until the
    partition's previous batch has been taken into a produce request. aiokafka keeps one
    waiting batch per partition and (idempotent) one request in flight per partition, so
    shipping every open batch at every loop turn made each request carry one turn's records:
    2,600 readings/s end to end on 2 cores, held by round trips, not by CPU
    (docs/performance.md). ``producer.send()`` per record cost about 20 us of Python each (a
    future, a metadata check, the partitioner's pure-Python murmur2); an append is a fraction
    of that. Batches are handed to the producer in the order they were opened, so each
    partition keeps the order of the sends.

    At most ``max_in_flight`` values are outstanding: when Kafka is slow, the agent waits, MQTT
    messages stay unacknowledged, and the broker holds the rest.

    A failed delivery (the producer gave up after its retries) makes every later ``send`` raise
    ``DeliveryFailed``: the pipeline stops rather than skip records. ``fail_stop=False`` is for
    topics whose records are kept in the store and published again when found missing (DR
    events, BMS commands): the failure is logged and later sends go on.
    """

    def __init__(self, kafka: AIOKafkaProducer, topic: str, *, key: Callable[[T], str],
                 encode: Callable[[T], bytes], max_in_flight: int = 20_000,
                 fail_stop: bool = True) -> None:
        self.kafka = kafka
        self.topic = topic
        self.key = key
        self.encode = encode
        self.max_in_flight = max_in_flight
        self.fail_stop = fail_stop
        self.in_flight = 0
        self.error: BaseException | None = None
        self._room = asyncio.Event()
        self._partitions = 0
        self._partition_of: dict[bytes, int] = {}
        self._open: dict[int, _OpenBatch] = {}
        self._ship_soon: asyncio.Handle | None = None
        self._to_ship: asyncio.Queue[tuple[int, _OpenBatch]] = asyncio.Queue()
        self._on_the_way: dict[int, int] = {}
        """Per partition, batches queued for the shipper or waiting for the producer to take
        them (``send_batch`` returns once the partition's previous batch is in a request)."""
        self._shipper: asyncio.Task[None] | None = None

    async def _partition(self, key: bytes) -> int:
        """The default partitioner's choice, remembered per key: aiokafka hashes every record
        with a pure-Python murmur2, and a fleet has only so many facilities."""
        found = self._partition_of.get(key)
        if found is None:
            if not self._partitions:
                self._partitions = len(await self.kafka.partitions_for(self.topic))
            found = self._partition_of[key] = partition_for(key, self._partitions)
        return found

    def _check(self) -> None:
        if self.error is not None:
            raise DeliveryFailed(f"delivery to {self.topic} failed") from self.error

    async def send(self, value: T, *, ack: Ack | None = None) -> None:
        self._check()
        while self.in_flight >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()
            self._check()
        key = self.key(value).encode()
        partition = await self._partition(key)
        payload = self.encode(value)
        trace_id = trace_id_var.get()
        headers = [(TRACE_HEADER, trace_id.encode())] if trace_id else []
        open_batch = self._open.get(partition)
        if open_batch is None or open_batch.batch.append(
                key=key, value=payload, timestamp=None, headers=headers) is None:
            if open_batch is not None:
                self._ship(partition)  # full
            open_batch = _OpenBatch(self.kafka.create_batch())
            if open_batch.batch.append(key=key, value=payload, timestamp=None,
                                       headers=headers) is None:
                raise ValueError(f"a record of {len(payload)} bytes exceeds the batch size")
            self._open[partition] = open_batch
        open_batch.acks.append(ack)
        self.in_flight += 1
        if self._ship_soon is None:
            self._ship_soon = asyncio.get_running_loop().call_soon(self._ship_all)

    def _ship_all(self, *, idle_only: bool = True) -> None:
        """Ship the open batches of the partitions with nothing on the way (every open batch
        with ``idle_only=False``); the others go on filling, and go when their partition's
        previous batch has been taken (``_ship_forever``)."""
        self._ship_soon = None
        for partition in list(self._open):
            if not idle_only or not self._on_the_way.get(partition):
                self._ship(partition)

    def _ship(self, partition: int) -> None:
        self._on_the_way[partition] = self._on_the_way.get(partition, 0) + 1
        self._to_ship.put_nowait((partition, self._open.pop(partition)))
        if self._shipper is None:
            self._shipper = asyncio.create_task(self._ship_forever(), name=f"ship-{self.topic}")

    async def _ship_forever(self) -> None:
        while True:
            partition, open_batch = await self._to_ship.get()
            try:
                delivery = await self.kafka.send_batch(open_batch.batch, self.topic,
                                                       partition=partition)
            except Exception as exc:  # recorded; the next send raises it
                self._failed(exc, len(open_batch.acks))
            else:
                delivery.add_done_callback(functools.partial(self._delivered, open_batch.acks))
            finally:
                self._on_the_way[partition] -= 1
                if not self._on_the_way[partition] and partition in self._open:
                    self._ship(partition)  # what filled while the previous one waited
                self._to_ship.task_done()

    def _delivered(self, acks: list[Ack | None], fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._failed(fut.exception() or asyncio.CancelledError(), len(acks))
            return
        for ack in acks:
            if ack is not None:
                ack()
        self.in_flight -= len(acks)
        self._room.set()

    def _failed(self, exc: BaseException, records: int) -> None:
        """Nothing of the batch is acknowledged: MQTT redelivers it after a restart."""
        if self.fail_stop:
            self.error = exc
        self.in_flight -= records
        self._room.set()
        log.error("delivery of %d records to %s failed: %r", records, self.topic, exc)

    async def flush(self) -> None:
        """Ship the open batches and wait until Kafka has acknowledged everything sent."""
        self._ship_all(idle_only=False)
        await self._to_ship.join()
        await self.kafka.flush()
        self._check()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._shipper is not None:
                self._shipper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._shipper
