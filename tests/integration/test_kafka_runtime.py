"""The kafka runtime on a real broker: the same recorded readings give the same rollups as the
local runtime."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy

from connectors import kafka as topics
from core.channels import Channel
from schemas.raw import RawMessage
from simulators.fleet import Fleet, build_fleet
from simulators.publish import Faults, Simulation
from streams import compose
from streams.kafka import KafkaRuntime
from tests.integration.helpers import count_is, eventually, provision, settings, start_runtime
from tests.integration.kafka_helpers import (
    Record,
    committed_offsets,
    ingested,
    produce,
    register,
    rollups,
    run_kcat,
    scalar,
)
from tests.servers import Kafka

pytestmark = pytest.mark.integration

START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


async def record(fleet: Fleet) -> list[tuple[str, bytes]]:
    """Forty-one minutes of the fleet with duplicates, out-of-order, late and bad messages."""
    out: list[tuple[str, bytes]] = []

    async def keep(topic: str, payload: bytes) -> None:
        out.append((topic, payload))

    sim = Simulation(fleet, keep, faults=Faults(duplicate_rate=0.03, delay_rate=0.03,
                                                late_count=3, malformed_count=8), seed=5)
    await sim.run_range(START, START + timedelta(minutes=41), inject_at=START + timedelta(
        minutes=20))
    return out


async def replay(raw: Channel[RawMessage], recorded: list[tuple[str, bytes]]) -> None:
    for topic, payload in recorded:
        await raw.send(RawMessage(topic, payload, datetime.now(UTC)))


async def test_kafka_and_local_runtimes_give_identical_rollups(
    kafka: Kafka, tmp_path: Path
) -> None:
    fleet = build_fleet(facilities=4, meters_per_facility=6, seed=3)
    recorded = await record(fleet)
    # 24 meters x 164 steps; the data ends 41 min in, so minutes up to 00:40 close.
    expected_readings = 24 * 164

    local = await start_runtime(settings(tmp_path / "local"), fleet)
    try:
        await replay(local.raw, recorded)
        await eventually(lambda: count_is(local, "SELECT COUNT(*) FROM readings",
                                          expected_readings), timeout_s=30, what="local")
    finally:
        await local.stop()

    cfg = settings(tmp_path / "kafka", runtime="kafka", kafka_bootstrap=kafka.bootstrap,
                   kafka_partitions=4, kafka_app_id=f"sems-{uuid.uuid4().hex[:6]}")
    remote = await provision(compose.kafka(cfg), fleet)
    try:
        await replay(remote.raw, recorded)
        db = cfg.database_path
        expected = rollups(local.settings.database_path)
        assert len(expected) > 24 * 40

        async def same() -> bool:
            return rollups(db) == expected

        await eventually(same, timeout_s=60, what="kafka rollups equal to local rollups")

        # On-call sees each input partition's lag, and it comes down to zero once the group
        # has committed everything.
        async def no_lag() -> bool:
            registry = remote.metrics.registry
            lags = [registry.get_sample_value("sems_kafka_consumer_lag_messages",
                                              {"topic": "sensor-readings", "partition": str(p)})
                    for p in range(4)]
            return lags == [0.0] * 4

        await eventually(no_lag, timeout_s=30, what="consumer lag 0 on the 4 input partitions")
        with sqlite3.connect(db) as conn:
            dead = conn.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY 1")
            reasons = dict(dead.fetchall())
        assert reasons["late"] == 3
        assert sum(reasons.values()) == 11
    finally:
        await remote.stop()


async def test_records_breaking_the_readings_contract_are_dead_letters_and_the_rest_flows(
    own_kafka: Kafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data engineer's producer writes to ``sensor-readings`` too: a record that is not a
    reading becomes a dead letter naming the topic and the reason, the readings around it
    are stored, and the group commits past it (a bad record must not stall its partition)."""
    fleet = build_fleet(facilities=2, meters_per_facility=3, seed=3)
    clean: list[tuple[str, bytes]] = []

    async def keep(topic: str, payload: bytes) -> None:
        clean.append((topic, payload))

    await Simulation(fleet, keep, seed=5).run_range(START, START + timedelta(minutes=6))
    good = ingested(fleet, clean)
    assert {r.topic for r in good} == {topics.READINGS}
    key = good[0].key
    # The third, 900 kB of random bytes, is refused unparsed (payload_too_large); its dead
    # letter keeps the first 2 KiB, so it is stored and its copy reaches the dead-letter topic
    # (before the bound, 1.2 MB of base64 was more than Kafka takes in one record).
    bad = [Record(topics.READINGS, key, b'{"meter_id": "M-1"}'),
           Record(topics.READINGS, key, b"\xff\xfe not json"),
           Record(topics.READINGS, key, b"\xff" + random.Random(1).randbytes(900_000))]
    half = len(good) // 2
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=own_kafka.bootstrap,
                   kafka_partitions=4, kafka_app_id=f"sems-{uuid.uuid4().hex[:6]}",
                   idle_timeout_s=3600.0)
    worker = compose.kafka(cfg)
    await worker.open()
    await register(worker.store, fleet)
    await worker.reload_registry()
    await worker.start(ingest=False)
    try:
        await produce(own_kafka.bootstrap, [*good[:half], *bad, *good[half:]])
        db = cfg.database_path

        async def stored() -> bool:
            return (scalar(db, "SELECT COUNT(*) FROM readings") == len(good)
                    and scalar(db, "SELECT COUNT(*) FROM dead_letters") == 3)

        await eventually(stored, timeout_s=60, what=f"{len(good)} readings and 3 dead letters")
        with sqlite3.connect(db) as conn:
            dead = sorted(conn.execute("SELECT source, reason FROM dead_letters"))
        assert dead == [("sensor-readings", "malformed_json"),
                        ("sensor-readings", "missing_field"),
                        ("sensor-readings", "payload_too_large")]
        for reason in ("malformed_json", "payload_too_large"):
            assert worker.metrics.registry.get_sample_value(
                "sems_readings_rejected_total", {"reason": reason}) == 1.0

        async def copies_published() -> bool:
            out = await run_kcat("-C", "-b", own_kafka.bootstrap, "-t", topics.DEAD_LETTERS,
                                 "-o", "beginning", "-e", "-q", "-f", "%s\n")
            reasons = sorted(orjson.loads(line)["reason"] for line in out.splitlines() if line)
            return reasons == ["malformed_json", "missing_field", "payload_too_large"]

        await eventually(copies_published, timeout_s=30,
                         what="the three dead letters on the dead-letter topic")
        assert f"to {topics.DEAD_LETTERS} failed" not in caplog.text

        async def committed_past_them() -> bool:
            offsets = await committed_offsets(own_kafka.bootstrap, cfg.kafka_app_id)
            return sum(offsets.values()) == len(good) + len(bad)

        await eventually(committed_past_them, timeout_s=30,
                         what="offsets committed past the bad records")
    finally:
        await worker.stop()


