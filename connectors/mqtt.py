"""MQTT ingestion: a reconnecting QoS 1 subscriber with a persistent session.

Every message is acknowledged (PUBACK) only after the pipeline has stored what it became, by
hanging the ack on the event (see ``streams.channels``). Unacknowledged messages stay with the
broker, which caps how many are in flight to us (MQTT 5 Receive Maximum): memory here is
bounded, the broker's queue absorbs bursts, and a crash loses nothing that was not stored.

aiomqtt does not expose paho's manual acknowledgement, so the paho client underneath it is
switched to it before connecting; the rest goes through aiomqtt's public API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streams.channels import Ack, Channel
from streams.metrics import Metrics

log = logging.getLogger(__name__)

READINGS_TOPIC_FILTER = "meters/+/+"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A payload as it arrived, before validation."""

    topic: str
    payload: bytes
    received_at: datetime
    ack: Ack | None = None


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


class MqttSource:
    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        share_group: str | None,
        max_inflight: int,
        session_expiry_s: int,
        out: Channel[RawMessage],
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reconnect_delay_s: float = 0.5,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.topic = subscription(share_group)
        self.max_inflight = max_inflight
        self.session_expiry_s = session_expiry_s
        self.out = out
        self.metrics = metrics
        self.clock = clock
        self.reconnect_delay_s = reconnect_delay_s
        self.connected = asyncio.Event()
        self._generation = 0

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.max_inflight
        return props

    async def run(self) -> None:
        """Consume until cancelled, reconnecting (and resubscribing) whenever the link drops."""
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning("mqtt connection to %s:%s lost: %s", self.broker.host,
                            self.broker.port, exc)
            finally:
                self.connected.clear()
                self.metrics.mqtt_connected.set(0)
            await asyncio.sleep(self.reconnect_delay_s)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=self._connect_properties(),
            keepalive=15,
            timeout=10,
        )
        paho = client._client  # manual PUBACK: see the module docstring
        paho.manual_ack_set(True)
        async with client:
            self._generation += 1
            generation = self._generation
            await client.subscribe(self.topic, qos=1)
            self.connected.set()
            self.metrics.mqtt_connected.set(1)
            self.metrics.mqtt_connects.inc()
            log.info("subscribed to %s on %s:%s", self.topic, self.broker.host, self.broker.port)

            def acker(mid: int, qos: int) -> Ack | None:
                if qos == 0:
                    return None

                def ack() -> None:
                    # After a reconnect the broker redelivers what we had not acknowledged;
                    # an ack for the old connection must not reach the new one.
                    if generation == self._generation:
                        paho.ack(mid, qos)

                return ack

            received = self.metrics.readings_received
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                received.inc()
                await self.out.send(
                    RawMessage(
                        topic=message.topic.value,
                        payload=bytes(payload),
                        received_at=self.clock(),
                        ack=acker(message.mid, message.qos),
                    )
                )


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
