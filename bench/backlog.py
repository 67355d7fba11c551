"""The benchmark's backlog: simulator readings rendered once, published at QoS 1 in bulk.

The publisher speaks MQTT 3.1.1 over a plain socket with pre-built PUBLISH packets, so that
loading the broker takes a few seconds and never limits what is measured: the consumers drain
a backlog that is already queued in their persistent sessions.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from simulators.fleet import Fleet
from simulators.publish import STEP_S, Simulation

CHUNK_PACKETS = 2_000


class PublishError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Backlog:
    """``count`` readings as (topic, payload) pairs in event-time order, and their packets."""

    messages: tuple[tuple[str, bytes], ...]
    packets: tuple[bytes, ...]

    @property
    def count(self) -> int:
        return len(self.messages)


def backlog_start(*, readings: int, meters: int, now: datetime) -> datetime:
    """A start minute so that the whole backlog lies in the recent past (not "future")."""
    steps = math.ceil(readings / meters)
    start = now - timedelta(seconds=steps * STEP_S) - timedelta(minutes=10)
    return start.replace(second=0, microsecond=0)


async def build_backlog(fleet: Fleet, *, readings: int, now: datetime | None = None) -> Backlog:
    """The first ``readings`` messages the simulator publishes from ``backlog_start``."""
    messages: list[tuple[str, bytes]] = []

    async def collect(topic: str, payload: bytes) -> None:
        messages.append((topic, payload))

    meters = len(fleet.meters)
    start = backlog_start(readings=readings, meters=meters,
                          now=now or datetime.now(UTC))
    steps = math.ceil(readings / meters)
    end = start + timedelta(seconds=steps * STEP_S)
    await Simulation(fleet, collect).run_range(start, end)
    kept = tuple(messages[:readings])
    return Backlog(
        messages=kept,
        packets=tuple(publish_packet(t, p, packet_id=i % 65_535 + 1)
                      for i, (t, p) in enumerate(kept)),
    )


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def publish_packet(topic: str, payload: bytes, *, packet_id: int) -> bytes:
    """PUBLISH, QoS 1, MQTT 3.1.1. Packet ids cycle: the broker tracks only QoS 2 ids."""
    body = _string(topic) + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body


def connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, keep-alive off."""
    body = _string("MQTT") + bytes([0x04, 0x02, 0x00, 0x00]) + _string(client_id)
    return b"\x10" + _remaining_length(len(body)) + body


class _PubackCounter(threading.Thread):
    """Reads the broker's PUBACKs (4 bytes each, nothing else arrives) and counts them."""

    def __init__(self, sock: socket.socket, expected: int) -> None:
        super().__init__(name="puback-counter", daemon=True)
        self.sock = sock
        self.expected = expected
        self.acked = 0
        self.error: str | None = None

    def run(self) -> None:
        pending = b""
        while self.acked < self.expected:
            data = self.sock.recv(1 << 16)
            if not data:
                self.error = "broker closed the connection"
                return
            pending += data
            whole = len(pending) // 4 * 4
            frames, pending = pending[:whole], pending[whole:]
            if frames[0::4] != b"\x40" * (whole // 4):
                self.error = "unexpected packet among PUBACKs"
                return
            self.acked += whole // 4


def publish_backlog_sync(host: str, port: int, backlog: Backlog, *, client_id: str,
                         timeout_s: float) -> float:
    """Publish every packet and wait for every PUBACK; returns the seconds it took."""
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(connect_packet(client_id))
        connack = sock.recv(4)
        if connack != b"\x20\x02\x00\x00":
            raise PublishError(f"broker refused the publisher: {connack!r}")
        counter = _PubackCounter(sock, backlog.count)
        counter.start()
        packets = backlog.packets
        for i in range(0, len(packets), CHUNK_PACKETS):
            sock.sendall(b"".join(packets[i:i + CHUNK_PACKETS]))
        counter.join(timeout_s)
        if counter.acked != backlog.count:
            raise PublishError(f"{counter.acked} of {backlog.count} publishes acknowledged "
                               f"({counter.error or 'timed out'})")
        sock.sendall(b"\xe0\x00")
    return time.perf_counter() - started


async def publish_backlog(host: str, port: int, backlog: Backlog, *, client_id: str,
                          timeout_s: float = 300.0) -> float:
    return await asyncio.to_thread(publish_backlog_sync, host, port, backlog,
                                   client_id=client_id, timeout_s=timeout_s)
