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
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiomqtt

from connectors import mqtt_codec as wire
from connectors.mqtt_link import BrokerLink, MqttConnectionLost
from core.channels import Channel
from core.metrics import Metrics
from schemas.raw import RawMessage

log = logging.getLogger(__name__)

READINGS_TOPIC_FILTER = "meters/+/+"


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


def _abort_on_refusal(link: BrokerLink, task: asyncio.Future[None]) -> None:
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
        self._link: BrokerLink | None = None
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

    async def _connect(self) -> BrokerLink:
        loop = asyncio.get_running_loop()
        link = BrokerLink(high=self.max_waiting, low=self.max_waiting // 4)
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

    async def _keepalive(self, link: BrokerLink) -> None:
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
