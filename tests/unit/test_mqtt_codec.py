"""The MQTT 3.1.1 codec of the subscriber: the decoder reads any split of a broker's stream as
the packets it holds, refuses what breaks the protocol with ``ProtocolError`` (never another
exception), and the encoder writes the bytes the specification gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import mqtt_codec as wire

pytestmark = pytest.mark.unit

topics = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
publishes = st.builds(
    lambda topic, payload, qos, packet_id, dup, retain: wire.Publish(
        topic, payload, qos, packet_id if qos else None, dup and qos > 0, retain),
    topics, st.binary(max_size=300), st.sampled_from([0, 1, 2]),
    st.integers(1, 0xFFFF), st.booleans(), st.booleans())
controls = st.one_of(
    st.builds(wire.Connack, st.booleans(), st.integers(0, 5)),
    st.builds(wire.Suback, st.integers(0, 0xFFFF),
              st.lists(st.sampled_from([0, 1, 2, wire.SUBACK_FAILURE]), min_size=1,
                       max_size=4).map(tuple)),
    st.just(wire.Pingresp()))
packets = st.one_of(publishes, controls)


def encode(packet: wire.Packet) -> bytes:
    """As a broker writes each packet (MQTT 3.1.1 section 3)."""
    match packet:
        case wire.Publish():
            return wire.publish(packet.topic, packet.payload, qos=packet.qos,
                                packet_id=packet.packet_id, dup=packet.dup,
                                retain=packet.retain)
        case wire.Connack():
            return bytes([0x20, 2, int(packet.session_present), packet.return_code])
        case wire.Suback():
            body = packet.packet_id.to_bytes(2, "big") + bytes(packet.granted)
            return bytes([0x90, len(body)]) + body
        case wire.Pingresp():
            return b"\xd0\x00"
    raise AssertionError(packet)


@settings(max_examples=300)
@given(st.lists(packets, max_size=20), st.data())
def test_any_split_of_the_stream_decodes_to_the_packets_sent(
        sent: list[wire.Packet], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = wire.Decoder()
    received: list[wire.Packet] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += decoder.feed(stream[a:b])
    assert received == sent
    assert decoder.buffered == 0


@given(st.lists(publishes, min_size=1, max_size=20), st.integers(0, 25))
def test_a_publish_budget_leaves_the_rest_undecoded_for_later(
        sent: list[wire.Packet], budget: int) -> None:
    decoder = wire.Decoder()
    first = decoder.feed(b"".join(encode(p) for p in sent), max_publishes=budget)
    assert first == sent[:budget]
    assert decoder.feed(b"") == sent[budget:]


@settings(max_examples=500)
@given(st.binary(max_size=400), st.data())
def test_garbage_is_a_protocol_error_or_packets_never_a_crash(
        junk: bytes, data: st.DataObject) -> None:
    decoder = wire.Decoder(max_packet_bytes=1000)
    cut = data.draw(st.integers(0, len(junk)))
    try:
        for packet in decoder.feed(junk[:cut]) + decoder.feed(junk[cut:]):
            assert isinstance(packet, wire.Publish | wire.Connack | wire.Suback | wire.Pingresp)
    except wire.ProtocolError:
        pass


@pytest.mark.parametrize(("stream", "why"), [
    (b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes"),
    (b"\x36\x03\x00\x01t", "QoS 3"),
    (b"\x32\x05\x00\x01t\x00\x00", "packet id 0"),
    (b"\x30\x01\x00", "too short"),
    (b"\x30\x03\x00\x05t", "shorter than its topic"),
    (b"\x30\x04\x00\x02\xff\xfe", "not UTF-8"),
    (b"\x20\x03\x00\x00\x00", "CONNACK"),
    (b"\x90\x02\x00\x01", "SUBACK"),
    (b"\x90\x03\x00\x01\x03", "invalid return code"),
    (b"\xd0\x01\x00", "PINGRESP"),
    (b"\x40\x02\x00\x01", "packet type 4"),
    (b"\x30\x81\x80\x40", "exceeds the limit"),
])
def test_what_breaks_the_protocol_is_named(stream: bytes, why: str) -> None:
    with pytest.raises(wire.ProtocolError, match=why):
        wire.Decoder().feed(stream)


def test_the_encoder_writes_the_specification_s_bytes() -> None:
    # MQTT 3.1.1 section 3.1: protocol name, level 4, flags, keepalive, client id.
    assert wire.connect("c1", keepalive_s=15, clean_session=False) == (
        b"\x10\x0e\x00\x04MQTT\x04\x00\x00\x0f\x00\x02c1")
    assert wire.connect("c1", keepalive_s=60, clean_session=True)[9] == 0x02
    # 3.8: fixed header 0x82, packet id, the filter, the requested QoS.
    assert wire.subscribe(1, "meters/+/+", qos=1) == b"\x82\x0f\x00\x01\x00\x0ameters/+/+\x01"
    assert wire.puback(0x1234) == b"\x40\x02\x12\x34"
    assert wire.pubacks([1, 2]) == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    assert wire.PINGREQ_PACKET == b"\xc0\x00" and wire.DISCONNECT_PACKET == b"\xe0\x00"


@pytest.mark.parametrize(("n", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_lengths_at_each_boundary(n: int, encoded: bytes) -> None:
    """MQTT 3.1.1 table 2.4."""
    assert wire._length(n) == encoded


def test_a_large_payload_across_many_reads() -> None:
    payload = bytes(range(256)) * 800  # 204,800 bytes: a 3-byte remaining length
    stream = wire.publish("meters/f/m", payload, qos=1, packet_id=9)
    decoder = wire.Decoder()
    out: list[wire.Packet] = []
    for i in range(0, len(stream), 65_536):
        out += decoder.feed(stream[i:i + 65_536])
    assert out == [wire.Publish("meters/f/m", payload, 1, 9)]


def test_encoder_refuses_what_it_cannot_say() -> None:
    with pytest.raises(ValueError):
        wire.subscribe(0, "t", qos=1)
    with pytest.raises(ValueError):
        wire.publish("t", b"", qos=1)
    with pytest.raises(ValueError):
        wire.connect("c", keepalive_s=70_000, clean_session=True)
    with pytest.raises(ValueError):
        wire._length(wire.MAX_REMAINING_LENGTH + 1)


@given(st.lists(packets, min_size=1, max_size=20), st.integers(0, 5))
def test_control_packets_behind_held_publishes_are_not_held(
        sent: list[wire.Packet], budget: int) -> None:
    """A subscriber holding messages back must still read its SUBACK and PINGRESP."""
    decoder = wire.Decoder()
    first = decoder.feed(b"".join(encode(p) for p in sent), max_publishes=budget)
    publishes = [p for p in sent if isinstance(p, wire.Publish)]
    assert [p for p in first if not isinstance(p, wire.Publish)] == [
        p for p in sent if not isinstance(p, wire.Publish)]
    assert [p for p in first if isinstance(p, wire.Publish)] == publishes[:budget]
    assert decoder.feed(b"") == publishes[budget:]
