"""What both runtimes share: the parts a process is built from, the registrations of its
agents and services, and one lifecycle.

A runtime is a transport for the same agents: ``streams/local.py`` (in-memory channels) or
``streams/kafka.py`` (faust-streaming workers on Kafka). ``streams/compose.py`` builds the
parts from the settings and hands them, with the registrations, to the runtime; the runtime
says only how a topic is consumed and produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from agents.forecast import ForecastService
from connectors.kafka import BMS_COMMANDS, DR_EVENTS
from core.channels import Channel, Sink
from core.metrics import Metrics
from schemas.metadata import Facility
from schemas.raw import RawMessage
from schemas.validation import ValidationSettings
from simulators.building import BuildingModel
from streams.dr_wiring import DrWiring
from streams.lifecycle import Lifecycle
from streams.registry import RegistryHolder
from streams.settings import Settings
from streams.shutdown import Step
from tables.ports.cache import Cache
from tables.ports.store import Store
from tables.ports.weather import WeatherProvider

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Clock = Callable[[], datetime]


@dataclass
class Parts:
    """What every process of a deployment is built from, whatever its transport."""

    settings: Settings
    metrics: Metrics
    clock: Clock
    store: Store
    cache: Cache | None
    weather: WeatherProvider
    validation: ValidationSettings
    bms_models: Mapping[str, BuildingModel] | None = None
    """The demo fleet this process simulates (``sems run``): the in-process BMS commands it."""

    def __post_init__(self) -> None:
        self.registry = RegistryHolder(self.store)


@dataclass(frozen=True)
class AgentSpec(Generic[M]):
    """A stream agent: consumes ``topic``'s records (``record``s) in batches. Both runtimes
    run every registered agent: an in-memory channel's stream, or a Faust agent on the
    topic."""

    name: str
    topic: str
    record: type[M]
    run: Callable[[Runtime, AsyncIterator[list[M]]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ServiceSpec:
    """A task every worker runs beside its agents (a scheduler, a periodic job)."""

    name: str
    run: Callable[[Runtime], Coroutine[Any, Any, None]]
    enabled: Callable[[Settings], bool] = lambda _settings: True


async def decoded(topic: str, record: type[M], batches: AsyncIterator[list[bytes]]
                  ) -> AsyncIterator[list[M]]:
    """A Kafka topic's batches, decoded; a record that is not one is skipped with a log (it was
    not produced by SEMS, and must not stop the agent)."""
    async for batch in batches:
        values = []
        for value in batch:
            try:
                values.append(record.model_validate_json(value))
            except (ValidationError, ValueError) as exc:
                log.error("%s: a message that is not a %s is skipped (%s)", topic,
                          record.__name__, str(exc).splitlines()[0])
        yield values


class Runtime:
    """A process's parts and lifecycle; a subclass is the transport. ``open`` opens the
    stores; ``start`` starts demand response, the transport's agents and the registered
    services; ``stop`` (or ``stop_steps`` under a deadline) stops them in reverse."""

    name = "local"
    vital = "runtime"
    """What ``until_failed`` watches, for the log."""

    def __init__(self, parts: Parts, *, agents: tuple[AgentSpec[Any], ...],
                 services: tuple[ServiceSpec, ...]) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.metrics = parts.metrics
        self.clock = parts.clock
        self.store = parts.store
        self.cache = parts.cache
        self.registry = parts.registry
        self.weather = parts.weather
        self.agents = agents
        self.services = services
        self.life = Lifecycle()
        self.raw: Channel[RawMessage] = Channel("raw", capacity=parts.settings.channel_capacity)
        """Where meter payloads enter (the MQTT source, or the in-process simulator)."""
        self._tasks: list[asyncio.Task[None]] = []
        s = parts.settings
        self.forecast_service = ForecastService(
            parts.store, parts.weather, publish=self.forecast_sink().send,
            metrics=parts.metrics, clock=parts.clock, history_days=s.forecast_history_days,
            reselect_s=s.forecast_reselect_s)
        self.dr = DrWiring(
            s, parts.store, parts.metrics, parts.clock,
            publish_event=self.sink(DR_EVENTS, key=_facility_id, kept=True).send,
            publish_command=self.sink(BMS_COMMANDS, key=_facility_id, kept=True).send,
            owned=self.owns, models=parts.bms_models)

    # -- what a transport says ---------------------------------------------------------------

    def forecast_sink(self) -> Sink[Any]:
        raise NotImplementedError

    def sink(self, topic: str, *, key: Callable[[Any], str], kept: bool = False) -> Sink[Any]:
        """Where values for ``topic`` go. ``kept``: the records are in the store too and
        published again when found missing (DR events, BMS commands), so a failed delivery
        is logged and later sends go on."""
        raise NotImplementedError

    def owns(self, facility_id: str) -> bool:
        """Whether this process schedules the facility's DR (all, but in a kafka worker)."""
        return True

    def owned_facilities(self, facilities: list[Facility]) -> list[Facility]:
        """The facilities this process forecasts (all of them, but in a kafka worker)."""
        return facilities

    async def until_failed(self) -> str:
        """Returns, with the reason, once a part this process cannot run without has failed
        (the Faust worker); never, in the local runtime."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and the weather, load the registry; before provisioning or
        :meth:`start`."""
        life = self.life
        await life.start("store close", self.store.open, self.store.close)
        await life.start("weather close", self.weather.open, self.weather.close)
        await life.start("forecast workers close", _nothing, self._close_forecasts)
        await life.start("registry", self.reload_registry)

    async def reload_registry(self) -> None:
        await self.registry.reload()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(log_crash)
        self._tasks.append(task)
        return task

    async def start_services(self) -> None:
        """The registered services, stopped (cancelled) before the agents drain."""
        for spec in self.services:
            if spec.enabled(self.settings):
                self.spawn(spec.run(self), spec.name)
        self.life.push("services stop", self._stop_services)

    async def _stop_services(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_forecasts(self) -> None:
        self.forecast_service.close()

    def stop_steps(self) -> list[Step]:
        """The orderly stop, as named steps (``streams.shutdown`` runs them under the grace
        and names the one it abandons)."""
        return self.life.stop_steps()

    async def stop(self) -> None:
        """The stop steps, one after another, without a deadline (tests, benchmarks)."""
        await self.life.aclose()


async def _nothing() -> None:
    return None


def _facility_id(record: Any) -> str:
    return str(record.facility_id)


def log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())

