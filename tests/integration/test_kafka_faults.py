"""The kafka runtime under faults on a real broker: a worker killed -9 mid-replay and replaced,
two workers sharing the partitions, a broker restart mid-stream. Each run must leave exactly
the rollups, readings and dead letters of an uninterrupted local-runtime run on the same
recorded input. Then kcat, a client no one here wrote, reads the topics; and a worker that
handed partitions over must leave their windows alone."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from connectors import kafka as topics
from connectors.kafka import ensure_topics, partition_for, topic_specs
from schemas.deadletter import DeadLetter
from schemas.raw import RawMessage
from schemas.reading import SensorReading
from schemas.rollup import Rollup
from simulators.fleet import Fleet, build_fleet
from streams import compose
from streams.kafka import KafkaRuntime
from tests.integration.helpers import eventually, provision, settings
from tests.integration.kafka_helpers import (
    IDLE_TIMEOUT_S,
    PARTITIONS,
    Outcome,
    Recorded,
    Worker,
    committed_offsets,
    dead_letter_reasons,
    ingested,
    local_baseline,
    produce,
    record,
    register,
    register_in,
    rollups,
    rounded,
    run_kcat,
    scalar,
    settled,
)
from tests.servers import Kafka

pytestmark = pytest.mark.integration

START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
MINUTES = 31
# Ten facilities: their ids hash to three of the four partitions (fac-001..009 to 0 and 3,
# fac-010 to 2), so however two workers split the partitions, both get readings.
FACILITIES, METERS = 10, 4
STEPS = MINUTES * 4  # one reading per meter every 15 s
READINGS = "SELECT COUNT(*) FROM readings"


@dataclass(frozen=True)
class Replay:
    fleet: Fleet
    recorded: Recorded
    baseline: Outcome

    @property
    def distinct_readings(self) -> int:
        return len(self.fleet.meters) * STEPS


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """The recorded input and its uninterrupted local-runtime outcome, once per module (on a
    thread of its own: the tests' event loops are not running yet)."""
    fleet = build_fleet(facilities=FACILITIES, meters_per_facility=METERS, seed=3)

    async def prepare() -> Replay:
        recorded = await record(fleet, start=START, minutes=MINUTES)
        baseline = await local_baseline(tmp_path_factory.mktemp("baseline"), fleet, recorded,
                                        expected_readings=len(fleet.meters) * STEPS)
        return Replay(fleet, recorded, baseline)

    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(asyncio.run, prepare()).result()
    # 40 meters and 10 facilities; minutes up to 00:30 close (the data ends 00:30:45, the
    # watermark trails it by 30 s), so do the 15-min windows 00:00 and 00:15.
    assert prepared.baseline.readings == prepared.distinct_readings
    assert len(prepared.baseline.rollups) == (40 + 10) * (30 + 2)
    assert prepared.baseline.dead_letters["late"] == 3
    assert sum(prepared.baseline.dead_letters.values()) == 3 + 8
    return prepared


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """``sems worker`` processes a test starts; any still running are stopped afterwards."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def start_worker(started: list[Worker], broker: Kafka, data_dir: Path, app_id: str) -> Worker:
    n = len(started) + 1
    worker = Worker(broker.bootstrap, data_dir, app_id, data_dir.parent / f"worker-{n}.log")
    started.append(worker.start())
    return worker


async def pace() -> None:
    """Between produced chunks: lets the test act while the replay is under way."""
    await asyncio.sleep(0.03)


def app_id() -> str:
    return f"sems-{uuid.uuid4().hex[:6]}"


ASSIGNED = re.compile(r"Setting newly assigned partitions \{(.*)\} for group")


def readings_partitions(worker: Worker) -> set[int]:
    """The ``sensor-readings`` partitions of the worker's latest assignment, from its log."""
    assignments = ASSIGNED.findall(worker.log())
    if not assignments:
        return set()
    found = re.findall(r"topic='sensor-readings', partition=(\d+)", assignments[-1])
    return {int(p) for p in found}


async def wait_assigned(worker: Worker) -> None:
    async def assigned() -> bool:
        if not worker.alive:
            raise AssertionError(f"the worker exited:\n{worker.log()[-3000:]}")
        return bool(readings_partitions(worker))

    await eventually(assigned, timeout_s=60, what="the worker's partition assignment")


def tracebacks(*workers: Worker) -> list[str]:
    return [f"{w.log_path.name}: {line}" for w in workers for line in w.log().splitlines()
            if line.startswith("Traceback") or " ERROR streams" in line
            or " ERROR agents" in line]


async def prepare(kafka: Kafka, replay: Replay, tmp_path: Path) -> tuple[Path, Path]:
    """A store with the fleet registered, and SEMS's topics on the broker."""
    data = tmp_path / "data"
    db = data / "sems.db"
    await register_in(db, replay.fleet)
    await ensure_topics(kafka.bootstrap, topic_specs(partitions=PARTITIONS))
    return data, db


async def test_worker_killed_mid_replay_is_replaced_without_loss_or_double_count(
    own_kafka: Kafka, replay: Replay, tmp_path: Path, workers: list[Worker]
) -> None:
    data, db = await prepare(own_kafka, replay, tmp_path)
    group = app_id()
    first = start_worker(workers, own_kafka, data, group)
    await wait_assigned(first)
    producing = asyncio.create_task(
        produce(own_kafka.bootstrap, ingested(replay.fleet, replay.recorded), chunk=40,
                pause=pace))

    async def under_way() -> bool:
        return scalar(db, READINGS) >= replay.distinct_readings // 3

    await eventually(under_way, timeout_s=60, what="the first worker storing a third")
    first.kill()
    killed_with = scalar(db, READINGS)
    assert killed_with < replay.distinct_readings, "kill -9 must land mid-replay"
    assert not producing.done(), "kill -9 must land while readings are still arriving"

    replacement = start_worker(workers, own_kafka, data, group)
    await producing
    # The replacement resumes from the committed offsets with the windows restored from the
    # changelog; the group hands it the partitions once the killed member's session expires.
    await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=90,
                  what="the uninterrupted run's outcome")
    assert replacement.alive
    assert tracebacks(first, replacement) == []


