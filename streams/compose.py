"""The composition root: everything a SEMS process runs, built from the settings and a
transport, in one place.

    Settings ─► parts (store, cache, weather, validation; streams/stores.py picks the
                adapters of the profile)
             ─► a runtime: LocalRuntime (in-memory channels) or KafkaRuntime (Faust on Kafka)
             ─► the registered agents and services, the same in both

``sems run``, ``sems worker``, ``sems ingest``, the tests and ``bench/`` build their processes
here. To add a stream agent, add an ``AgentSpec`` to ``AGENTS`` (its topic, its record type,
what it runs); a task every worker runs, a ``ServiceSpec`` to ``SERVICES``; a store, a port in
``tables/ports/`` and its adapter in ``streams/stores.py``; a route, its module's ``ENDPOINTS``
(``api/``). The rollup agent and ingest are the runtimes' own: each transports readings its
way (Faust's fetches and changelog-backed table; a channel and the recovery from the store).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from agents.bms_command_agent import bms_command_agent
from agents.deadletter import dead_letter_agent
from agents.forecast import forecast_agent
from connectors import kafka as topics
from core.metrics import Metrics
from schemas.deadletter import DeadLetter
from schemas.dr import BmsCommandRecord, DrEvent
from schemas.validation import ValidationSettings
from simulators.building import BuildingModel
from streams.kafka import KafkaRuntime
from streams.local import LocalRuntime
from streams.runtime import AgentSpec, Clock, Parts, Runtime, ServiceSpec
from streams.settings import Settings
from streams.stores import build_cache, build_store, build_weather


async def _dead_letters(rt: Runtime, batches: AsyncIterator[list[DeadLetter]]) -> None:
    await dead_letter_agent(batches, store=rt.store)


async def _dr_events(rt: Runtime, batches: AsyncIterator[list[DrEvent]]) -> None:
    await rt.dr.events_agent(batches)


async def _bms_commands(rt: Runtime, batches: AsyncIterator[list[BmsCommandRecord]]) -> None:
    await bms_command_agent(batches, executor=rt.dr.executor)


AGENTS: tuple[AgentSpec[Any], ...] = (
    AgentSpec("dead-letters", topics.DEAD_LETTERS, DeadLetter, _dead_letters),
    AgentSpec("dr-events", topics.DR_EVENTS, DrEvent, _dr_events),
    AgentSpec("bms-commands", topics.BMS_COMMANDS, BmsCommandRecord, _bms_commands),
)
"""Stream agents beside the rollups: a channel's stream in the local runtime, a Faust agent on
the (facility-keyed) topic in a kafka worker."""


async def _forecast(rt: Runtime) -> None:
    s = rt.settings
    await forecast_agent(rt.forecast_service, interval_s=s.forecast_interval_s,
                         delay_s=s.forecast_delay_s, owned=rt.owned_facilities)


async def _forecast_models(rt: Runtime) -> None:
    await rt.forecast_service.choose_forever()


async def _dr_scheduler(rt: Runtime) -> None:
    await rt.dr.service.run_forever()


async def _dr_watchdog(rt: Runtime) -> None:
    await rt.dr.watchdog.run_forever()


def _forecasting(settings: Settings) -> bool:
    return settings.forecast_enabled


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("forecast", _forecast, enabled=_forecasting),
    ServiceSpec("forecast-models", _forecast_models, enabled=_forecasting),
    ServiceSpec("dr-scheduler", _dr_scheduler),
    ServiceSpec("dr-watchdog", _dr_watchdog),
)
"""Tasks every worker runs (a kafka worker for the facilities of its partitions)."""


def parts(settings: Settings, *, metrics: Metrics | None = None, clock: Clock | None = None,
          bms_models: Mapping[str, BuildingModel] | None = None) -> Parts:
    """The profile's adapters, not yet open (the runtime's lifecycle opens them)."""
    metrics = metrics if metrics is not None else Metrics()
    return Parts(
        settings=settings, metrics=metrics,
        clock=clock if clock is not None else _utc_now,
        store=build_store(settings, metrics), cache=build_cache(settings),
        weather=build_weather(settings),
        validation=ValidationSettings(max_future_s=settings.max_future_s,
                                      max_age_s=settings.retention_raw_days * 86_400.0),
        bms_models=bms_models)


def local(settings: Settings, *, metrics: Metrics | None = None, clock: Clock | None = None,
          bms_models: Mapping[str, BuildingModel] | None = None) -> LocalRuntime:
    """The embedded runtime: every agent in this process, on in-memory channels."""
    return LocalRuntime(parts(settings, metrics=metrics, clock=clock, bms_models=bms_models),
                        agents=AGENTS, services=SERVICES)


def kafka(settings: Settings, *, metrics: Metrics | None = None, clock: Clock | None = None,
          bms_models: Mapping[str, BuildingModel] | None = None) -> KafkaRuntime:
    """A kafka-runtime process: a worker, the ingest service, or both (``start``)."""
    return KafkaRuntime(parts(settings, metrics=metrics, clock=clock, bms_models=bms_models),
                        agents=AGENTS, services=SERVICES)


def runtime(settings: Settings, *, metrics: Metrics | None = None, clock: Clock | None = None,
            bms_models: Mapping[str, BuildingModel] | None = None) -> LocalRuntime | KafkaRuntime:
    """The runtime ``settings.runtime`` names."""
    build = kafka if settings.runtime == "kafka" else local
    return build(settings, metrics=metrics, clock=clock, bms_models=bms_models)


def _utc_now() -> datetime:
    return datetime.now(UTC)
