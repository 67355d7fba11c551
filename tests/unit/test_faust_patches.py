"""Canary for streams/faust_patches.py: every private attribute and method of faust-streaming,
mode and aiokafka that the patches override, call or read is where they expect it, with the
signature they call it with, on the installed versions. A failure here after an upgrade names
what moved: re-check the patch that uses it before changing the pin.

Nothing connects: a Faust app and its consumer are built without starting them, and the
aiokafka consumer behind it is built and assigned partitions by hand."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.errors
import faust
import mode
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import (
    Assignment,
    Subscription,
    SubscriptionState,
    TopicPartitionState,
)
from aiokafka.structs import ConsumerRecord
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import faust_patches
from streams.faust_patches import (
    Fetched,
    Transport,
    _RewindingConsumer,
    check_versions,
    committed_offset,
    crashed,
    hold_flow_until_seek,
)

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
LIBRARY_CONSUMER = faust_aiokafka.Consumer
"""The class ``_RewindingConsumer`` extends: what it overrides and calls resolves here."""


def shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """A signature without its annotations (ours are strings, postponed): the names, kinds and
    defaults of the parameters, which are what a call binds to."""
    return [(p.name, p.kind, p.default)
            for p in inspect.signature(function).parameters.values()]


def binds(function: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Whether a call with these arguments, as a patch makes it, binds to ``function``."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic=topic, partition=partition, offset=offset, timestamp=1_000,
                          timestamp_type=0, key=b"k", value=b"v", checksum=None,
                          serialized_key_size=1, serialized_value_size=1,
                          headers=[("trace", b"t1")])


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[faust.App]:
    """A Faust app with SEMS's transport, as streams/kafka.py builds it, never started."""
    app = faust.App("canary", broker="kafka://localhost:1", store="memory://",
                    datadir=str(tmp_path / "faust"), autodiscover=False, web_enabled=False)
    app.transport = Transport(app.conf.broker_consumer, app)
    yield app
    # The consumer's thread made an event loop of its own, which only its (never started)
    # thread would close.
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]
    thread.thread_loop.close()


@pytest.fixture
async def consumer(app: faust.App) -> _RewindingConsumer:
    built = app.consumer
    assert isinstance(built, _RewindingConsumer)
    return built


@pytest.fixture
async def kafka_consumer(consumer: _RewindingConsumer
                         ) -> AsyncIterator[aiokafka.AIOKafkaConsumer]:
    """The aiokafka consumer Faust's consumer thread holds once started (``_thread._consumer``),
    subscribed to ``t``; assignments are made in the tests."""
    inner = aiokafka.AIOKafkaConsumer(bootstrap_servers="localhost:1")
    inner.subscribe(topics=["t"])
    consumer._thread._consumer = inner
    yield inner
    await inner.stop()


# -- versions ------------------------------------------------------------------------------


@pytest.fixture
def fresh_check() -> Iterator[None]:
    """``check_versions`` caches its success: each of these tests starts and ends uncached."""
    check_versions.cache_clear()
    yield
    check_versions.cache_clear()


def test_check_versions_passes_on_the_installed_versions(fresh_check: None) -> None:
    check_versions()
    check_versions()  # idempotent: streams/kafka.py may call it at every start


