"""Ingestion from a real Mosquitto broker: storage, dead letters, reconnects, persistence,
bursts and shared subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import mqtt_codec as wire
from connectors.mqtt import BrokerAddress, MqttPublisher, MqttSource
from core.channels import Channel
from core.metrics import Metrics
from schemas.raw import RawMessage
from simulators.fleet import build_fleet
from simulators.publish import Faults, Simulation
from tests.integration.helpers import count_is, eventually, settings, start_runtime
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

READINGS = "SELECT COUNT(*) FROM readings"
DEAD = "SELECT COUNT(*) FROM dead_letters"
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def publish_range(broker: Mosquitto, fleet_size: tuple[int, int], start: datetime,
                        minutes: int, faults: Faults | None = None) -> int:
    fleet = build_fleet(facilities=fleet_size[0], meters_per_facility=fleet_size[1], seed=7)
    async with MqttPublisher(BrokerAddress.parse(broker.url), client_id=unique("pub")) as pub:
        sim = Simulation(fleet, pub.publish, faults=faults or Faults(), seed=7)
        await sim.run_range(start, start + timedelta(minutes=minutes), inject_at=start)
        return sim.published


async def test_readings_are_stored_and_bad_messages_dead_lettered(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    fleet = build_fleet(facilities=3, meters_per_facility=4, seed=7)
    cfg = settings(tmp_path, mqtt_url=mosquitto.url, mqtt_client_id=unique("sems"),
                   mqtt_share_group=unique("g"))
    runtime = await start_runtime(cfg, fleet)
    try:
        await asyncio.wait_for(runtime.mqtt.connected.wait(), 10)  # type: ignore[union-attr]
        # 12 meters x 40 steps (10 min) = 480 readings, plus the 8 kinds of malformed message.
        await publish_range(mosquitto, (3, 4), START, 10, Faults(malformed_count=8))
        await eventually(lambda: count_is(runtime, READINGS, 480), timeout_s=30,
                         what="480 stored readings")
        await eventually(lambda: count_is(runtime, DEAD, 8), timeout_s=30, what="8 dead letters")
        reasons = {
            d.reason.value for d in await runtime.store.dead_letters(limit=100)
        }
        assert reasons == {"malformed_json", "missing_field", "wrong_type", "out_of_range",
                           "unknown_field", "naive_timestamp", "unknown_meter"}
        rejected = runtime.metrics.registry.get_sample_value
        total = sum(rejected("sems_readings_rejected_total", {"reason": r}) or 0
                    for r in reasons)
        assert total == 8
    finally:
        await runtime.stop()


async def test_subscriber_reconnects_and_resubscribes_after_broker_restart(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    fleet = build_fleet(facilities=1, meters_per_facility=4, seed=7)
    cfg = settings(tmp_path, mqtt_url=own_mosquitto.url)
    runtime = await start_runtime(cfg, fleet)
    try:
        assert runtime.mqtt is not None
        await asyncio.wait_for(runtime.mqtt.connected.wait(), 10)
        await publish_range(own_mosquitto, (1, 4), START, 5)  # 4 meters x 20 steps
        await eventually(lambda: count_is(runtime, READINGS, 80), timeout_s=30,
                         what="first 80 readings")
        own_mosquitto.restart()
        await eventually(lambda: _true(runtime.metrics.registry.get_sample_value(
            "sems_mqtt_connects_total") == 2), timeout_s=30, what="reconnect")
        await publish_range(own_mosquitto, (1, 4), START + timedelta(minutes=5), 5)
        await eventually(lambda: count_is(runtime, READINGS, 160), timeout_s=30,
                         what="160 readings after the restart")
    finally:
        await runtime.stop()


async def _true(value: bool) -> bool:
    return value


async def test_readings_published_while_sems_is_down_arrive_after_it_restarts(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    fleet = build_fleet(facilities=1, meters_per_facility=4, seed=7)
    cfg = settings(tmp_path, mqtt_url=own_mosquitto.url, mqtt_client_id="sems-persistent")
    first = await start_runtime(cfg, fleet)
    assert first.mqtt is not None
    await asyncio.wait_for(first.mqtt.connected.wait(), 10)
    await first.stop()
    # SEMS is down; its persistent session makes the broker keep these for it.
    published = await publish_range(own_mosquitto, (1, 4), START, 5)
    second = await start_runtime(cfg, fleet)
    try:
        await eventually(lambda: count_is(second, READINGS, published), timeout_s=30,
                         what=f"{published} readings queued while down")
    finally:
        await second.stop()


async def test_burst_is_queued_by_the_broker_not_dropped(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    fleet = build_fleet(facilities=20, meters_per_facility=5, seed=7)
    cfg = settings(tmp_path, mqtt_url=own_mosquitto.url)
    runtime = await start_runtime(cfg, fleet)
    try:
        assert runtime.mqtt is not None
        await asyncio.wait_for(runtime.mqtt.connected.wait(), 10)
        # 100 meters x 240 steps = 24,000 readings as fast as the publisher goes.
        published = await publish_range(own_mosquitto, (20, 5), START, 60)
        assert published == 24_000
        await eventually(lambda: count_is(runtime, READINGS, published), timeout_s=120,
                         what="every reading of the burst")
        assert not own_mosquitto.dropped_messages_logged()
        # Memory stayed bounded: reading paused while 5,000 messages waited (one 64 KiB
        # read-ahead of ~250 more may land after the pause).
        assert 0 < runtime.mqtt.peak_waiting <= runtime.mqtt.max_waiting + 500
        received = runtime.metrics.registry.get_sample_value("sems_readings_received_total")
        assert received is not None and received >= published
    finally:
        await runtime.stop()


async def test_shared_subscription_splits_readings_between_processes(
    mosquitto: Mosquitto,
) -> None:
    group = unique("share")
    channels: list[Channel[RawMessage]] = [Channel(f"raw{i}", capacity=10_000) for i in (1, 2)]
    got: list[list[str]] = [[], []]

    async def drain(i: int) -> None:
        # take() acknowledges each batch when the next is asked for: what the pipeline does
        # once the readings are stored.
        async for batch in channels[i].stream().take(500, within=0.01):
            got[i].extend(f"{m.topic} {m.payload!r}" for m in batch)

    sources = [
        MqttSource(BrokerAddress.parse(mosquitto.url), client_id=unique(f"worker{i}"),
                   share_group=group,
                   out=channels[i], metrics=Metrics())
        for i in (0, 1)
    ]
    tasks = [asyncio.create_task(s.run()) for s in sources]
    tasks += [asyncio.create_task(drain(i)) for i in (0, 1)]
    try:
        for s in sources:
            await asyncio.wait_for(s.connected.wait(), 10)
        published = await publish_range(mosquitto, (2, 5), START, 20)  # 10 x 80 = 800
        await eventually(lambda: _true(len(got[0]) + len(got[1]) >= published),
                         timeout_s=30,
                         what=f"all {published} readings across both workers, got "
                              f"{len(got[0])} + {len(got[1])}")
        assert len(got[0]) + len(got[1]) == published, (len(got[0]), len(got[1]))
        assert got[0] and got[1], "both workers must take a share"
        assert not set(got[0]) & set(got[1]), "a reading went to both workers"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_acknowledgements_flow_and_unacknowledged_messages_come_back(
    own_mosquitto: Mosquitto,
) -> None:
    """PUBACKs go out a batch at a time: three times the broker's in-flight window (1,000)
    arrives only if they flow, and what was never acknowledged comes back when the persistent
    session reconnects (MQTT's at-least-once: a few acknowledged just before the disconnect may
    come back too; the store absorbs them)."""
    client_id = unique("sems")
    address = BrokerAddress.parse(own_mosquitto.url)

    async def session(*, until: set[bytes], ack: Callable[[bytes], bool],
                      subscribed: asyncio.Event | None = None) -> list[bytes]:
        """Receive until every payload of ``until`` has arrived, acknowledging those ``ack``
        picks."""
        raw: Channel[RawMessage] = Channel("raw", capacity=5000)
        stream = raw.stream()
        source = MqttSource(address, client_id=client_id, share_group=None, out=raw,
                            metrics=Metrics())
        task = asyncio.create_task(source.run())
        got: list[bytes] = []
        try:
            await asyncio.wait_for(source.connected.wait(), 10)
            if subscribed is not None:
                subscribed.set()
            async for batch in stream.batches(500, within=0.0):
                for message, puback in zip(batch.values, batch.acks, strict=True):
                    got.append(message.payload)
                    if ack(message.payload) and puback is not None:
                        puback()
                if until <= set(got):
                    break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return got

    sent = [b"%d" % i for i in range(3000)]
    kept = set(sent[-5:])
    subscribed = asyncio.Event()
    receiving = asyncio.create_task(session(until=set(sent), ack=lambda p: p not in kept,
                                            subscribed=subscribed))
    await asyncio.wait_for(subscribed.wait(), 10)
    async with MqttPublisher(address, client_id=unique("pub")) as pub:
        for payload in sent:
            await pub.publish("meters/f/m", payload)
    first = await asyncio.wait_for(receiving, 60)
    assert first == sent
    again = await asyncio.wait_for(session(until=kept, ack=lambda p: True), 30)
    assert kept <= set(again)


async def _connects(source: MqttSource, metrics: Metrics, at_least: int) -> None:
    async def enough() -> bool:
        connects = metrics.registry.get_sample_value("sems_mqtt_connects_total") or 0.0
        return connects >= at_least
    await eventually(enough, timeout_s=20, what=f"{at_least} MQTT connections")


async def test_a_silent_broker_is_given_up_on_and_reconnected(
    own_mosquitto: Mosquitto,
) -> None:
    """A broker that stops answering (its process frozen: no FIN, no RST) is noticed by the
    keepalive within 1.5 intervals, and the session comes back when the broker does."""
    metrics = Metrics()
    raw: Channel[RawMessage] = Channel("raw", capacity=100)
    stream = raw.stream()
    source = MqttSource(BrokerAddress.parse(own_mosquitto.url), client_id=unique("sems"),
                        share_group=None, out=raw, metrics=metrics, keepalive_s=1,
                        reconnect_delay_s=0.1, timeout_s=2)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.connected.wait(), 10)
        own_mosquitto.pause()

        async def given_up() -> bool:
            return not source.connected.is_set()
        try:
            await eventually(given_up, timeout_s=10, what="the frozen broker given up on")
        finally:
            own_mosquitto.resume()
        await _connects(source, metrics, 2)
        await asyncio.wait_for(source.connected.wait(), 10)
        async with MqttPublisher(BrokerAddress.parse(own_mosquitto.url),
                                 client_id=unique("pub")) as pub:
            await pub.publish("meters/f/m", b"after")
        batch = await asyncio.wait_for(anext(stream.batches(10, within=0.0)), 10)
        assert [m.payload for m in batch.values] == [b"after"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_broker_that_breaks_the_protocol_is_dropped_and_tried_again() -> None:
    """Mosquitto does not send malformed packets, so a server of the test's own does: a
    CONNACK, a SUBACK and one PUBLISH; once that is acknowledged, a packet type a subscriber
    never gets. The source delivers the message, logs, reconnects, and goes on running."""
    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")
        await reader.read(1024)  # SUBSCRIBE, packet id 1
        writer.write(b"\x90\x03\x00\x01\x01")
        writer.write(wire.publish("meters/f/m", b"good", qos=1, packet_id=1))
        if await reader.read(4) == wire.puback(1):
            writer.write(b"\x40\x02\x00\x01")  # a PUBACK: no broker sends one to a subscriber
        await reader.read(1024)  # until the subscriber drops the connection
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    metrics = Metrics()
    raw: Channel[RawMessage] = Channel("raw", capacity=100)
    stream = raw.stream()
    source = MqttSource(BrokerAddress("127.0.0.1", port), client_id="c", share_group=None,
                        out=raw, metrics=metrics, reconnect_delay_s=0.05)
    task = asyncio.create_task(source.run())
    try:
        batch = await asyncio.wait_for(anext(stream.batches(10, within=0.0)), 10)
        assert [m.payload for m in batch.values] == [b"good"]
        batch.ack()
        await _connects(source, metrics, 2)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        await server.wait_closed()
