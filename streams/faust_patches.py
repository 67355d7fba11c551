"""Where SEMS works around faust-streaming's and aiokafka's internals: each of these reaches
into private parts of ``faust-streaming==0.15.3``, ``aiokafka==0.14.0`` and
``mode-streaming==0.7.1`` (pinned exactly in
pyproject.toml, checked at start-up by ``check_versions``, and watched by
tests/unit/test_faust_patches.py, which fails the day an upgrade moves an attribute used here).

- ``_RewindingConsumer``: records a fetch returns for a paused partition are fetched again
  rather than lost; never-committed partitions restart from their first offset; the livelock
  check skips partitions awaiting a position (aiokafka 0.14 asserts there); the records of
  ``FETCHED_TOPICS`` reach their agent a fetch at a time (``Fetched``).
- ``hold_flow_until_seek``: the flow stays stopped from the end of a table recovery until
  Faust has seeked the stream partitions back.
- ``committed_offset`` and ``crashed``: what Faust keeps privately about a partition's
  commit and a service's crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, cast

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

from connectors import kafka as topics

FAUST_STREAMING_VERSION: Final = "0.15.3"
AIOKAFKA_VERSION: Final = "0.14.0"
MODE_STREAMING_VERSION: Final = "0.7.1"
WRITTEN_FOR: Final = {"faust-streaming": FAUST_STREAMING_VERSION, "aiokafka": AIOKAFKA_VERSION,
                      "mode-streaming": MODE_STREAMING_VERSION}
"""The distributions (as pip names them) and the versions whose internals this module uses."""


@functools.cache
def check_versions() -> None:
    """Raise unless the installed faust-streaming and aiokafka are the versions this module was
    written for. Cheap to call again: a success is cached for the process, a failure raises
    every time."""
    for library, expected in WRITTEN_FOR.items():
        try:
            installed = version(library)
        except PackageNotFoundError:
            installed = "(not installed)"
        if installed != expected:
            raise RuntimeError(
                f"{library} {installed} is installed, but streams/faust_patches.py patches "
                f"the private parts of {library}=={expected}: re-check every attribute it "
                f"uses (tests/unit/test_faust_patches.py) against {library} {installed}, then "
                f"update WRITTEN_FOR there and the pin in pyproject.toml"
            )


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


class Transport(faust_aiokafka.Transport):
    Consumer = _RewindingConsumer


async def hold_flow_until_seek(app: Any, /, *_: Any, **__: Any) -> None:
    """Sent when table recovery ends. Faust then resumes the stream partitions before it seeks
    them back to their committed offsets, with the flow already running for the recovery: a
    fetch in between delivers records from wherever a discarded fetch left the position, and
    the seek then delivers the skipped ones after them, late for their windows. Stopped here,
    the flow restarts once Faust has seeked."""
    app.consumer.stop_flow()


def committed_offset(consumer: Any, tp: Any) -> int:
    """The group's committed offset of ``tp`` as this worker's Faust consumer last knew it
    (0 before the first commit)."""
    return int(consumer._committed_offset.get(tp) or 0)


def crashed(service: Any) -> asyncio.Event:
    """Set when a Faust (mode) service has crashed."""
    return cast(asyncio.Event, service._crashed)
