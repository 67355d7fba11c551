"""In-memory topics for the local runtime, with the part of Faust's stream API agents use.

Agents iterate ``stream.take(max_, within=...)`` exactly as on a Faust stream. As in Faust, an
event is acknowledged when the agent asks for the next batch, i.e. after it has been handled;
the MQTT connector hangs its PUBACK on that, so a reading is confirmed to the broker only once
it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Ack = Callable[[], None]


class _Closed:
    pass


_CLOSED = _Closed()


@dataclass(slots=True)
class _Delivery(Generic[T]):
    value: T
    ack: _SharedAck | None


class _SharedAck:
    """Fires the producer's ack once every subscriber has handled the event."""

    __slots__ = ("_ack", "_pending")

    def __init__(self, ack: Ack, pending: int) -> None:
        self._ack = ack
        self._pending = pending

    def done(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._ack()


class Channel(Generic[T]):
    """A bounded in-process topic; every subscribed stream gets every event."""

    def __init__(self, name: str, *, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._queues: list[asyncio.Queue[_Delivery[T] | _Closed]] = []

    def stream(self) -> EventStream[T]:
        queue: asyncio.Queue[_Delivery[T] | _Closed] = asyncio.Queue(self.capacity)
        self._queues.append(queue)
        return EventStream(self.name, queue)

    async def send(self, value: T, *, ack: Ack | None = None) -> None:
        """Deliver to every subscriber, waiting while any is full (back-pressure)."""
        if not self._queues:
            if ack is not None:
                ack()
            return
        shared = _SharedAck(ack, len(self._queues)) if ack is not None else None
        for q in self._queues:
            await q.put(_Delivery(value, shared))

    def depth(self) -> int:
        return max((q.qsize() for q in self._queues), default=0)

    async def close(self) -> None:
        for q in self._queues:
            await q.put(_CLOSED)


class EventStream(Generic[T]):
    def __init__(self, name: str, queue: asyncio.Queue[_Delivery[T] | _Closed]) -> None:
        self.name = name
        self._queue = queue

    async def take(self, max_: int, *, within: float) -> AsyncIterator[list[T]]:
        """Batches of up to ``max_`` events, waiting at most ``within`` seconds after the first.

        Ends when the channel is closed, after the events sent before closing.
        """
        loop = asyncio.get_running_loop()
        q = self._queue
        closed = False
        while not closed:
            first = await q.get()
            if isinstance(first, _Closed):
                return
            batch = [first]
            deadline = loop.time() + within
            while len(batch) < max_:
                try:
                    item = q.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(q.get(), timeout)
                    except TimeoutError:
                        break
                if isinstance(item, _Closed):
                    closed = True
                    break
                batch.append(item)
            yield [d.value for d in batch]
            for d in batch:
                if d.ack is not None:
                    d.ack.done()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        async for batch in self.take(1, within=0.0):
            for value in batch:
                yield value
