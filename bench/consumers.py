"""The two baselines: the broker's own C client and a bare aiomqtt subscriber.

Each consumer has a persistent session (MQTT 3.1.1, ``clean_session=False``, fixed client id):
``subscribe`` creates it, the backlog is then queued in it while the consumer is away,
``drain`` times the consumer from its start until it has every message, and ``forget`` ends
the session so that no later backlog is queued for it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from typing import Protocol

import aiomqtt
import orjson

from connectors.mqtt import READINGS_TOPIC_FILTER, BrokerAddress

BROKER_INFLIGHT = 10_000
"""The broker's ``max_inflight_messages`` in the benchmarks: what docs/operations.md gives for
production. SEMS acknowledges a message once it is stored, so it takes at most this many per
store round trip; the baselines acknowledge on receipt and do not notice it."""


class DrainTimeout(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Drain:
    """One consumer draining one backlog. ``duplicated`` is ``None`` where not checked."""

    consumer: str
    expected: int
    received: int
    elapsed_s: float
    lost: int
    duplicated: int | None
    notes: tuple[str, ...] = ()

    @property
    def readings_per_s(self) -> float:
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Consumer(Protocol):
    name: str

    async def subscribe(self) -> None: ...

    async def drain(self, expected: int) -> Drain: ...

    async def forget(self) -> None: ...


def drain_timeout_s(expected: int) -> float:
    """Generous: a consumer at 1,000 messages/s still finishes."""
    return max(60.0, expected / 1_000)


async def forget_session(broker: BrokerAddress, client_id: str) -> None:
    """A clean-session connect with the same id discards the stored session and its queue."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
                              timeout=30):
        pass


def mosquitto_sub_binary() -> str:
    found = shutil.which("mosquitto_sub")
    if found is None:
        raise RuntimeError("mosquitto_sub is missing: install the Debian mosquitto-clients")
    return found


class MosquittoSub:
    """``mosquitto_sub -c -q 1 -C N`` to /dev/null: the broker's ceiling at QoS 1."""

    name = "mosquitto_sub"

    def __init__(self, broker: BrokerAddress, *, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id

    def _argv(self, *extra: str) -> list[str]:
        return [mosquitto_sub_binary(), "-h", self.broker.host, "-p", str(self.broker.port),
                "-V", "mqttv311", "-c", "-i", self.client_id, "-q", "1",
                "-t", READINGS_TOPIC_FILTER, *extra]

    async def _run(self, *extra: str, timeout_s: float) -> int:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(*extra), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            return await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DrainTimeout(
                f"mosquitto_sub {' '.join(extra)} ran past {timeout_s:g} s") from None

    async def subscribe(self) -> None:
        rc = await self._run("-E", timeout_s=30)
        if rc != 0:
            raise RuntimeError(f"mosquitto_sub -E exited with {rc}")

    async def drain(self, expected: int) -> Drain:
        started = time.perf_counter()
        rc = await self._run("-C", str(expected), timeout_s=drain_timeout_s(expected))
        elapsed_s = time.perf_counter() - started
        if rc != 0:
            raise RuntimeError(f"mosquitto_sub -C exited with {rc}")
        # -C N exits at the Nth message: a loss would show as a timeout, not as a count.
        return Drain(self.name, expected, expected, elapsed_s, lost=0, duplicated=None)

    async def forget(self) -> None:
        await forget_session(self.broker, self.client_id)


class BareAiomqtt:
    """aiomqtt, MQTT 3.1.1 persistent session, QoS 1 (paho acknowledges), ``orjson.loads``
    of each payload and a count: what any Python consumer on this stack pays."""

    name = "bare aiomqtt"

    def __init__(self, broker: BrokerAddress, *, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.client_id,
                              protocol=aiomqtt.ProtocolVersion.V311, clean_session=False,
                              timeout=30)

    async def subscribe(self) -> None:
        async with self._client() as client:
            await client.subscribe(READINGS_TOPIC_FILTER, qos=1)

    async def _count(self, expected: int) -> tuple[int, float]:
        """Messages received and when the last one was (before the disconnect)."""
        received = 0
        finished = time.perf_counter()
        async with self._client() as client:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    orjson.loads(payload)
                received += 1
                if received >= expected:
                    finished = time.perf_counter()
                    break
        return received, finished

    async def drain(self, expected: int) -> Drain:
        started = time.perf_counter()
        timeout_s = drain_timeout_s(expected)
        try:
            received, finished = await asyncio.wait_for(self._count(expected), timeout_s)
        except TimeoutError:
            raise DrainTimeout(f"bare aiomqtt ran past {timeout_s:g} s") from None
        return Drain(self.name, expected, received, finished - started, lost=0,
                     duplicated=None)

    async def forget(self) -> None:
        await forget_session(self.broker, self.client_id)
