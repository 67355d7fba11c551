"""The MQTT 3.1.1 packets a QoS 1 subscriber exchanges with its broker, as bytes: what
``connectors.mqtt`` sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT) and an incremental
decoder of what it receives (CONNACK, SUBACK, PUBLISH, PINGRESP). OASIS MQTT 3.1.1, section 2
(fixed header, remaining length) and section 3 (each packet).

No I/O here. The decoder takes the stream in whatever pieces the socket gives and returns
every complete packet of them; a stream that breaks the protocol raises ``ProtocolError``
(the connection is then dropped and made again: the broker keeps the session's messages).

Why not paho: its packet parsing was about 40 % of ingest's CPU (several tiny ``recv`` calls and
a Python object per packet, callbacks, locks). Decoding a whole read of many PUBLISH packets in
one loop over a ``memoryview`` costs a few microseconds a message; see docs/performance.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

MAX_REMAINING_LENGTH: Final = 268_435_455
"""The largest remaining length four bytes can say (MQTT 3.1.1, 2.2.3)."""
SUBACK_FAILURE: Final = 0x80

CONNACK_REASONS: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_U16 = struct.Struct("!H")


class ProtocolError(Exception):
    """The bytes received are not MQTT 3.1.1 a subscriber can accept."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, once a message
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None  # None at QoS 0
    dup: bool = False
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    granted: tuple[int, ...]  # per topic filter: the QoS granted, or SUBACK_FAILURE


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


Packet = Publish | Connack | Suback | Pingresp


def _length(n: int) -> bytes:
    """A remaining length in MQTT's variable-length encoding."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} is outside 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return _U16.pack(len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def connect(client_id: str, *, keepalive_s: int, clean_session: bool) -> bytes:
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive_s must be within 0..65535")
    flags = 0x02 if clean_session else 0x00
    body = _string("MQTT") + bytes([4, flags]) + _U16.pack(keepalive_s) + _string(client_id)
    return _packet(CONNECT, 0, body)


def subscribe(packet_id: int, topic_filter: str, *, qos: int) -> bytes:
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError("packet ids are within 1..65535")
    return _packet(SUBSCRIBE, 0x2, _U16.pack(packet_id) + _string(topic_filter) + bytes([qos]))


def publish(topic: str, payload: bytes, *, qos: int, packet_id: int | None = None,
            dup: bool = False, retain: bool = False) -> bytes:
    """A PUBLISH as a broker sends it (the tests' and the benchmarks' broker side)."""
    if (qos == 0) != (packet_id is None):
        raise ValueError("a packet id goes with QoS 1 and 2, and only with them")
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = _string(topic) + (b"" if packet_id is None else _U16.pack(packet_id)) + payload
    return _packet(PUBLISH, flags, body)


def puback(packet_id: int) -> bytes:
    return bytes((PUBACK << 4, 2)) + _U16.pack(packet_id)


def pubacks(packet_ids: list[int]) -> bytes:
    """Several PUBACKs as one write."""
    return b"".join([b"\x40\x02" + _U16.pack(i) for i in packet_ids])


PINGREQ_PACKET: Final = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET: Final = bytes((DISCONNECT << 4, 0))


class Decoder:
    """Packets from the stream a broker sends a subscriber, fed in any pieces."""

    def __init__(self, *, max_packet_bytes: int = 1 << 20) -> None:
        self.max_packet_bytes = max_packet_bytes
        self._buffer = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held until the rest arrives."""
        return len(self._buffer)

    def feed(self, data: bytes, *, max_publishes: int | None = None) -> list[Packet]:
        """Every complete packet of what was fed so far, with at most ``max_publishes``
        PUBLISH packets: the PUBLISH packets past that stay here, undecoded, for a later call
        (``feed(b"")`` takes them without new data), while the control packets among and
        after them are returned now (a subscriber that holds back messages still needs its
        SUBACK and PINGRESP)."""
        buffer = self._buffer + data if self._buffer else data
        budget = -1 if max_publishes is None else max_publishes
        end = len(buffer)
        packets: list[Packet] = []
        held: list[bytes] = []
        pos = 0
        while end - pos >= 2:
            header = buffer[pos]
            # The remaining length: 1 to 4 bytes of 7 bits each, the low ones first.
            length = 0
            multiplier = 1
            at = pos + 1
            complete = False
            while at < end:
                digit = buffer[at]
                at += 1
                length += (digit & 0x7F) * multiplier
                if digit < 0x80:
                    complete = True
                    break
                multiplier *= 128
                if multiplier > 128 ** 3:
                    raise ProtocolError("a remaining length longer than 4 bytes")
            if not complete:
                break
            if length > self.max_packet_bytes:
                raise ProtocolError(f"a packet of {length} bytes exceeds the limit of "
                                    f"{self.max_packet_bytes}")
            stop = at + length
            if stop > end:
                break
            kind = header >> 4
            if kind == PUBLISH:
                if budget == 0:
                    held.append(buffer[pos:stop])
                else:
                    packets.append(_publish(header, buffer, at, stop))
                    budget -= 1
            else:
                packets.append(_control(kind, header & 0x0F, buffer[at:stop]))
            pos = stop
        rest = buffer[pos:] if pos < end else b""
        self._buffer = b"".join([*held, rest]) if held else rest
        return packets


def _publish(header: int, buffer: bytes, at: int, stop: int) -> Publish:
    qos = header >> 1 & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if stop - at < 2:
        raise ProtocolError("PUBLISH too short for its topic length")
    topic_end = at + 2 + (buffer[at] << 8 | buffer[at + 1])
    body_start = topic_end + 2 if qos else topic_end
    if body_start > stop:
        raise ProtocolError("PUBLISH shorter than its topic and packet id")
    try:
        topic = buffer[at + 2:topic_end].decode()
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    if qos:
        packet_id: int | None = buffer[topic_end] << 8 | buffer[topic_end + 1]
        if packet_id == 0:
            raise ProtocolError("PUBLISH with packet id 0")
    else:
        packet_id = None
    return Publish(topic, buffer[body_start:stop], qos, packet_id, header & 0x08 != 0,
                   header & 0x01 != 0)


def _control(kind: int, flags: int, body: bytes) -> Packet:
    if kind == CONNACK:
        if flags or len(body) != 2 or body[0] & 0xFE:
            raise ProtocolError("malformed CONNACK")
        return Connack(bool(body[0] & 0x01), body[1])
    if kind == SUBACK:
        if flags or len(body) < 3:
            raise ProtocolError("malformed SUBACK")
        granted = tuple(body[2:])
        if any(g not in (0, 1, 2, SUBACK_FAILURE) for g in granted):
            raise ProtocolError("SUBACK with an invalid return code")
        return Suback(_U16.unpack_from(body)[0], granted)
    if kind == PINGRESP:
        if flags or body:
            raise ProtocolError("malformed PINGRESP")
        return Pingresp()
    raise ProtocolError(f"a subscriber does not expect packet type {kind}")
