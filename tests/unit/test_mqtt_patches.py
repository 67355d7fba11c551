"""Canary for connectors/mqtt_patches.py: every private attribute, method and constant of
aiomqtt and paho-mqtt that the patches use is where they expect it, with the signature they
call it with, and behaves as they rely on, on the installed versions. A failure here after an
upgrade names what moved: re-check the patch that uses it before changing the pin.

Nothing connects: the clients are built and fed through a local socket pair."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import socket
import struct
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho_mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.matcher import MQTTMatcher

from connectors import mqtt_patches
from connectors.mqtt import BrokerAddress, MqttPublisher, MqttSource
from connectors.mqtt_patches import (
    NO_TOPIC_CALLBACKS,
    PUBACK_TYPE,
    Pubacks,
    ReadAheadSocket,
    ReadGate,
    check_versions,
    patch_subscriber,
)

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """A signature without its annotations (ours are strings, postponed): the names, kinds and
    defaults of the parameters, which are what a call binds to."""
    return [(p.name, p.kind, p.default)
            for p in inspect.signature(function).parameters.values()]


def binds(function: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Whether a call with these arguments, as a patch makes it, binds to ``function``."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


async def until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def paho_client() -> paho_mqtt.Client:
    return paho_mqtt.Client(CallbackAPIVersion.VERSION2, client_id="canary")


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    yield ours, broker
    ours.close()
    broker.close()


# -- versions ------------------------------------------------------------------------------


@pytest.fixture
def fresh_check() -> Iterator[None]:
    """``check_versions`` caches its success: each of these tests starts and ends uncached."""
    check_versions.cache_clear()
    yield
    check_versions.cache_clear()


def test_check_versions_passes_on_the_installed_versions(fresh_check: None) -> None:
    check_versions()


@pytest.mark.parametrize("library", sorted(mqtt_patches.WRITTEN_FOR))
def test_check_versions_names_the_library_that_differs(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(mqtt_patches, "version",
                        lambda name: "99.0.0" if name == library else real(name))
    expected = mqtt_patches.WRITTEN_FOR[library]
    with pytest.raises(RuntimeError) as raised:
        check_versions()
    message = str(raised.value)
    assert f"{library} 99.0.0 is installed" in message
    assert f"{library}=={expected}" in message
    assert "connectors/mqtt_patches.py" in message


def test_check_versions_says_when_a_library_is_missing(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mqtt_patches, "version", missing)
    with pytest.raises(RuntimeError, match=r"aiomqtt \(not installed\) is installed"):
        check_versions()


def test_check_versions_checks_once_per_process(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    check_versions()
    monkeypatch.setattr(mqtt_patches, "version", lambda name: "99.0.0")
    check_versions()  # cached: the metadata is not read again


def test_clients_are_not_built_on_other_versions(
        fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_patches, "version", lambda name: "99.0.0")
    broker = BrokerAddress("localhost", 1883)
    with pytest.raises(RuntimeError, match="mqtt_patches"):
        MqttPublisher(broker)
    with pytest.raises(RuntimeError, match="mqtt_patches"):
        MqttSource(broker, client_id="canary", share_group=None, out=cast(Any, None),
                   metrics=cast(Any, None))


def test_the_versions_are_the_pins() -> None:
    """The versions the patches were written for are the exact pins of pyproject.toml."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for library, expected in mqtt_patches.WRITTEN_FOR.items():
        assert f"{library}=={expected}" in dependencies


# -- aiomqtt's private parts ------------------------------------------------------------------


async def test_aiomqtt_client_holds_paho_and_the_loop() -> None:
    """``Client._client`` (the paho client every patch reaches) and ``Client._loop`` (which
    ReadGate.install replaces with its proxy)."""
    client = aiomqtt.Client(hostname="localhost")
    assert isinstance(client._client, paho_mqtt.Client)
    assert client._loop is asyncio.get_running_loop()


