"""One connection of the MQTT subscriber to its broker, as an asyncio protocol: what arrives is
decoded (``connectors.mqtt_codec``) and queued, replies to the subscriber's requests are
handed over, acknowledgements of one loop turn go out as one write, and reading pauses while
too many messages wait (``connectors.mqtt.MqttSource`` drives it)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TypeVar

from connectors import mqtt_codec as wire

log = logging.getLogger("connectors.mqtt")
P = TypeVar("P", wire.Connack, wire.Suback)


class MqttConnectionLost(Exception):
    """The link to the broker broke, or the broker refused it; the subscriber connects again."""


class BrokerLink(asyncio.Protocol):
    """One connection to the broker: decodes what arrives, queues the messages, writes acks.

    Reading pauses once ``high`` messages wait (the decoder keeps the bytes after the
    ``high``-th undecoded) and resumes when they are down to ``low``."""

    def __init__(self, *, high: int, low: int) -> None:
        self.high = high
        self.low = low
        self.messages: collections.deque[wire.Publish] = collections.deque()
        self.peak_waiting = 0
        self.last_heard = time.monotonic()
        self._decoder = wire.Decoder()
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._lost: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None
        self._replies: dict[type, asyncio.Future[wire.Packet]] = {}
        self._acks: list[int] = []
        self._ack_scheduled = False
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        self._decode(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or MqttConnectionLost("the broker closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- the subscriber's side -----------------------------------------------------------

    def send(self, packet: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise MqttConnectionLost("the connection is closed")
        self._transport.write(packet)

    def expect(self, kind: type[P]) -> asyncio.Future[wire.Packet]:
        """The next ``kind`` packet the broker sends (registered before the request goes)."""
        future: asyncio.Future[wire.Packet] = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            future.set_exception(self._lost)
        else:
            self._replies[kind] = future
        return future

    async def reply(self, kind: type[P], timeout_s: float | None,
                    future: asyncio.Future[wire.Packet] | None = None) -> P:
        future = future if future is not None else self.expect(kind)
        try:
            packet = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MqttConnectionLost(f"no {kind.__name__.upper()} within {timeout_s:g} s"
                                     ) from None
        assert isinstance(packet, kind)
        return packet

    async def take(self, most: int) -> list[wire.Publish]:
        """At least one message (up to ``most``); raises once the connection is lost."""
        messages = self.messages
        while not messages:
            if self._lost is not None:
                raise self._lost
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        n = min(most, len(messages))
        batch = [messages.popleft() for _ in range(n)]
        if self._paused and len(messages) <= self.low:
            self._paused = False
            self.last_heard = time.monotonic()  # silence while not reading was ours
            self._decode(b"")  # what was read ahead, before the socket has more
            if not self._paused and self._transport is not None:
                self._transport.resume_reading()
        return batch

    @property
    def paused(self) -> bool:
        return self._paused

    def ack(self, packet_id: int) -> None:
        """Acknowledge a QoS 1 message, with the others of this event-loop turn: one write.
        An ack for a connection that is gone is dropped: the broker redelivers the message
        on the next one, perhaps under the same packet id as another message."""
        self._acks.append(packet_id)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_acks)

    def flush_acks(self) -> None:
        self._ack_scheduled = False
        ids, self._acks = self._acks, []
        transport = self._transport
        if ids and transport is not None and not transport.is_closing():
            transport.write(wire.pubacks(ids))

    def abort(self, why: BaseException) -> None:
        self._fail(why)
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """The acks of this turn, DISCONNECT, and the socket closed once they are written."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self.flush_acks()
            transport.write(wire.DISCONNECT_PACKET)
            transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2.0)
            except TimeoutError:
                transport.abort()

    # -- inside --------------------------------------------------------------------------

    def _decode(self, data: bytes) -> None:
        room = self.high - len(self.messages)
        try:
            packets = self._decoder.feed(data, max_publishes=max(room, 0))
        except wire.ProtocolError as exc:
            log.warning("mqtt: %s; reconnecting", exc)
            self.abort(MqttConnectionLost(f"protocol error: {exc}"))
            return
        messages = self.messages
        for packet in packets:
            if type(packet) is wire.Publish:
                if packet.qos == 2:  # SEMS subscribes at QoS 1: the broker may not send 2
                    self.abort(MqttConnectionLost("a QoS 2 PUBLISH on a QoS 1 subscription"))
                    return
                messages.append(packet)
            elif isinstance(packet, wire.Connack | wire.Suback):
                future = self._replies.pop(type(packet), None)
                if future is not None and not future.done():
                    future.set_result(packet)
        waiting = len(messages)
        if waiting > self.peak_waiting:
            self.peak_waiting = waiting
        if waiting >= self.high and not self._paused:
            self._paused = True
            if self._transport is not None:
                self._transport.pause_reading()
        if waiting and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        for future in self._replies.values():
            if not future.done():
                future.set_exception(exc)
        self._replies.clear()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
