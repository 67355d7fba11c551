"""The composition root: both runtimes run every registered agent and service, built from the
settings in one place, and a failed start closes what was opened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from simulators.fleet import build_fleet
from streams import compose
from streams.kafka import KafkaRuntime
from streams.local import LocalRuntime
from streams.runtime import AgentSpec, Runtime, ServiceSpec
from tests.integration.helpers import eventually, provision, settings

pytestmark = pytest.mark.integration


class Ping(BaseModel):
    facility_id: str
    n: int


def _echo(seen: list[int]) -> AgentSpec[Ping]:
    async def run(_rt: Runtime, batches: AsyncIterator[list[Ping]]) -> None:
        async for batch in batches:
            seen.extend(p.n for p in batch)

    return AgentSpec("echo", "test-pings", Ping, run)


async def test_an_agent_registered_once_runs_in_the_local_runtime(tmp_path: Path) -> None:
    """One ``AgentSpec`` is all a new agent needs: the local runtime gives it its topic's
    channel, and the stop lets it handle what was sent before."""
    seen: list[int] = []
    cfg = settings(tmp_path, forecast_enabled=False)
    runtime = LocalRuntime(compose.parts(cfg), agents=(*compose.AGENTS, _echo(seen)),
                           services=compose.SERVICES)
    await provision(runtime, build_fleet(facilities=1, meters_per_facility=1, seed=1))
    try:
        sink = runtime.sink("test-pings", key=lambda p: p.facility_id)
        await sink.send(Ping(facility_id="fac-001", n=1))

        async def handled() -> bool:
            return seen == [1]

        await eventually(handled, timeout_s=10, what="the registered agent's first record")
        await sink.send(Ping(facility_id="fac-001", n=2))
    finally:
        await runtime.stop()
    assert seen == [1, 2]  # drained at the stop, not dropped


async def test_a_registered_service_runs_and_is_stopped(tmp_path: Path) -> None:
    ran: list[str] = []

    async def tick(_rt: Runtime) -> None:
        ran.append("tick")
        try:
            await _forever()
        finally:
            ran.append("stopped")

    cfg = settings(tmp_path, forecast_enabled=False)
    runtime = compose.local(cfg)
    runtime.services = (*runtime.services, ServiceSpec("ticker", tick))
    await provision(runtime, build_fleet(facilities=1, meters_per_facility=1, seed=1))

    async def started() -> bool:
        return ran == ["tick"]

    try:
        await eventually(started, timeout_s=10, what="the registered service")
    finally:
        await runtime.stop()
    assert ran == ["tick", "stopped"]


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_the_kafka_runtime_registers_a_faust_agent_for_every_registration(
        tmp_path: Path) -> None:
    """The same registrations, on Kafka: a Faust agent per ``AgentSpec`` on its topic, beside
    the rollups (built without a broker: nothing connects before ``start``)."""
    seen: list[int] = []
    runtime = KafkaRuntime(compose.parts(settings(tmp_path)),
                           agents=(*compose.AGENTS, _echo(seen)), services=compose.SERVICES)
    agents = {name.rsplit(".", 1)[-1]: agent for name, agent in runtime.app.agents.items()}
    assert set(agents) >= {"rollups", "echo", *(spec.name for spec in compose.AGENTS)}
    topics = {t for agent in agents.values() for t in agent.channel.get_topic_name().split(",")}
    assert {"test-pings", "sensor-readings", "sensor-readings.dlq", "dr-events",
            "bms-commands"} <= topics


async def test_a_failed_start_closes_what_was_opened(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = compose.local(settings(tmp_path, forecast_enabled=False))
    closed: list[str] = []

    async def store_closed() -> None:
        closed.append("store")

    async def weather_closed() -> None:
        closed.append("weather")

    async def bms_unreachable() -> None:
        raise OSError("the BMS refused the connection")

    monkeypatch.setattr(runtime.store, "close", store_closed)
    monkeypatch.setattr(runtime.weather, "close", weather_closed)
    monkeypatch.setattr(runtime.dr, "open", bms_unreachable)
    await runtime.open()
    with pytest.raises(OSError, match="refused"):
        await runtime.start()
    assert closed == ["weather", "store"]
    assert runtime.stop_steps() == []