async def end_offsets(broker: Kafka, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def test_two_workers_share_the_partitions_and_give_the_same_result(
    own_kafka: Kafka, replay: Replay, tmp_path: Path, workers: list[Worker]
) -> None:
    data, db = await prepare(own_kafka, replay, tmp_path)
    records = ingested(replay.fleet, replay.recorded)
    group = app_id()
    first = start_worker(workers, own_kafka, data, group)
    # The first worker alone takes a third of the replay, then hands half its partitions,
    # with their windows, to the second.
    third = len(records) // 3
    await produce(own_kafka.bootstrap, records[:third])

    async def first_third_stored() -> bool:
        return scalar(db, READINGS) >= third * 9 // 10

    await eventually(first_third_stored, timeout_s=60, what="the first worker's share")
    second = start_worker(workers, own_kafka, data, group)

    async def shared() -> bool:
        mine, theirs = readings_partitions(first), readings_partitions(second)
        return bool(mine) and bool(theirs) and not mine & theirs and (
            mine | theirs == set(range(PARTITIONS)))

    await eventually(shared, timeout_s=60, what="both workers holding two partitions each")
    await produce(own_kafka.bootstrap, records[third:], chunk=40, pause=pace)
    await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=60,
                  what="the single-process run's outcome")
    assert first.alive and second.alive
    assert readings_partitions(first) | readings_partitions(second) == set(range(PARTITIONS))

    # Both consumed: each holds a partition with readings, and the group committed them all.
    ends = await end_offsets(own_kafka, topics.READINGS)
    assert any(ends[p] for p in readings_partitions(first))
    assert any(ends[p] for p in readings_partitions(second))

    async def all_committed() -> bool:
        committed = await committed_offsets(own_kafka.bootstrap, group)
        return all(committed.get(p, 0) == ends[p] for p in ends if ends[p])

    await eventually(all_committed, timeout_s=30, what="the group's offsets at the end")
    assert tracebacks(first, second) == []


async def replay_raw(raw: Any, recorded: Recorded, *, chunk: int) -> None:
    """Feed the recorded MQTT payloads to the ingest, as the MQTT source would."""
    for i in range(0, len(recorded), chunk):
        for topic, payload in recorded[i:i + chunk]:
            await raw.send(RawMessage(topic, payload, datetime.now(UTC)))
        await pace()


async def start_kafka_runtime(broker: Kafka, tmp_path: Path, fleet: Fleet) -> KafkaRuntime:
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=broker.bootstrap,
                   kafka_partitions=PARTITIONS, kafka_app_id=app_id(),
                   idle_timeout_s=IDLE_TIMEOUT_S)
    return await provision(compose.kafka(cfg), fleet)