async def test_aiomqtt_registers_its_socket_open_callback() -> None:
    """ReadGate.install wraps whatever paho's ``on_socket_open`` holds: aiomqtt's own
    ``_on_socket_open``, called as paho calls it (client, userdata, sock)."""
    client = aiomqtt.Client(hostname="localhost")
    assert client._client.on_socket_open == client._on_socket_open
    assert [name for name, _, _ in shape(aiomqtt.Client._on_socket_open)] == [
        "self", "client", "userdata", "sock"]


async def test_install_wraps_the_socket_and_captures_the_reader(
        socket_pair: tuple[socket.socket, socket.socket]) -> None:
    """aiomqtt's ``_on_socket_open`` registers its reader through ``self._loop.add_reader``
    (the proxy sees it) and reads through paho's ``_sock`` (the read-ahead socket), looping
    while ``_sock.pending()`` is positive: one call drains every packet read ahead."""
    ours, broker = socket_pair
    client = aiomqtt.Client(hostname="localhost")
    gate = ReadGate(high=10, low=2)
    patch_subscriber(client, gate)
    paho = client._client
    loop = asyncio.get_running_loop()
    try:
        paho.on_socket_open(paho, None, ours)  # type: ignore[misc]
        await until(lambda: gate._reader is not None)
        wrapped = paho._sock
        assert isinstance(wrapped, ReadAheadSocket)
        assert gate._fd == ours.fileno()
        assert gate._loop is loop

        pingresp = bytes([paho_mqtt.PINGRESP, 0])
        broker.sendall(pingresp * 5)
        callback, args = cast(tuple[Callable[..., None], tuple[Any, ...]], gate._reader)
        callback(*args)
        still_open = paho._sock is wrapped
        assert still_open, "the reader closed the socket: a packet was refused"
        assert wrapped.pending() == 0, "aiomqtt's reader no longer drains what is read ahead"
        with pytest.raises(BlockingIOError):
            ours.recv(1)  # everything was read in the one wake-up
    finally:
        loop.remove_reader(ours.fileno())
        await asyncio.sleep(0)  # aiomqtt's misc task is created right after the reader
        if client._misc_task is not None:
            client._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client._misc_task


async def test_aiomqtt_queues_messages_with_put_nowait_and_iterates_that_queue() -> None:
    """connectors.mqtt's intake is aiomqtt's ``queue_type``: built as ``queue_type(maxsize=)``,
    filled by ``Client._on_message`` with ``put_nowait`` and read by ``Client.messages`` from
    ``Client._queue``."""
    put: list[aiomqtt.Message] = []

    class Intake(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize)

        def put_nowait(self, item: aiomqtt.Message) -> None:
            put.append(item)
            super().put_nowait(item)

    client = aiomqtt.Client(hostname="localhost", queue_type=Intake)
    assert isinstance(client._queue, Intake)
    message = paho_mqtt.MQTTMessage(mid=7, topic=b"meters/f1/m1")
    message.payload = b"{}"
    message.qos = 1
    client._on_message(client._client, None, message)
    assert [m.mid for m in put] == [7]
    received = await asyncio.wait_for(anext(aiter(client.messages)), timeout=5)
    assert (received.mid, received.topic.value, received.payload) == (7, "meters/f1/m1", b"{}")


async def test_aiomqtt_pending_calls_threshold() -> None:
    """MqttPublisher raises aiomqtt's warning threshold for outstanding publishes."""
    client = aiomqtt.Client(hostname="localhost")
    assert isinstance(client.pending_calls_threshold, int)


# -- paho's private parts ---------------------------------------------------------------------