@pytest.mark.parametrize("library", sorted(faust_patches.WRITTEN_FOR))
def test_check_versions_names_the_library_that_differs(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(faust_patches, "version",
                        lambda name: "99.0.0" if name == library else real(name))
    expected = faust_patches.WRITTEN_FOR[library]
    with pytest.raises(RuntimeError) as raised:
        check_versions()
    message = str(raised.value)
    assert f"{library} 99.0.0 is installed" in message
    assert f"{library}=={expected}" in message
    assert "streams/faust_patches.py" in message


def test_check_versions_says_when_a_library_is_missing(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(faust_patches, "version", missing)
    with pytest.raises(RuntimeError, match=r"faust-streaming \(not installed\) is installed"):
        check_versions()


def test_check_versions_checks_once_per_process(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    check_versions()
    monkeypatch.setattr(faust_patches, "version", lambda name: "99.0.0")
    check_versions()  # cached: the metadata is not read again


def test_the_versions_are_the_pins() -> None:
    """The versions the patches were written for are the exact pins of pyproject.toml."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for library, expected in faust_patches.WRITTEN_FOR.items():
        assert f"{library}=={expected}" in dependencies


# -- what _RewindingConsumer overrides ---------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [
    ("getmany", inspect.isasyncgenfunction),
    ("_drain_messages", inspect.iscoroutinefunction),
    ("verify_event_path", inspect.isfunction),
    ("perform_seek", inspect.iscoroutinefunction),
])
def test_overrides_match_the_library(name: str, kind: Callable[[Any], bool]) -> None:
    """Each method ``_RewindingConsumer`` overrides still exists on Faust's consumer, takes the
    same parameters and is the same kind of function (a coroutine stays a coroutine)."""
    library = getattr(LIBRARY_CONSUMER, name)
    ours = _RewindingConsumer.__dict__[name]
    assert kind(library), f"{name} changed kind"
    assert kind(ours)
    assert shape(ours) == shape(library), f"{name} changed its signature"


def test_faust_still_calls_the_overrides() -> None:
    """The overrides only work while Faust calls them: the fetcher runs the consumer's
    ``_drain_messages``, the livelock check calls ``verify_event_path``, the recovery
    calls ``perform_seek``."""
    assert "consumer._drain_messages(self)" in inspect.getsource(faust_consumer.Fetcher)
    assert "self.verify_event_path(now, tp)" in inspect.getsource(faust_consumer.Consumer)
    assert "consumer.perform_seek()" in inspect.getsource(Recovery)


def test_transport_builds_the_rewinding_consumer(app: faust.App) -> None:
    assert faust_aiokafka.Transport.Consumer is faust_aiokafka.Consumer
    assert Transport.Consumer is _RewindingConsumer
    assert isinstance(app.consumer, _RewindingConsumer)
    assert isinstance(app.transport, Transport)


# -- what the overrides call on the consumer -------------------------------------------------


def test_inherited_methods_bind_as_the_patch_calls_them(consumer: _RewindingConsumer) -> None:
    tp = TP("t", 0)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any], Callable[[Any], bool] | None]] = [
        ("_wait_next_records", (1.0,), {}, inspect.iscoroutinefunction),
        ("_to_message", (tp, object()), {}, None),
        ("highwater", (tp,), {}, None),
        ("assignment", (), {}, None),
        ("seek", (tp, 3), {}, inspect.iscoroutinefunction),
        ("_add_gap", (tp, 1, 3), {}, inspect.iscoroutinefunction),
        ("commit", (), {}, inspect.iscoroutinefunction),
        ("ack", (object(),), {}, None),
        ("_is_changelog_tp", (tp,), {}, None),
        ("sleep", (0,), {}, inspect.iscoroutinefunction),
        ("wait_first", (object(), object()), {}, inspect.iscoroutinefunction),
        ("getmany", (), {"timeout": 1.0}, inspect.isasyncgenfunction),
    ]
    for name, args, kwargs, kind in calls:
        method = getattr(LIBRARY_CONSUMER, name)
        assert binds(method, consumer, *args, **kwargs), f"{name} no longer takes {args}"
        if kind is not None:
            assert kind(method), f"{name} changed kind"


def test_consumer_state_the_patch_reads(consumer: _RewindingConsumer) -> None:
    """Instance attributes, as Faust sets them in ``Consumer.__init__``."""
    tp = TP("t", 0)
    assert consumer._read_offset[tp] is None  # a defaultdict of None, indexed directly
    assert consumer._committed_offset.get(tp) is None
    assert consumer._buffered_partitions == set()
    assert consumer._commit_every is None or isinstance(consumer._commit_every, int)
    assert isinstance(consumer._n_acked, int)
    assert consumer.flow_active is True
    assert consumer.should_stop is False
    assert inspect.iscoroutinefunction(consumer.callback)  # awaited per record by _deliver
    assert inspect.iscoroutinefunction(consumer.suspend_flow.wait)
    assert consumer._stopped.is_set() is False
    consumer.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
    consumer.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
    assert consumer.transport.app.should_stop is False
    assert all(issubclass(e, BaseException) for e in consumer.consumer_stopped_errors)
    assert consumer.consumer_stopped_errors  # aiokafka's ConsumerStoppedError


async def test_wait_next_records_returns_records_and_active_partitions(
        consumer: _RewindingConsumer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``getmany`` unpacks ``_wait_next_records`` as (records by partition, active ones)."""
    tp = TP("t", 0)
    fetched = {tp: [record("t", 0, 5)]}

    async def getmany(active_partitions: set[TP] | None, timeout: float  # noqa: ASYNC109
                      ) -> Any:
        return fetched

    monkeypatch.setattr(consumer, "_getmany", getmany)
    consumer.resume_partitions({tp})
    records, active = await consumer._wait_next_records(0.1)
    assert records is fetched
    assert active == {tp}


def test_scheduler_iterates_records_by_partition(consumer: _RewindingConsumer) -> None:
    records = {TP("t", 0): [record("t", 0, 5)], TP("t", 1): [record("t", 1, 7)]}
    assert sorted((tp, r.offset) for tp, r in consumer.scheduler.iterate(records)) == [
        (TP("t", 0), 5), (TP("t", 1), 7)]


async def test_fetcher_has_a_stopped_event(app: faust.App) -> None:
    """``_drain_messages`` stops with the fetcher it is given (``fetcher._stopped``)."""
    fetcher = app._fetcher
    assert isinstance(fetcher, faust_consumer.Fetcher)
    assert fetcher._stopped.is_set() is False


# -- what the overrides call on the app -----------------------------------------------------


async def test_app_parts_the_patch_uses(app: faust.App, consumer: _RewindingConsumer) -> None:
    assert isinstance(app.consumer_generation_id, int)
    assert binds(app.monitor.track_tp_end_offset, TP("t", 0), 10)
    assert binds(app.topics.acks_enabled_for, "t")
    assert inspect.iscoroutinefunction(app.flow_control.acquire)
    assert inspect.iscoroutinefunction(app.producer.buffer.wait_until_ebb)
    assert isinstance(app.tables.changelog_topics, set)


async def test_messages_and_events_as_deliver_fetched_builds_them(
        app: faust.App, consumer: _RewindingConsumer) -> None:
    """A message from ``_to_message`` has what ``_deliver``, ``_refetch`` and ``Fetched`` read;
    ``incref`` and ``app.create_event(key, value, headers, message)`` make its event."""
    tp = TP("t", 0)
    message = consumer._to_message(tp, record("t", 0, 5))
    assert (message.tp, message.offset, message.topic, message.key) == (tp, 5, "t", b"k")
    message.incref(1)
    fetched = Fetched([message], consumer)
    assert fetched.header("trace") == b"t1"
    event = app.create_event(message.key, fetched, message.headers, message)
    assert event.value is fetched
    assert event.message is message


async def test_topic_name_index_maps_a_topic_to_its_channels(app: faust.App) -> None:
    """``_deliver_fetched`` finds the agent's channel in the conductor's
    ``_topic_name_index`` and puts the event on its ``queue``."""
    topic = app.topic("t")
    conductor: Any = app.topics
    conductor.add(topic)
    await conductor._update_indices()
    index = conductor._topic_name_index
    assert index.get("t") == {topic}
    assert index.get("unknown") is None  # ``.get``, not the defaultdict's []
    assert inspect.iscoroutinefunction(topic.queue.put)


# -- aiokafka's partition state ---------------------------------------------------------------


def test_aiokafka_partition_state_path() -> None:
    """``_assigned_state`` reads ``AIOKafkaConsumer._subscription`` (a SubscriptionState),
    ``.subscription.assignment.state_value(tp)`` and ``has_valid_position``."""
    assert isinstance(SubscriptionState.subscription, property)
    assert isinstance(Subscription.assignment, property)
    assert shape(Assignment.state_value)[:2] == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("tp", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty)]
    assert isinstance(TopicPartitionState.has_valid_position, property)
    assert faust_aiokafka.AIOKafkaConsumerThread._consumer is None  # until started
    assert inspect.iscoroutinefunction(faust_aiokafka.AIOKafkaConsumerThread.seek_to_beginning)
    assert issubclass(aiokafka.errors.IllegalStateError, Exception)


async def test_awaiting_position_through_faust_s_thread(
        consumer: _RewindingConsumer, kafka_consumer: aiokafka.AIOKafkaConsumer) -> None:
    """The whole path, on real objects: no assignment, then a partition assigned and awaiting
    its position (the livelock check is skipped), then seeked (checked)."""
    assert isinstance(kafka_consumer._subscription, SubscriptionState)
    tp = TP("t", 0)
    assert consumer._assigned_state(tp) is None
    kafka_consumer._subscription.assign_from_subscribed({TopicPartition("t", 0)})
    assert consumer._awaiting_position(tp) is True
    assert consumer._assigned_state(TP("t", 1)) is None  # not assigned here
    consumer.verify_event_path(0.0, tp)  # skipped: Faust's check would assert
    kafka_consumer._subscription.seek(TopicPartition("t", 0), 3)  # what its fetcher does
    assert consumer._awaiting_position(tp) is False


async def test_verify_event_path_still_asserts_on_a_missing_position(
        consumer: _RewindingConsumer, kafka_consumer: aiokafka.AIOKafkaConsumer) -> None:
    """What ``verify_event_path`` works around: Faust's check reads ``position``, which aiokafka
    asserts is set. The day it stops raising, the workaround can go."""
    kafka_consumer._subscription.assign_from_subscribed({TopicPartition("t", 0)})
    state = kafka_consumer._subscription.subscription.assignment.state_value(
        TopicPartition("t", 0))
    with pytest.raises(AssertionError):
        _ = state.position


async def test_perform_seek_records_commits_and_rewinds_the_fresh(
        consumer: _RewindingConsumer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's ``perform_seek`` keeps the committed offsets in ``_committed_offset`` (read by
    ``committed_offset`` and by the override), and the override seeks the never-committed
    partitions to the beginning through ``_thread.seek_to_beginning``."""
    committed, fresh = TP("t", 0), TP("t", 1)

    async def seek_to_committed() -> dict[TP, int | None]:
        return {committed: 42, fresh: None}  # aiokafka's ``committed``: None if never

    rewound: list[TopicPartition] = []

    async def seek_to_beginning(*partitions: TopicPartition) -> None:
        rewound.extend(partitions)

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "assignment", lambda: {committed, fresh})
    monkeypatch.setattr(consumer._thread, "seek_to_beginning", seek_to_beginning)
    await consumer.perform_seek()
    assert committed_offset(consumer, committed) == 42
    assert committed_offset(consumer, fresh) == 0
    assert rewound == [TopicPartition("t", 1)]


# -- hold_flow_until_seek and crashed -----------------------------------------------------------


async def test_rebalance_complete_stops_the_flow(app: faust.App,
                                                 consumer: _RewindingConsumer) -> None:
    """``on_rebalance_complete`` sends the app first; ``stop_flow`` stops the consumer."""
    app.on_rebalance_complete.connect(hold_flow_until_seek)
    await app.on_rebalance_complete.send()
    assert consumer.flow_active is False


@pytest.mark.parametrize("step", ["_resume_streams", "on_recovery_completed"])
def test_recovery_seeks_after_rebalance_complete_then_resumes_the_flow(step: str) -> None:
    """What ``hold_flow_until_seek`` relies on: Faust's recovery signals the end of a rebalance,
    then seeks the stream partitions, then resumes the flow. Were the flow no longer resumed
    after the signal, the held flow would never restart."""
    source = inspect.getsource(getattr(Recovery, step))
    sent = source.index("on_rebalance_complete.send()")
    seek = source.index("consumer.perform_seek()")
    resumed = source.index("consumer.resume_flow()")
    assert sent < seek < resumed


async def test_crashed_is_the_event_mode_sets() -> None:
    service = mode.Service()
    event = crashed(service)
    assert event.is_set() is False
    assert inspect.iscoroutinefunction(event.wait)
    event.set()
    assert service.crashed is True
    assert service.should_stop is True
    assert issubclass(LIBRARY_CONSUMER, mode.Service)


async def test_crash_sets_it(consumer: _RewindingConsumer) -> None:
    """mode's ``crash`` sets ``_crashed``, which streams/kafka.py waits on."""
    waiting = asyncio.ensure_future(crashed(consumer).wait())
    await consumer.crash(RuntimeError("canary"))
    await asyncio.wait_for(waiting, timeout=5)
    assert consumer.crashed