async def test_pipeline_recovers_by_itself_from_a_broker_restart_mid_stream(
    own_kafka: Kafka, replay: Replay, tmp_path: Path
) -> None:
    runtime = await start_kafka_runtime(own_kafka, tmp_path, replay.fleet)
    db = runtime.settings.database_path
    try:
        feeding = asyncio.create_task(replay_raw(runtime.raw, replay.recorded, chunk=40))

        async def under_way() -> bool:
            return scalar(db, READINGS) >= replay.distinct_readings // 4

        await eventually(under_way, timeout_s=60, what="a quarter of the replay stored")
        await asyncio.to_thread(own_kafka.restart)
        assert scalar(db, READINGS) < replay.distinct_readings, "restart must land mid-stream"
        await feeding
        await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=90,
                      what="the uninterrupted run's outcome")
    finally:
        await runtime.stop()


async def topic_configs(broker: Kafka, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    return {r["resource_name"]: {c["config_names"]: c["config_value"]
                                 for c in r["config_entries"]}
            for response in described for r in response.to_object()["resources"]}


def rollup_row(r: Rollup) -> tuple[Any, ...]:
    """A rollup as ``rollups(db)`` reads it back from the store."""
    start_ms = round(r.window_start.timestamp() * 1000)
    return rounded((r.scope.value, r.meter_id or r.facility_id, r.window.value, start_ms,
                    r.sample_count, r.total_energy_kwh, r.avg_power_kw, r.max_power_kw,
                    r.min_power_kw, r.coverage))


async def test_kcat_reads_the_topics_as_a_data_engineer_would(
    own_kafka: Kafka, replay: Replay, tmp_path: Path
) -> None:
    runtime = await start_kafka_runtime(own_kafka, tmp_path, replay.fleet)
    db = runtime.settings.database_path
    try:
        await replay_raw(runtime.raw, replay.recorded, chunk=len(replay.recorded))
        await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=60,
                      what="the local run's outcome")
    finally:
        await runtime.stop()
    bootstrap = own_kafka.bootstrap

    # Rollups: keyed by facility, each value a valid Rollup equal to the stored row.
    out = await run_kcat("-C", "-b", bootstrap, "-t", topics.ROLLUP_TOPICS["1m"],
                         "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n")
    published = [line.split("\t", 1) for line in out.splitlines() if line]
    minute_rows = [row for row in rollups(db) if row[2] == "1m"]
    assert len(published) == len(minute_rows)  # one record per closed window, no repeats
    rows = []
    for key, value in published:
        rollup = Rollup.model_validate_json(value)
        assert key == rollup.facility_id
        rows.append(rollup_row(rollup))
    assert sorted(rows) == minute_rows

    # Readings: every valid payload once, keyed by facility, a facility on one partition.
    out = await run_kcat("-C", "-b", bootstrap, "-t", topics.READINGS, "-o", "beginning",
                         "-e", "-q", "-f", "%p\t%k\t%s\n")
    partition_of: dict[str, set[str]] = {}
    valid = 0
    for line in out.splitlines():
        partition, key, value = line.split("\t", 2)
        reading = SensorReading.model_validate_json(value)
        assert key == reading.facility_id
        partition_of.setdefault(key, set()).add(partition)
        valid += 1
    assert valid == sum(r.topic == topics.READINGS
                        for r in ingested(replay.fleet, replay.recorded))
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len(partition_of) == FACILITIES

    # Dead letters: each one the store holds, keyed by its source, the worker's late readings
    # included, once.
    out = await run_kcat("-C", "-b", bootstrap, "-t", topics.DEAD_LETTERS, "-o", "beginning",
                         "-e", "-q", "-f", "%k\t%s\n")
    reasons: Counter[str] = Counter()
    for line in out.splitlines():
        key, value = line.split("\t", 1)
        letter = DeadLetter.model_validate_json(value)
        assert key == letter.source
        reasons[letter.reason.value] += 1
    assert reasons == dead_letter_reasons(db)
    assert reasons["late"] > 0

    # Metadata: the partition counts and configs declared in connectors/kafka.py.
    specs = topic_specs(partitions=PARTITIONS)
    for spec in specs:
        listing = await run_kcat("-L", "-b", bootstrap, "-t", spec.name)
        assert f'topic "{spec.name}" with {spec.partitions} partitions' in listing
    configs = await topic_configs(own_kafka, [s.name for s in specs])
    for spec in specs:
        assert {k: configs[spec.name][k] for k in spec.config} == spec.config, spec.name