def test_paho_reads_through_its_sock(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    """ReadAheadSocket replaces ``Client._sock``: paho's ``_sock_recv`` calls its ``recv``
    with the size it wants, and the rest of a 64 KiB read waits in the buffer."""
    ours, broker = socket_pair
    paho = paho_client()
    assert paho._sock is None
    wrapped = ReadAheadSocket(ours)
    paho._sock = wrapped
    broker.sendall(b"abcdef")
    assert paho._sock_recv(2) == b"ab"
    assert wrapped.pending() == 4
    assert paho._sock_recv(4) == b"cdef"


def test_paho_calls_on_socket_open_with_client_userdata_and_socket(
        socket_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = socket_pair
    paho = paho_client()
    paho.user_data_set("userdata")
    calls: list[tuple[Any, Any, Any]] = []
    paho.on_socket_open = lambda client, userdata, sock: calls.append((client, userdata, sock))
    assert paho.on_socket_open is not None
    paho._call_socket_open(ours)
    assert calls == [(paho, "userdata", ours)]


def test_paho_consults_on_message_filtered_with_iter_match() -> None:
    """patch_subscriber replaces ``Client._on_message_filtered`` (an ``MQTTMatcher``) with
    an object whose ``iter_match`` matches nothing: the general ``on_message`` still gets
    every message."""
    paho = paho_client()
    assert isinstance(paho._on_message_filtered, MQTTMatcher)
    assert shape(type(NO_TOPIC_CALLBACKS).iter_match) == shape(MQTTMatcher.iter_match)
    paho._on_message_filtered = NO_TOPIC_CALLBACKS  # type: ignore[assignment]
    delivered: list[int] = []
    paho.on_message = lambda client, userdata, message: delivered.append(message.mid)
    message = paho_mqtt.MQTTMessage(mid=3, topic=b"meters/f1/m1")
    paho._handle_on_message(message)
    assert delivered == [3]


def test_paho_packet_queue_signature() -> None:
    assert [name for name, _, _ in shape(paho_mqtt.Client._packet_queue)] == [
        "self", "command", "packet", "mid", "qos", "info"]
    assert binds(paho_mqtt.Client._packet_queue, paho_client(), PUBACK_TYPE, b"", 0, 0)


def test_puback_is_the_packet_paho_sends() -> None:
    """A PUBACK built here is byte for byte the one paho's manual ``ack`` queues."""
    assert paho_mqtt.PUBACK == PUBACK_TYPE
    paho = paho_client()
    paho.manual_ack_set(True)
    paho.ack(513, 1)
    queued = paho._out_packet[-1]
    assert queued["command"] == PUBACK_TYPE
    assert queued["packet"] == struct.pack("!BBH", PUBACK_TYPE, 2, 513)


async def test_pubacks_are_queued_as_one_packet_through_paho() -> None:
    client = aiomqtt.Client(hostname="localhost")
    pubacks = Pubacks(client, lambda: True)
    pubacks.add(1)
    pubacks.add(258)
    pubacks.flush()
    out = client._client._out_packet
    assert len(out) == 1
    assert out[-1]["command"] == PUBACK_TYPE
    assert out[-1]["packet"] == (struct.pack("!BBH", PUBACK_TYPE, 2, 1)
                                 + struct.pack("!BBH", PUBACK_TYPE, 2, 258))


async def test_pubacks_ack_goes_paho_s_own_way() -> None:
    """QoS 2 acknowledgements use paho's public ``ack`` on the client behind aiomqtt."""
    client = aiomqtt.Client(hostname="localhost")
    client._client.manual_ack_set(True)
    Pubacks(client, lambda: True).ack(9, 2)
    assert client._client._out_packet[-1]["command"] == paho_mqtt.PUBCOMP
    Pubacks(client, lambda: False).ack(10, 2)  # an old connection's ack goes nowhere
    assert len(client._client._out_packet) == 1


async def test_patch_subscriber_switches_paho_to_manual_ack_without_logging() -> None:
    """``manual_ack_set`` and ``disable_logger`` keep their names and effect."""
    client = aiomqtt.Client(hostname="localhost")
    assert client._client.logger is not None  # aiomqtt enables it
    patch_subscriber(client, ReadGate(high=10, low=2))
    assert client._client._manual_ack is True
    assert client._client.logger is None
    assert client._client._on_message_filtered is NO_TOPIC_CALLBACKS
    assert binds(paho_mqtt.Client.manual_ack_set, client._client, True)
    assert binds(paho_mqtt.Client.disable_logger, client._client)
    assert binds(paho_mqtt.Client.ack, client._client, 1, 1)


def test_reader_capture_matches_the_loop_s_add_reader() -> None:
    """The proxy's ``add_reader`` takes what asyncio's does (aiomqtt calls it positionally)."""
    assert shape(mqtt_patches._ReaderCapture.add_reader) == shape(
        asyncio.AbstractEventLoop.add_reader)
