"""Where SEMS works around aiomqtt's and paho-mqtt's internals: everything here reaches into
private parts of ``aiomqtt==2.5.1`` and ``paho-mqtt==2.2.0`` (pinned exactly in pyproject.toml,
checked at start-up by :func:`check_versions`, and watched by tests/unit/test_mqtt_patches.py,
which fails the day an upgrade moves an attribute used here). ``connectors.mqtt`` keeps to
aiomqtt's public API and calls into this module.

- :func:`patch_subscriber`, manual acknowledgement: aiomqtt does not expose paho's
  ``manual_ack_set``, so it is switched on through aiomqtt's private ``Client._client`` (the
  paho client) before connecting: a message is acknowledged once stored, not once received.
  paho's logger (which aiomqtt enables) is switched off: it formats a debug line per packet.
- :class:`NoTopicCallbacks` replaces paho's ``Client._on_message_filtered`` (an
  ``MQTTMatcher``, of which paho's ``_handle_on_message`` calls ``iter_match`` per message):
  SEMS registers no per-topic callback, and walking the empty trie cost 7-9 % of the kafka
  runtime's ingest CPU.
- :class:`ReadAheadSocket` replaces paho's ``Client._sock`` when it opens (``on_socket_open``,
  wrapping aiomqtt's own ``Client._on_socket_open``): paho reads a packet with three or four
  tiny ``recv`` calls (``Client._sock_recv``) and aiomqtt's reader handles one packet per
  event-loop wake-up unless ``client._sock.pending()`` says more is buffered (its TLS path),
  so reading 64 KiB at a time and reporting it through ``pending()`` drains every packet that
  has arrived in one wake-up (docs/performance.md).
- :class:`ReadGate` replaces aiomqtt's ``Client._loop`` with a per-client proxy that notes the
  reader callback ``_on_socket_open`` registers (``self._loop.add_reader``), so that the reader
  can be removed and re-added: Mosquitto 2.0 does not hold a subscriber that acknowledges late
  to ``max_inflight_messages``, and the client's queue grew to the whole backlog.
- :class:`Pubacks` writes the PUBACKs of one event-loop turn as one packet through paho's
  ``Client._packet_queue(command, packet, mid, qos)``, built as paho's ``_send_puback`` builds
  one (command ``PUBACK``, remaining length 2, the message id): paho writes each with a
  ``send`` call of its own.

Relied on without a patch (and watched by the same canary): aiomqtt puts each message on its
``queue_type`` queue with ``put_nowait`` (``Client._on_message``) and its ``messages`` iterator
reads that same queue (``Client._queue``), which ``connectors.mqtt``'s intake counts and
drains in batches.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import aiomqtt

AIOMQTT_VERSION: Final = "2.5.1"
PAHO_MQTT_VERSION: Final = "2.2.0"
WRITTEN_FOR: Final = {"aiomqtt": AIOMQTT_VERSION, "paho-mqtt": PAHO_MQTT_VERSION}
"""The distributions (as pip names them) and the versions whose internals this module uses."""


@functools.cache
def check_versions() -> None:
    """Raise unless the installed aiomqtt and paho-mqtt are the versions this module was
    written for. Checked once per process: a success is cached, a failure raises every time."""
    for library, expected in WRITTEN_FOR.items():
        try:
            installed = version(library)
        except PackageNotFoundError:
            installed = "(not installed)"
        if installed != expected:
            raise RuntimeError(
                f"{library} {installed} is installed, but connectors/mqtt_patches.py patches "
                f"the private parts of {library}=={expected}: re-check every attribute it "
                f"uses (tests/unit/test_mqtt_patches.py) against {library} {installed}, then "
                f"update WRITTEN_FOR there and the pin in pyproject.toml"
            )


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


class NoTopicCallbacks:
    """paho's per-topic callbacks (``message_callback_add``), of which SEMS has none: paho
    otherwise walks its empty topic-filter trie for every message (a generator per level)."""

    def iter_match(self, topic: str) -> tuple[()]:
        return ()


NO_TOPIC_CALLBACKS = NoTopicCallbacks()


def patch_subscriber(client: aiomqtt.Client, gate: ReadGate) -> None:
    """Before connecting: manual PUBACK, no per-packet logging, no topic-callback walk, and
    the read-ahead socket behind ``gate`` (see the module docstring)."""
    paho = client._client
    paho.manual_ack_set(True)
    paho.disable_logger()
    paho._on_message_filtered = NO_TOPIC_CALLBACKS  # type: ignore[assignment]
    gate.install(client)


_PUBACK = struct.Struct("!BBH")
PUBACK_TYPE: Final = 0x40
"""paho's ``PUBACK`` (MQTT 3.1.1 section 3.4), the command byte of a PUBACK packet."""


class Pubacks:
    """The PUBACKs of one connection, written together: acks fire record by record as Kafka
    (or the store) confirms a batch, and paho queues each as a packet of its own, written with
    a ``send`` call of its own. Here the acks of one event-loop turn become one write of their
    concatenated 4-byte packets (MQTT 3.1.1 section 3.4), queued through paho so they never
    interleave with its other packets.

    ``live`` says whether the connection these acks belong to is still the current one: after
    a reconnect the broker redelivers what was not acknowledged, and acks for the old
    connection must not reach the new one."""

    __slots__ = ("_live", "_mids", "_paho", "_scheduled")

    def __init__(self, client: aiomqtt.Client, live: Callable[[], bool]) -> None:
        self._paho = client._client
        self._live = live
        self._mids: list[int] = []
        self._scheduled = False

    def add(self, mid: int) -> None:
        """Acknowledge a QoS 1 message, with the others of this event-loop turn."""
        self._mids.append(mid)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        mids, self._mids = self._mids, []
        if mids and self._live():
            packet = b"".join([_PUBACK.pack(PUBACK_TYPE, 2, mid) for mid in mids])
            self._paho._packet_queue(PUBACK_TYPE, packet, 0, 0)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge one message paho's own way, now (QoS 2: never granted, as SEMS
        subscribes at QoS 1)."""
        if self._live():
            self._paho.ack(mid, qos)