def _partition_states(worker: KafkaRuntime) -> dict[Any, Any]:
    """aiokafka's state of each partition assigned to the worker's consumer."""
    consumer: Any = worker.app.consumer
    assignment = consumer._thread._consumer._subscription.subscription.assignment
    return {tp: assignment.state_value(TopicPartition(tp.topic, tp.partition))
            for tp in consumer.assignment()}


async def test_a_partition_awaiting_its_position_neither_crashes_nor_stops_the_worker(
    own_kafka: Kafka, tmp_path: Path
) -> None:
    """After the seek to the beginning of a never-committed partition (a restarted worker),
    aiokafka holds no position until it has reset it. Faust's livelock check, every 2.5 s,
    read that position: aiokafka 0.14 asserts it is set, so the check raised, the consumer
    crashed, and the worker ran on consuming nothing (the production-profile crash test lost
    its second half this way). Here a partition awaiting its position is checked the way that
    check does, and readings go on being stored."""
    fleet = build_fleet(facilities=2, meters_per_facility=3, seed=3)
    recorded: list[tuple[str, bytes]] = []

    async def keep(topic: str, payload: bytes) -> None:
        recorded.append((topic, payload))

    await Simulation(fleet, keep, seed=5).run_range(START, START + timedelta(minutes=10))
    half = len(recorded) // 2
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=own_kafka.bootstrap,
                   kafka_partitions=4, kafka_app_id=f"sems-{uuid.uuid4().hex[:6]}",
                   idle_timeout_s=3600.0)
    worker = await provision(compose.kafka(cfg), fleet)
    failed = asyncio.ensure_future(worker.until_failed())
    try:
        await replay(worker.raw, recorded[:half])
        db = cfg.database_path

        async def some_stored() -> bool:
            return scalar(db, "SELECT COUNT(*) FROM readings") > 0

        await eventually(some_stored, timeout_s=60, what="the first readings stored")

        async def every_partition_fetched() -> bool:
            states = _partition_states(worker)
            return len(states) > 0 and all(s is not None and s.timestamp for s in
                                           states.values())

        await eventually(every_partition_fetched, timeout_s=30, what="a fetch of every "
                         "assigned partition")
        consumer: Any = worker.app.consumer
        states = _partition_states(worker)

        async def reset_all() -> None:  # what seek_to_beginning does, on aiokafka's thread
            for state in states.values():
                state.await_reset(OffsetResetStrategy.EARLIEST)

        await consumer._thread.call_thread(reset_all)
        checked = 0
        for tp, state in states.items():
            if not state.has_valid_position:  # aiokafka has not reset it yet
                consumer.verify_event_path(time.monotonic(), tp)
                checked += 1
        assert checked > 0, "every position was reset before it could be checked"
        await consumer.verify_all_partitions_active()
        assert not consumer.crashed and not failed.done()

        await replay(worker.raw, recorded[half:])
        expected = 6 * 40  # 6 meters x 10 minutes of 15 s readings

        async def all_stored() -> bool:
            return scalar(db, "SELECT COUNT(*) FROM readings") == expected

        await eventually(all_stored, timeout_s=60, what=f"{expected} readings stored")
        assert not consumer.crashed and not failed.done()
    finally:
        failed.cancel()
        await worker.stop()


async def test_a_crashed_consumer_is_the_worker_failing(own_kafka: Kafka, tmp_path: Path) -> None:
    """What ``sems run``/``sems worker`` watch to stop and exit non-zero (its supervisor
    restarts it) instead of running on with a dead consumer."""
    fleet = build_fleet(facilities=1, meters_per_facility=1, seed=3)
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=own_kafka.bootstrap,
                   kafka_partitions=2, kafka_app_id=f"sems-{uuid.uuid4().hex[:6]}")
    worker = await provision(compose.kafka(cfg), fleet)
    failed = asyncio.ensure_future(worker.until_failed())
    try:
        await asyncio.sleep(0)
        assert not failed.done()
        consumer: Any = worker.app.consumer
        await consumer.crash(RuntimeError("broken fetch loop"))
        reason = await asyncio.wait_for(failed, timeout=10)
        assert "crashed" in reason and "broken fetch loop" in reason
    finally:
        failed.cancel()
        await worker.stop()
