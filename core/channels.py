"""In-memory topics for the local runtime, with the part of Faust's stream API agents use.

A producer sends a value with its acknowledgement (``send(value, ack=...)``); a consumer takes
``Batch``es: the values, each with its ack (``core.acks``: the one envelope from the MQTT client
to the store's commit). ``stream.take(max_, within=...)`` acknowledges a batch when the agent
asks for the next one, as Faust does; ``stream.batches(...)`` leaves it to the agent, which
acknowledges (or hands each ack on) once what it made of the batch is safe.

Each subscriber has a bounded deque rather than an ``asyncio.Queue``: the queue's per-item
bookkeeping was a visible share of the ingest profile, and batches only need "wake me when
something arrives" and "wake me when there is room".
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from core.acks import Ack, SharedAck

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Sink(Protocol[T_contra]):
    """Where an agent sends its output: an in-process channel or a Kafka topic. ``ack`` is
    called once the value is safely handed on (handled downstream, or stored by Kafka)."""

    async def send(self, value: T_contra, *, ack: Ack | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """Events taken together, each with its acknowledgement (None: nothing upstream waits for
    it). An agent acknowledges the batch once it has handled it (``ack()``), or hands each
    value's ack on with what it made of the value (the ingest agent: a reading's PUBACK goes
    with it to the next channel)."""

    values: list[T]
    acks: list[Ack | None]

    def ack(self) -> None:
        for ack in self.acks:
            if ack is not None:
                ack()


FILL_GAP_S = 0.002


class _Subscriber(Generic[T]):
    __slots__ = ("_items", "_room", "buffer", "capacity", "closed", "wake_at")

    def __init__(self, capacity: int) -> None:
        self.buffer: deque[tuple[T, Ack | None]] = deque()
        self.capacity = capacity
        self.closed = False
        self.wake_at = 1
        """The consumer sleeps until the buffer holds this many events (or it times out)."""
        self._items: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def push(self, value: T, ack: Ack | None) -> None:
        self.buffer.append((value, ack))
        if len(self.buffer) >= self.wake_at:
            self._wake_consumer()

    def _wake_consumer(self) -> None:
        waiter = self._items
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self._wake_consumer()

    async def room(self) -> None:
        while len(self.buffer) >= self.capacity:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)

    def wake_producers(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    async def wait(self, *, until: int, max_wait_s: float | None) -> None:
        """Sleep until the buffer holds ``until`` events, the channel closes, or the timeout."""
        if len(self.buffer) >= until or self.closed:
            return
        loop = asyncio.get_running_loop()
        self.wake_at = until
        self._items = waiter = loop.create_future()
        handle = None
        if max_wait_s is not None:
            handle = loop.call_later(max_wait_s, self._wake_consumer)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._items = None
            self.wake_at = 1


class Channel(Generic[T]):
    """A bounded in-process topic; every subscribed stream gets every event."""

    def __init__(self, name: str, *, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._subscribers: list[_Subscriber[T]] = []

    def stream(self) -> EventStream[T]:
        sub: _Subscriber[T] = _Subscriber(self.capacity)
        self._subscribers.append(sub)
        return EventStream(self.name, sub)

    async def send(self, value: T, *, ack: Ack | None = None) -> None:
        """Deliver to every subscriber, waiting while any is full (back-pressure)."""
        subs = self._subscribers
        if not subs:
            if ack is not None:
                ack()
            return
        if len(subs) > 1 and ack is not None:
            ack = SharedAck(ack, len(subs))
        for sub in subs:
            if len(sub.buffer) >= sub.capacity:
                await sub.room()
            sub.push(value, ack)

    def depth(self) -> int:
        return max((len(s.buffer) for s in self._subscribers), default=0)

    async def close(self) -> None:
        """Streams end after the events already sent."""
        for sub in self._subscribers:
            sub.close()


class EventStream(Generic[T]):
    def __init__(self, name: str, sub: _Subscriber[T]) -> None:
        self.name = name
        self._sub = sub

    async def take(self, max_: int, *, within: float) -> AsyncIterator[list[T]]:
        """Batches of up to ``max_`` events, waiting at most ``within`` seconds after the first;
        each batch is acknowledged when the agent asks for the next.

        Ends when the channel is closed, after the events sent before closing.
        """
        async for batch in self.batches(max_, within=within):
            yield batch.values
            batch.ack()

    async def batches(self, max_: int, *, within: float) -> AsyncIterator[Batch[T]]:
        """As :meth:`take`, but the agent acknowledges each batch itself (Faust's
        ``noack_take``)."""
        sub = self._sub
        buffer = sub.buffer
        while True:
            await sub.wait(until=1, max_wait_s=None)
            if not buffer:
                return  # closed and drained
            if len(buffer) < max_ and within > 0:
                await self._fill(max_, within)
            n = min(max_, len(buffer))
            taken = [buffer.popleft() for _ in range(n)]
            sub.wake_producers()
            yield Batch([value for value, _ in taken], [ack for _, ack in taken])

    async def _fill(self, max_: int, within: float) -> None:
        """Wait for more events, but stop early when a short gap passes with none arriving:
        upstream is idle, or blocked until this batch is handled and acknowledged (the MQTT
        broker holds back messages beyond its in-flight window), so waiting longer would only
        stall the pipeline."""
        loop = asyncio.get_running_loop()
        sub = self._sub
        deadline = loop.time() + within
        while len(sub.buffer) < max_ and not sub.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            before = len(sub.buffer)
            await sub.wait(until=max_, max_wait_s=min(remaining, FILL_GAP_S))
            if len(sub.buffer) == before:
                return

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        async for batch in self.take(1, within=0.0):
            for value in batch:
                yield value
