"""The ingest's Kafka sink on the real broker: every value lands once, each facility's values in
the order they were sent, in the partition the default partitioner picks for its key; acks come
only once Kafka has a value; in-flight values stay bounded when the agent sends faster."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from connectors.kafka import (
    DeliveryFailed,
    KafkaSink,
    TopicSpec,
    ensure_topics,
    partition_for,
    producer,
)
from core.logs import TRACE_HEADER, trace_id_var
from tests.servers import Kafka

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def fresh_topic(broker: Kafka) -> str:
    topic = f"sink-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS, "facility_id", "-")])
    return topic


async def read_all(broker: Kafka, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the first ``count`` records, per partition in offset order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    out: list[tuple[int, bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < count:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    out.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return out


async def test_each_value_lands_once_in_its_keys_partition_in_send_order(kafka: Kafka) -> None:
    topic = await fresh_topic(kafka)
    kafka_producer = producer(kafka.bootstrap)
    await kafka_producer.start()
    acked: list[tuple[str, int]] = []
    values = [(f"fac-{i % 25:03d}", i) for i in range(6_000)]
    try:
        sink: KafkaSink[tuple[str, int]] = KafkaSink(
            kafka_producer, topic, key=lambda v: v[0], encode=lambda v: str(v[1]).encode())
        for value in values:
            await sink.send(value, ack=functools.partial(acked.append, value))
            if value[1] % 500 == 0:
                await asyncio.sleep(0)  # as an agent between its batches
        await sink.flush()
        await sink.close()
    finally:
        await kafka_producer.stop()

    assert sorted(acked, key=lambda v: v[1]) == values
    records = await read_all(kafka, topic, len(values))
    assert len(records) == len(values)
    sent_per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for fid, i in values:
        sent_per_key[fid.encode()].append(str(i).encode())
    got_per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for partition, key, payload in records:
        assert partition == partition_for(key, PARTITIONS)
        got_per_key[key].append(payload)
    assert got_per_key == sent_per_key


async def test_in_flight_values_stay_bounded_and_are_acked_only_once_stored(
    kafka: Kafka,
) -> None:
    topic = await fresh_topic(kafka)
    kafka_producer = producer(kafka.bootstrap, linger_ms=50)
    await kafka_producer.start()
    acked = 0
    peak = 0

    def ack() -> None:
        nonlocal acked
        acked += 1

    try:
        sink: KafkaSink[int] = KafkaSink(kafka_producer, topic, key=lambda v: f"fac-{v % 7}",
                                         encode=lambda v: str(v).encode(), max_in_flight=300)
        for i in range(3_000):
            await sink.send(i, ack=ack)
            peak = max(peak, sink.in_flight)
            assert i + 1 - acked <= 300
        # Nothing is acknowledged before the broker has it: the linger holds the last batches.
        assert acked < 3_000
        await sink.flush()
        await sink.close()
    finally:
        await kafka_producer.stop()
    assert acked == 3_000
    assert peak == 300  # the bound was reached, and held
    assert len(await read_all(kafka, topic, 3_000)) == 3_000


async def test_records_carry_the_trace_id_of_the_batch_that_sent_them(kafka: Kafka) -> None:
    """On-call follows a batch from the ingest's log records to the worker's: each record has
    the sending batch's trace id in its sems-trace-id header (none outside a trace)."""
    topic = await fresh_topic(kafka)
    kafka_producer = producer(kafka.bootstrap)
    await kafka_producer.start()
    try:
        sink: KafkaSink[str] = KafkaSink(kafka_producer, topic, key=lambda v: "fac-001",
                                         encode=str.encode)
        for trace_id, value in (("batch-a", "1"), ("batch-b", "2"), (None, "3")):
            token = trace_id_var.set(trace_id)
            await sink.send(value)
            trace_id_var.reset(token)
        await sink.flush()
        await sink.close()
    finally:
        await kafka_producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    headers: dict[bytes, list[tuple[str, bytes]]] = {}
    try:
        async with asyncio.timeout(60):
            while len(headers) < 3:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    headers.update({r.value or b"": list(r.headers) for r in records})
    finally:
        await consumer.stop()
    assert headers == {b"1": [(TRACE_HEADER, b"batch-a")], b"2": [(TRACE_HEADER, b"batch-b")],
                       b"3": []}


@pytest.mark.parametrize("fail_stop", [True, False])
async def test_a_failed_delivery_stops_the_sink_unless_its_records_are_kept_elsewhere(
    kafka: Kafka, fail_stop: bool,
) -> None:
    """The broker refuses a record over the topic's max.message.bytes (not retriable). The
    readings' sink then refuses every later send, so the pipeline stops rather than skip; a DR
    sink (``fail_stop=False``: its records are in the store and published again) goes on."""
    topic = f"sink-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1, "facility_id", "-",
                                                    {"max.message.bytes": "2000"})])
    kafka_producer = producer(kafka.bootstrap)
    await kafka_producer.start()
    acked: list[int] = []
    try:
        # Random bytes, which lz4 cannot shrink under the limit.
        sink: KafkaSink[int] = KafkaSink(
            kafka_producer, topic, key=lambda v: "fac-001",
            encode=lambda v: os.urandom(v) if v > 100 else b"x" * v, fail_stop=fail_stop)
        await sink.send(5_000, ack=functools.partial(acked.append, 5_000))
        if fail_stop:
            with pytest.raises(DeliveryFailed):
                await sink.flush()
            with pytest.raises(DeliveryFailed):
                await sink.send(10, ack=functools.partial(acked.append, 10))
        else:
            await sink.flush()  # logged
            await sink.send(10, ack=functools.partial(acked.append, 10))
            await sink.flush()
    finally:
        await kafka_producer.stop()
    assert acked == ([] if fail_stop else [10])
    if not fail_stop:
        assert [v for _, _, v in await read_all(kafka, topic, 1)] == [b"x" * 10]