class ShiftedClock:
    """The wall clock of an in-process worker, which the test may move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def owned_partitions(runtime: KafkaRuntime) -> set[int]:
    return {tp.partition for tp in runtime.app.consumer.assignment()
            if tp.topic == topics.READINGS}


async def test_a_worker_leaves_the_windows_of_partitions_it_handed_over_alone(
    own_kafka: Kafka, replay: Replay, tmp_path: Path, workers: list[Worker]
) -> None:
    """After a rebalance, the worker that gave a partition away still holds, in its local copy
    of the state table, the windows it last saved for that partition's facilities. Its idle
    timer must not close those stale windows: they would overwrite the new owner's rollups."""
    clock = ShiftedClock()
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=own_kafka.bootstrap,
                   kafka_partitions=PARTITIONS, kafka_app_id=app_id(), idle_timeout_s=60)
    first = compose.kafka(cfg, clock=clock)
    db = cfg.database_path
    await first.open()
    await register(first.store, replay.fleet)
    await first.reload_registry()
    await first.start(ingest=False)
    try:
        records = ingested(replay.fleet, replay.recorded)
        third = len(records) // 3
        await produce(own_kafka.bootstrap, records[:third])

        async def first_third_stored() -> bool:
            return scalar(db, READINGS) >= third * 9 // 10

        await eventually(first_third_stored, timeout_s=60, what="the first worker's share")
        # The second worker never closes windows on the wall clock.
        second = start_worker(workers, own_kafka, cfg.data_dir, cfg.kafka_app_id)

        async def shared() -> bool:
            mine, theirs = owned_partitions(first), readings_partitions(second)
            return bool(mine) and bool(theirs) and not mine & theirs and (
                mine | theirs == set(range(PARTITIONS)))

        await eventually(shared, timeout_s=60, what="both workers holding two partitions each")
        await produce(own_kafka.bootstrap, records[third:])
        await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=60,
                      what="the single-process run's outcome")

        # Ten minutes pass for the first worker: its own facilities go idle and their last
        # minute closes; the handed-over facilities are not its to close.
        clock.offset = timedelta(minutes=10)
        facility_of = {m.meter_id: m.facility_id for m in replay.fleet.meters}
        mine = {f.facility_id for f in replay.fleet.facilities
                if partition_for(f.facility_id.encode(), PARTITIONS) in owned_partitions(first)}
        last_minute_ms = round((START + timedelta(minutes=MINUTES - 1)).timestamp() * 1000)

        async def idle_windows_closed() -> bool:
            return any(row[2] == "1m" and row[3] == last_minute_ms for row in rollups(db))

        await eventually(idle_windows_closed, timeout_s=30,
                         what="the first worker closing its idle facilities' last minute")
        rows = rollups(db)
        assert set(replay.baseline.rollups) <= set(rows)
        extra = set(rows) - set(replay.baseline.rollups)
        assert {facility_of.get(r[1], r[1]) for r in extra} <= mine
    finally:
        await first.stop()



async def test_a_rebalance_while_fetches_wait_for_a_stalled_store_loses_nothing(
    own_kafka: Kafka, replay: Replay, tmp_path: Path, workers: list[Worker]
) -> None:
    """The first worker's store stalls, so fetches pile up in front of its rollup agent (the
    queue is full and the fetch loop waits on it) when a second worker joins. The rebalance
    clears that queue; the worker must go on fetching the partitions it keeps once its store
    is back, and the outcome is the uninterrupted run's."""
    cfg = settings(tmp_path, runtime="kafka", kafka_bootstrap=own_kafka.bootstrap,
                   kafka_partitions=PARTITIONS, kafka_app_id=app_id(),
                   idle_timeout_s=IDLE_TIMEOUT_S, batch_max=200)
    first = compose.kafka(cfg)
    db = cfg.database_path
    await first.open()
    await register(first.store, replay.fleet)
    await first.reload_registry()
    store_back = asyncio.Event()
    commit = first.store.commit

    async def stalled(batch: Any) -> None:
        await store_back.wait()
        await commit(batch)

    first.store.commit = stalled  # type: ignore[method-assign]
    await first.start(ingest=False)
    try:
        await produce(own_kafka.bootstrap, ingested(replay.fleet, replay.recorded))

        async def queue_full() -> bool:
            index: Any = first.app.topics
            return any(c.queue.full() for c in index._topic_name_index.get(topics.READINGS, ()))

        await eventually(queue_full, timeout_s=60, what="fetches waiting for the stalled store")
        start_worker(workers, own_kafka, cfg.data_dir, cfg.kafka_app_id)

        async def rebalancing() -> bool:
            return bool(first.app.rebalancing)

        await eventually(rebalancing, timeout_s=60, what="the first worker giving partitions up")
        store_back.set()
        await settled(lambda: Outcome.of(db), replay.baseline, timeout_s=120,
                      what="the single-process run's outcome")
    finally:
        store_back.set()
        await first.stop()
