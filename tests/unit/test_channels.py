"""In-memory channels: batching, back-pressure, fan-out, and acks after handling."""

import asyncio

import pytest

from core.channels import Channel

pytestmark = pytest.mark.unit


async def test_take_batches_and_acks_only_when_the_next_batch_is_asked_for() -> None:
    ch: Channel[int] = Channel("c", capacity=100)
    stream = ch.stream().take(3, within=0.01)
    acked: list[int] = []
    for i in range(5):
        await ch.send(i, ack=lambda i=i: acked.append(i))  # type: ignore[misc]
    first = await anext(stream)
    assert first == [0, 1, 2]
    assert acked == []  # being handled: not yet acknowledged
    second = await anext(stream)
    assert second == [3, 4]  # the rest, after at most `within`
    assert acked == [0, 1, 2]
    await ch.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert acked == [0, 1, 2, 3, 4]


async def test_every_subscriber_gets_every_event_and_the_ack_waits_for_all() -> None:
    ch: Channel[str] = Channel("c", capacity=10)
    a, b = ch.stream().take(10, within=0.0), ch.stream().take(10, within=0.0)
    acked: list[str] = []
    await ch.send("x", ack=lambda: acked.append("x"))
    assert await anext(a) == ["x"]
    assert await anext(b) == ["x"]
    await ch.close()
    with pytest.raises(StopAsyncIteration):
        await anext(a)
    assert acked == []  # b has not moved on yet
    with pytest.raises(StopAsyncIteration):
        await anext(b)
    assert acked == ["x"]


async def test_a_full_channel_blocks_the_producer() -> None:
    ch: Channel[int] = Channel("c", capacity=2)
    stream = ch.stream().take(10, within=0.0)
    await ch.send(1)
    await ch.send(2)
    blocked = asyncio.create_task(ch.send(3))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert await anext(stream) == [1, 2]
    await asyncio.wait_for(blocked, 1)
    assert await anext(stream) == [3]


async def test_sending_without_subscribers_acks_at_once() -> None:
    ch: Channel[int] = Channel("c", capacity=1)
    acked: list[int] = []
    await ch.send(1, ack=lambda: acked.append(1))
    assert acked == [1]
