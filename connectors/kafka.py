"""Kafka: the topic contracts as code, and an idempotent producer with acks.

Topics are created by SEMS with explicit partitions and configs (the broker does not
auto-create them); docs/topics.md documents them and a test reads them with kcat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from streams.channels import Ack

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


class KafkaSink(Generic[T]):
    """Sends values to a topic, acknowledging each one upstream once Kafka has it.

    The same ``send(value, *, ack=...)`` shape as an in-process channel, so the ingest agent
    runs unchanged. At most ``max_in_flight`` sends are outstanding: when Kafka is slow, the
    agent waits, MQTT messages stay unacknowledged, and the broker holds the rest.
    """

    def __init__(self, kafka: AIOKafkaProducer, topic: str, *, key: Callable[[T], str],
                 encode: Callable[[T], bytes], max_in_flight: int = 20_000) -> None:
        self.kafka = kafka
        self.topic = topic
        self.key = key
        self.encode = encode
        self._slots = asyncio.Semaphore(max_in_flight)
        self.error: BaseException | None = None

    async def send(self, value: T, *, ack: Ack | None = None) -> None:
        if self.error is not None:
            raise DeliveryFailed(f"delivery to {self.topic} failed") from self.error
        await self._slots.acquire()
        try:
            delivery = await self.kafka.send(self.topic, self.encode(value),
                                             key=self.key(value).encode())
        except BaseException:
            self._slots.release()
            raise

        def delivered(fut: asyncio.Future[Any]) -> None:
            self._slots.release()
            if fut.cancelled() or fut.exception() is not None:
                self.error = fut.exception() or asyncio.CancelledError()
                log.error("delivery to %s failed: %r", self.topic, self.error)
            elif ack is not None:
                ack()

        delivery.add_done_callback(delivered)

    async def flush(self) -> None:
        await self.kafka.flush()
