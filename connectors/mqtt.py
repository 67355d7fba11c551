"""MQTT ingestion: a reconnecting QoS 1 subscriber with a persistent session.

Every message is acknowledged (PUBACK) only after the pipeline has stored what it became, by
hanging the ack on the event (see ``core.channels``). Unacknowledged messages stay with the
broker, which caps how many are in flight to one client (``max_inflight_messages``): memory
here is bounded, the broker's queue absorbs bursts, and a crash loses nothing that was stored.

The session is MQTT 3.1.1 with ``clean_session=False``: paho decodes the MQTT 5 properties of
every incoming PUBLISH in pure Python, which cost ~50 us a message and halved ingest
throughput in our profile; 3.1.1 persistent sessions and ``$share`` subscriptions give the
same guarantees with Mosquitto.

aiomqtt does not expose paho's manual acknowledgement, so the paho client underneath it is
switched to it before connecting; the rest goes through aiomqtt's public API.

paho reads each packet with three or four tiny ``recv`` calls and aiomqtt decodes one packet
per event-loop wake-up; :class:`ReadAheadSocket` reads 64 KiB at a time and reports what it
holds through ``pending()``, which aiomqtt's reader already honours (for TLS), so one wake-up
drains every packet that has arrived. See docs/performance.md for the effect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from core.channels import Ack, Channel
from core.metrics import Metrics
from schemas.raw import RawMessage

log = logging.getLogger(__name__)

READINGS_TOPIC_FILTER = "meters/+/+"


class ReadAheadSocket:
    """Wraps paho's non-blocking socket with a user-space read buffer."""

    READ_SIZE = 65_536

    def __init__(self, sock: Any, gate: ReadGate | None = None) -> None:
        self._sock = sock
        self._buffer = b""
        self._gate = gate

    def recv(self, bufsize: int) -> bytes:
        if not self._buffer:
            data: bytes = self._sock.recv(max(bufsize, self.READ_SIZE))
            if len(data) <= bufsize:
                return data
            self._buffer = data
        out, self._buffer = self._buffer[:bufsize], self._buffer[bufsize:]
        return out

    def pending(self) -> int:
        """What is buffered, unless reading is paused: then the reader stops after the
        current packet and the rest waits here until :meth:`ReadGate.check` resumes."""
        if self._gate is not None and self._gate.paused:
            return 0
        return len(self._buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _ReaderCapture:
    """The event loop as one aiomqtt client sees it: ``add_reader`` also tells the gate."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gate: ReadGate) -> None:
        self._loop = loop
        self._gate = gate

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        self._gate._loop, self._gate._fd, self._gate._reader = self._loop, fd, (callback, args)
        self._loop.add_reader(fd, callback, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class ReadGate:
    """Stops reading the socket while too many messages wait in SEMS, so that the broker (and
    TCP) hold the rest.

    Mosquitto 2.0 does not keep a subscriber that acknowledges to ``max_inflight_messages``:
    measured here, up to 199,000 of a 200,000-message backlog sat unacknowledged in the
    client's queue. Pausing the reader bounds that queue at ``high`` (plus one 64 KiB read).
    """

    def __init__(self, *, high: int, low: int) -> None:
        self.high = high
        self.low = low
        self.paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._reader: tuple[Callable[..., Any], tuple[Any, ...]] | None = None

    def install(self, client: aiomqtt.Client) -> None:
        """Wrap paho's socket in a :class:`ReadAheadSocket` when it opens, and keep the reader
        callback aiomqtt registers for it, to remove and re-add it.

        aiomqtt opens the socket in an executor thread and registers its reader through its own
        ``_loop`` attribute, so that attribute gets a per-client proxy that notes the callback;
        nothing shared (the event loop itself) is patched, so clients connecting at the same
        time in several threads cannot interfere."""
        paho: Any = client._client
        open_callback = paho.on_socket_open
        gate = self

        def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
            wrapped = ReadAheadSocket(sock, gate)
            paho_client._sock = wrapped
            gate.paused = False
            open_callback(paho_client, userdata, wrapped)

        paho.on_socket_open = on_socket_open
        client._loop = _ReaderCapture(client._loop, self)  # type: ignore[assignment]

    def check(self, waiting: int) -> None:
        if self._loop is None or self._reader is None:
            return
        if not self.paused and waiting >= self.high:
            self._loop.remove_reader(self._fd)
            self.paused = True
        elif self.paused and waiting <= self.low:
            callback, args = self._reader
            self.paused = False
            self._loop.add_reader(self._fd, callback, *args)
            # Bytes already read ahead raise no socket event: handle them now.
            self._loop.call_soon(callback, *args)


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


class _NoTopicCallbacks:
    """paho's per-topic callbacks (``message_callback_add``), of which SEMS has none: paho
    otherwise walks its empty topic-filter trie for every message (a generator per level),
    7-9 % of the kafka runtime's ingest CPU."""

    def iter_match(self, topic: str) -> tuple[()]:
        return ()


_NO_TOPIC_CALLBACKS = _NoTopicCallbacks()

_PUBACK = struct.Struct("!BBH")
PUBACK_TYPE = 0x40


class _Pubacks:
    """The PUBACKs of one connection, written together: acks fire record by record as Kafka
    (or the store) confirms a batch, and paho queues each as a packet of its own, written with
    a ``send`` call of its own. Here the acks of one event-loop turn become one write of their
    concatenated 4-byte packets (MQTT 3.1.1 section 3.4), queued through paho so they never
    interleave with its other packets."""

    __slots__ = ("_live", "_mids", "_paho", "_scheduled")

    def __init__(self, paho: Any, live: Callable[[], bool]) -> None:
        self._paho = paho
        self._live = live
        self._mids: list[int] = []
        self._scheduled = False

    def add(self, mid: int) -> None:
        self._mids.append(mid)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        mids, self._mids = self._mids, []
        # After a reconnect the broker redelivers what was not acknowledged; acks for the old
        # connection must not reach the new one.
        if mids and self._live():
            packet = b"".join([_PUBACK.pack(PUBACK_TYPE, 2, mid) for mid in mids])
            self._paho._packet_queue(PUBACK_TYPE, packet, 0, 0)


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
        paho = client._client  # manual PUBACK, read-ahead, read gate: see the docstrings
        paho.manual_ack_set(True)
        paho.disable_logger()  # paho formats a debug line per packet otherwise
        paho._on_message_filtered = _NO_TOPIC_CALLBACKS  # type: ignore[assignment]
        gate.install(client)
        async with client:
            self._generation += 1
            generation = self._generation
            await client.subscribe(self.topic, qos=1)
            self.connected.set()
            self.metrics.mqtt_connected.set(1)
            self.metrics.mqtt_connects.inc()
            log.info("subscribed to %s on %s:%s", self.topic, self.broker.host, self.broker.port)

            pubacks = _Pubacks(paho, lambda: generation == self._generation)

            def acker(mid: int, qos: int) -> Ack | None:
                if qos == 0:
                    return None
                if qos == 1:
                    return functools.partial(pubacks.add, mid)

                def ack() -> None:  # QoS 2 is never granted (subscribed at 1): paho's way
                    if generation == self._generation:
                        paho.ack(mid, qos)

                return ack

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
                            RawMessage(
                                topic=message.topic.value,
                                payload=bytes(payload),
                                received_at=now,
                                ack=acker(message.mid, message.qos),
                            )
                        )
            finally:
                # Acks of this last turn go out before aiomqtt's DISCONNECT, not after it.
                pubacks.flush()


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
