"""MQTT ingestion: a reconnecting QoS 1 subscriber with a persistent session.

Every message is acknowledged (PUBACK) only after the pipeline has stored what it became, by
sending its ack beside it (``core.acks``). Unacknowledged messages stay with the broker, which
redelivers them after a reconnect: a crash loses nothing that was not stored.

The subscriber speaks MQTT 3.1.1 itself (``connectors.mqtt_codec``) on an asyncio protocol:
each read of the socket is decoded in one pass into the messages it holds, the PUBACKs of one
event-loop turn go out as one write, and reading stops while ``max_waiting`` messages wait
here, so that memory is bounded and the broker's queue (and TCP) absorbs bursts. paho, through
aiomqtt, cost about 40 % of ingest's CPU in its packet handling and needed patches of its
private parts for manual acknowledgement and flow control (docs/performance.md). The session
is MQTT 3.1.1 with ``clean_session=False``; ``$share`` subscriptions spread the readings over
every ingest process of a group.

The publisher (simulators, tests, benchmarks) stays on aiomqtt's public API.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

import aiomqtt

from connectors import mqtt_codec as wire
from core.channels import Channel
from core.metrics import Metrics
from schemas.raw import RawMessage

log = logging.getLogger(__name__)

READINGS_TOPIC_FILTER = "meters/+/+"
P = TypeVar("P", wire.Connack, wire.Suback)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError(f"expected mqtt://host[:port], got {url!r}")
        return cls(parts.hostname, parts.port or 1883)


def subscription(share_group: str | None) -> str:
    """Shared subscriptions spread the readings over every ingest process of the group."""
    if share_group:
        return f"$share/{share_group}/{READINGS_TOPIC_FILTER}"
    return READINGS_TOPIC_FILTER


class MqttConnectionLost(Exception):
    """The link to the broker broke, or the broker refused it; the subscriber connects again."""


class _Link(asyncio.Protocol):
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


def _abort_on_refusal(link: _Link, task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        link.abort(exc)


class MqttSource:
    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        share_group: str | None,
        out: Channel[RawMessage],
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reconnect_delay_s: float = 0.5,
        max_waiting: int = 5000,
        keepalive_s: int = 15,
        timeout_s: float = 10.0,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.topic = subscription(share_group)
        self.out = out
        self.metrics = metrics
        self.clock = clock
        self.reconnect_delay_s = reconnect_delay_s
        self.max_waiting = max_waiting
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self._peak_before = 0
        self._link: _Link | None = None
        self.connected = asyncio.Event()

    @property
    def peak_waiting(self) -> int:
        """Most messages ever waiting here (tests check the bound holds)."""
        link = self._link
        return max(self._peak_before, link.peak_waiting if link is not None else 0)

    async def run(self) -> None:
        """Consume until cancelled, reconnecting (and resubscribing) whenever the link drops."""
        while True:
            try:
                await self._session()
            except (OSError, MqttConnectionLost) as exc:
                log.warning("mqtt connection to %s:%s lost: %s", self.broker.host,
                            self.broker.port, exc)
            finally:
                self.connected.clear()
                self.metrics.mqtt_connected.set(0)
            await asyncio.sleep(self.reconnect_delay_s)

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = _Link(high=self.max_waiting, low=self.max_waiting // 4)
        await asyncio.wait_for(
            loop.create_connection(lambda: link, self.broker.host, self.broker.port),
            self.timeout_s)
        try:
            link.send(wire.connect(self.client_id, keepalive_s=self.keepalive_s,
                                   clean_session=False))
            connack = await link.reply(wire.Connack, self.timeout_s)
            if connack.return_code:
                reason = wire.CONNACK_REASONS.get(connack.return_code, "unknown reason")
                raise MqttConnectionLost(f"the broker refused the connection: {reason} "
                                         f"({connack.return_code})")
            suback = link.expect(wire.Suback)
            link.send(wire.subscribe(1, self.topic, qos=1))
            if connack.session_present:
                # The session holds the subscription, and maybe a backlog that the broker
                # sends before the SUBACK, behind which the SUBACK waits while reading is
                # paused: consume now, and check the SUBACK whenever it comes.
                checked = asyncio.ensure_future(
                    self._granted(link.reply(wire.Suback, None, suback)))
                checked.add_done_callback(lambda task: _abort_on_refusal(link, task))
            else:  # a new session: nothing is sent before the subscription exists
                await self._granted(link.reply(wire.Suback, self.timeout_s, suback))
        except BaseException:
            await link.close()
            raise
        return link

    async def _granted(self, suback: Awaitable[wire.Suback]) -> None:
        answer = await suback
        if answer.packet_id != 1 or answer.granted[:1] != (1,):
            raise MqttConnectionLost(f"the broker did not grant {self.topic} at QoS 1 "
                                     f"(SUBACK {answer.granted})")

    async def _keepalive(self, link: _Link) -> None:
        """A PINGREQ every ``keepalive_s``; a broker silent for 1.5 of them while we read is
        gone (while reading is paused its answers wait, unread, in the socket)."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            if not link.paused and time.monotonic() - link.last_heard > 1.5 * self.keepalive_s:
                link.abort(MqttConnectionLost(f"nothing from the broker for "
                                              f"{1.5 * self.keepalive_s:g} s"))
                return
            link.send(wire.PINGREQ_PACKET)

    async def _session(self) -> None:
        link = await self._connect()
        if self._link is not None:
            self._peak_before = max(self._peak_before, self._link.peak_waiting)
        self._link = link
        keepalive = asyncio.create_task(self._keepalive(link), name="mqtt-keepalive")
        self.connected.set()
        self.metrics.mqtt_connected.set(1)
        self.metrics.mqtt_connects.inc()
        log.info("subscribed to %s on %s:%s", self.topic, self.broker.host, self.broker.port)
        ack = link.ack
        no_ack = None
        received = self.metrics.readings_received
        send = self.out.send
        try:
            while True:
                batch = await link.take(1000)
                received.inc(len(batch))
                now = self.clock()
                for message in batch:
                    await send(
                        RawMessage(topic=message.topic, payload=message.payload,
                                   received_at=now),
                        ack=no_ack if message.packet_id is None
                        else functools.partial(ack, message.packet_id),
                    )
        finally:
            keepalive.cancel()
            await link.close()


class MqttPublisher:
    """QoS 1 publisher that keeps up to ``max_inflight`` publishes outstanding (the simulator
    and tests use it; waiting for each PUBACK in turn would cap it at one per round trip)."""

    def __init__(self, broker: BrokerAddress, *, client_id: str | None = None,
                 max_inflight: int = 500) -> None:
        self.broker = broker
        self.client_id = client_id
        self.max_inflight = max_inflight
        self._client: aiomqtt.Client | None = None
        self._slots = asyncio.Semaphore(max_inflight)
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> MqttPublisher:
        self._client = aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=self.client_id,
            max_inflight_messages=self.max_inflight, timeout=30,
        )
        self._client.pending_calls_threshold = self.max_inflight + 1  # we bound it ourselves
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.flush()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("publisher is not connected")
        await self._slots.acquire()

        async def send() -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                self._slots.release()

        task = asyncio.create_task(send())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending))
