"""MQTT ingestion: a reconnecting QoS 1 subscriber with a persistent session.

Every message is acknowledged (PUBACK) only after the pipeline has stored what it became, by
sending its ack beside it (``core.acks``). Unacknowledged messages stay with the
broker, which caps how many are in flight to one client (``max_inflight_messages``): memory
here is bounded, the broker's queue absorbs bursts, and a crash loses nothing that was stored.

The session is MQTT 3.1.1 with ``clean_session=False``: paho decodes the MQTT 5 properties of
every incoming PUBLISH in pure Python, which cost ~50 us a message and halved ingest
throughput in our profile; 3.1.1 persistent sessions and ``$share`` subscriptions give the
same guarantees with Mosquitto.

This module keeps to aiomqtt's public API. What reaches into aiomqtt's and paho's private
parts lives in ``connectors.mqtt_patches`` (pinned versions, checked when a client is first
built): manual acknowledgement, batched PUBACKs, a read-ahead socket (one event-loop wake-up
drains every packet that has arrived, see docs/performance.md) and a gate that stops reading
while too many messages wait here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiomqtt

from connectors.mqtt_patches import Pubacks, ReadGate, check_versions, patch_subscriber
from core.acks import Ack
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
    ) -> None:
        check_versions()
        self.broker = broker
        self.client_id = client_id
        self.topic = subscription(share_group)
        self.out = out
        self.metrics = metrics
        self.clock = clock
        self.reconnect_delay_s = reconnect_delay_s
        self.max_waiting = max_waiting
        self.peak_waiting = 0
        """Most messages ever waiting in the intake (tests check the bound holds)."""
        self.connected = asyncio.Event()
        self._generation = 0

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
        intakes: list[asyncio.Queue[aiomqtt.Message]] = []
        source = self
        gate = ReadGate(high=self.max_waiting, low=self.max_waiting // 4)

        class Intake(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's message queue (its ``queue_type`` option), kept so that we can drain
            it in batches and stop reading while it is long."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                intakes.append(self)

            def put_nowait(self, item: aiomqtt.Message) -> None:
                super().put_nowait(item)
                waiting = self.qsize()
                if waiting > source.peak_waiting:
                    source.peak_waiting = waiting
                if waiting >= gate.high:
                    gate.check(waiting)

        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            queue_type=Intake,
            keepalive=15,
            timeout=10,
        )
        patch_subscriber(client, gate)
        async with client:
            self._generation += 1
            generation = self._generation
            await client.subscribe(self.topic, qos=1)
            self.connected.set()
            self.metrics.mqtt_connected.set(1)
            self.metrics.mqtt_connects.inc()
            log.info("subscribed to %s on %s:%s", self.topic, self.broker.host, self.broker.port)

            pubacks = Pubacks(client, lambda: generation == self._generation)

            def acker(mid: int, qos: int) -> Ack | None:
                if qos == 0:
                    return None
                if qos == 1:
                    return functools.partial(pubacks.add, mid)
                return functools.partial(pubacks.ack, mid, qos)  # QoS 2: never granted

            try:
                received = self.metrics.readings_received
                intake = intakes[-1]
                # Wait for one message through aiomqtt's iterator (it raises on disconnect), then
                # take whatever else has arrived straight from the queue: one wake-up per burst
                # instead of a task and a wait per message.
                async for first in client.messages:
                    batch = [first]
                    while not intake.empty() and len(batch) < 1000:
                        batch.append(intake.get_nowait())
                    gate.check(intake.qsize())
                    received.inc(len(batch))
                    now = self.clock()
                    for message in batch:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = str(payload).encode()
                        await self.out.send(
                            RawMessage(topic=message.topic.value, payload=bytes(payload),
                                       received_at=now),
                            ack=acker(message.mid, message.qos),
                        )
            finally:
                # Acks of this last turn go out before aiomqtt's DISCONNECT, not after it.
                pubacks.flush()


class MqttPublisher:
    """QoS 1 publisher that keeps up to ``max_inflight`` publishes outstanding (the simulator
    and tests use it; waiting for each PUBACK in turn would cap it at one per round trip)."""

    def __init__(self, broker: BrokerAddress, *, client_id: str | None = None,
                 max_inflight: int = 500) -> None:
        check_versions()
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
