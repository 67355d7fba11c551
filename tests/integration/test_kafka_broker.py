"""The local Kafka broker (infra/local/kafka.sh) as SEMS's Kafka runtime will use it: topics with
explicit configs, an idempotent compressed producer, consumers of ours and of someone else's
(kcat, librdkafka), and a producer that outlives a broker restart."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import (
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import KafkaError

from tests.servers import Kafka

pytestmark = pytest.mark.integration

TOPIC_CONFIGS = {"retention.ms": "3600000", "cleanup.policy": "delete"}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def create_topic(broker: Kafka, topic: str, *, partitions: int) -> dict[str, str]:
    """Create ``topic`` with TOPIC_CONFIGS; return the configs the broker reports back."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=TOPIC_CONFIGS)]
        )
        errors = [(e["topic"], e["error_code"], e["error_message"])
                  for e in response.to_object()["topic_errors"] if e["error_code"] != 0]
        if errors:
            raise RuntimeError(f"topic creation failed: {errors}")
        resource = ConfigResource(ConfigResourceType.TOPIC, topic,
                                  dict.fromkeys(TOPIC_CONFIGS))
        (described,) = await admin.describe_configs([resource])
        (entry,) = described.to_object()["resources"]
        return {c["config_names"]: c["config_value"] for c in entry["config_entries"]}
    finally:
        await admin.close()


def idempotent_producer(broker: Kafka) -> Any:
    return AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                            enable_idempotence=True, compression_type="gzip",
                            request_timeout_ms=10_000, retry_backoff_ms=200)


async def consume_all(broker: Kafka, topic: str, *, partitions_count: int,
                      timeout_s: float = 30) -> list[tuple[str, str, int]]:
    """(key, value, partition) of every record up to the topic's current end, without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    records: list[tuple[str, str, int]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} records of {topic} in {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend((m.key.decode(), m.value.decode(), m.partition) for m in batch)
    finally:
        await consumer.stop()
    return records


async def kcat_consume(broker: Kafka, topic: str) -> list[tuple[str, str]]:
    """Read the topic to its end with kcat (librdkafka), a client no one here wrote."""
    kcat = shutil.which("kcat")
    if kcat is None:
        raise RuntimeError("kcat is not installed: run infra/local/install-services.sh")
    proc = await asyncio.create_subprocess_exec(
        kcat, "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
        "-f", "%k %s\n",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"kcat exited {proc.returncode}: {err.decode()}")
    pairs = [line.split(" ", 1) for line in out.decode().splitlines() if line]
    return [(key, value) for key, value in pairs]


async def test_keyed_records_round_trip_through_aiokafka_and_kcat(kafka: Kafka) -> None:
    topic = unique("readings")
    assert await create_topic(kafka, topic, partitions=3) == TOPIC_CONFIGS
    # 6 meters x 10 readings; the key (meter id) picks the partition, so per-meter order holds.
    sent = [(f"meter-{i % 6}", f"reading-{i}") for i in range(60)]
    producer = idempotent_producer(kafka)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k.encode(), value=v.encode())
                   for k, v in sent]
        delivered = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    partition_of = {k: d.partition for (k, _), d in zip(sent, delivered, strict=True)}
    assert len(set(partition_of.values())) > 1  # 6 keys over 3 partitions: not all in one

    records = await consume_all(kafka, topic, partitions_count=3)
    assert len(records) == len(sent)
    for key, value, partition in records:
        assert partition == partition_of[key], (key, value)
    for meter in partition_of:
        # Within a key, the consumer sees the producer's order.
        assert [v for k, v, _ in records if k == meter] == [v for k, v in sent if k == meter]

    assert sorted(await kcat_consume(kafka, topic)) == sorted(sent)


async def deliver(producer: Any, topic: str, *, key: str, value: str,
                  timeout_s: float) -> None:
    """Send until the broker acknowledges, with a deadline (the broker may be restarting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await producer.send_and_wait(topic, key=key.encode(), value=value.encode())
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("outage", [
    Kafka.stop,  # a clean shutdown: the broker closes its logs and deregisters
    Kafka.kill,  # a crash: the restarted broker waits out the dead incarnation's session
], ids=["stop", "kill"])
async def test_producer_keeps_working_across_a_broker_restart(
    own_kafka: Kafka, outage: Callable[[Kafka], None]
) -> None:
    topic = unique("restart")
    await create_topic(own_kafka, topic, partitions=1)
    producer = idempotent_producer(own_kafka)
    await producer.start()
    try:
        await deliver(producer, topic, key="m", value="before", timeout_s=10)
        outage(own_kafka)
        # Sent while the broker is down: the producer holds it and retries.
        during = asyncio.create_task(
            deliver(producer, topic, key="m", value="during", timeout_s=60)
        )
        await asyncio.to_thread(own_kafka.start)
        await during
        await deliver(producer, topic, key="m", value="after", timeout_s=30)
    finally:
        await producer.stop()
    values = [v for _, v, _ in await consume_all(own_kafka, topic, partitions_count=1)]
    # deliver() resends after an error it cannot tell from a lost write, so a value may repeat;
    # none may be missing or out of order.
    assert list(dict.fromkeys(values)) == ["before", "during", "after"]
