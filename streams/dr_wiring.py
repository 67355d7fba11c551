"""Demand response inside a runtime: the DR agent, the BMS-command agent, the BMS they
command and what the API needs; ``streams/local.py`` and ``streams/kafka.py`` call this.

The BMS is ``SEMS_BMS_URL`` (its WSDL) when set. Unset, and when this process simulates the
demo fleet (``sems run``), it is the simulated BMS served in-process (``BmsServer`` on
``SEMS_BMS_PORT``) over the very building objects the meter simulator reads, so a shed shows up
in the readings; the planner's inventory then comes from the building models. With a real BMS
the inventory comes from its zone and lighting lists (``agents/dr_inventory.py``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.bms_commands import BmsCommandExecutor, bms_command_agent
from agents.demand_response import DrService
from agents.dr_baseline import BaselineSource
from agents.dr_inventory import (
    BmsInventory,
    ComfortLimits,
    InventorySource,
    RuledInventory,
    SimulatorInventory,
    load_site_rules,
)
from agents.dr_watchdog import DrWatchdog
from api.dr_deps import DrApi
from connectors.bms import BmsError
from connectors.bms.soap import BmsClient
from connectors.kafka import BMS_COMMANDS, DR_EVENTS, KafkaSink, partition_for
from schemas.dr import BmsCommandRecord, DrEvent
from simulators.bms import BmsServer, BmsService
from simulators.building import BuildingModel
from streams.channels import Channel
from streams.metrics import Metrics
from streams.settings import Settings
from tables.ports import Store

log = logging.getLogger(__name__)


class DrWiring:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 clock: Callable[[], datetime], *,
                 publish_event: Callable[[DrEvent], Awaitable[None]],
                 publish_command: Callable[[BmsCommandRecord], Awaitable[None]],
                 owned: Callable[[str], bool] = lambda _facility_id: True) -> None:
        s = settings
        self.settings = settings
        self.baselines = BaselineSource(store, store, method=s.dr_baseline, events=store)
        self.executor = BmsCommandExecutor(store, metrics, clock)
        self.service = DrService(store, self.baselines, publish_command, metrics, clock,
                                 release_stages=s.dr_release_stages,
                                 release_gap_s=s.dr_release_gap_s,
                                 report_timeout_s=s.dr_report_timeout_s, owned=owned)
        # Restores from the audit trail what the release path leaves shed past its deadline;
        # through the executor's BMS client, not the planner or the bms-commands stream.
        self.watchdog = DrWatchdog(store, self.executor, metrics, clock,
                                   release_stages=s.dr_release_stages,
                                   release_gap_s=s.dr_release_gap_s,
                                   grace_s=s.dr_release_grace_s, owned=owned)
        self.api = DrApi(store=store, access=store, baselines=self.baselines,
                         submit=publish_event, max_lead_s=s.dr_max_lead_s)
        self.limits = ComfortLimits(max_setpoint_offset_c=s.dr_max_setpoint_offset_c,
                                    min_lighting_pct=s.dr_min_lighting_pct)
        # Read at start: a mistake in the file stops SEMS with where and why.
        self.sites = load_site_rules(s.dr_sites) if s.dr_sites is not None else {}
        self.bms_server: BmsServer | None = None
        self._client: BmsClient | None = None
        self.models: Mapping[str, BuildingModel] | None = None
        """The demo fleet this process simulates (``sems run`` sets it): the in-process BMS."""

    async def attach_bms(self, models: Mapping[str, BuildingModel] | None = None) -> None:
        """Open the BMS: ``SEMS_BMS_URL``, else the simulated one over ``models`` (the demo
        fleet this process simulates). Without either, events fail with a reason."""
        s = self.settings
        url = s.bms_url
        if url is None and models is not None:
            self.bms_server = BmsServer(BmsService(models), host=s.api_host, port=s.bms_port)
            await self.bms_server.start()
            url = self.bms_server.wsdl_url
        if url is None:
            log.warning("no BMS: set SEMS_BMS_URL; DR events will fail")
            return
        client = BmsClient(url, timeout_s=s.bms_timeout_s)
        try:
            await client.open()
        except BmsError as exc:  # metering goes on; DR events fail with the reason
            log.error("the BMS at %s cannot be reached (%s): DR events will fail until SEMS "
                      "is restarted with a BMS", url, exc)
            return
        self._client = client
        self.executor.bms = client
        source: Callable[[ComfortLimits], InventorySource] = (
            functools.partial(SimulatorInventory, models)
            if s.bms_url is None and models is not None
            else functools.partial(BmsInventory, client))
        self.service.inventory = RuledInventory(source, self.limits, self.sites)
        self.service.wake()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self.bms_server is not None:
            await self.bms_server.stop()

    async def events_agent(self, batches: AsyncIterator[list[Any]]) -> None:
        """The DR agent's stream: each new event wakes the scheduler, which reads it (and
        everything else that is due) from the store."""
        async for _ in batches:
            self.service.wake()

    async def open(self) -> None:
        await self.attach_bms(self.models)


class LocalDr:
    """The embedded runtime's DR: in-memory ``dr-events`` and ``bms-commands`` channels."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 clock: Callable[[], datetime]) -> None:
        cap = settings.channel_capacity
        self.events: Channel[DrEvent] = Channel(DR_EVENTS, capacity=cap)
        self.commands: Channel[BmsCommandRecord] = Channel(BMS_COMMANDS, capacity=cap)
        self.wiring = DrWiring(settings, store, metrics, clock, publish_event=self.events.send,
                               publish_command=self.commands.send)
        self._batch = (settings.batch_max, settings.batch_within_s)

    async def start(self) -> list[tuple[Coroutine[Any, Any, None], str]]:
        """Opens the BMS; the tasks the runtime runs (and cancels at stop)."""
        await self.wiring.open()
        n, within = self._batch
        return [
            (self.wiring.events_agent(self.events.stream().take(n, within=within)), "dr-events"),
            (bms_command_agent(self.commands.stream().take(n, within=within),
                               executor=self.wiring.executor), "bms-commands"),
            (self.wiring.service.run_forever(), "dr-scheduler"),
            (self.wiring.watchdog.run_forever(), "dr-watchdog"),
        ]

    async def close(self) -> None:
        await self.events.close()
        await self.commands.close()
        await self.wiring.close()


class KafkaDr:
    """The kafka runtime's DR: events and commands on the facility-keyed ``dr-events`` and
    ``bms-commands`` topics; a worker schedules and commands the facilities of its
    partitions."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 clock: Callable[[], datetime], *, producer: AIOKafkaProducer,
                 app: Any) -> None:
        self.app = app
        self.partitions = settings.kafka_partitions
        # Both are in the store: the DR agent reads events from there every second, and
        # publishes again a command the command agent never recorded. A failed delivery is
        # logged, and DR goes on.
        self.event_sink: KafkaSink[DrEvent] = KafkaSink(
            producer, DR_EVENTS, key=lambda e: e.facility_id,
            encode=lambda e: e.model_dump_json().encode(), fail_stop=False)
        self.command_sink: KafkaSink[BmsCommandRecord] = KafkaSink(
            producer, BMS_COMMANDS, key=lambda c: c.facility_id,
            encode=lambda c: c.model_dump_json().encode(), fail_stop=False)
        self.wiring = DrWiring(settings, store, metrics, clock,
                               publish_event=self.event_sink.send,
                               publish_command=self.command_sink.send, owned=self.owns)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        n, within = settings.batch_max, settings.batch_within_s
        wiring = self.wiring

        async def dr_events(stream: Any) -> None:
            await wiring.events_agent(stream.take(n, within=within))

        async def bms_commands(stream: Any) -> None:
            await bms_command_agent(_decoded(stream.take(n, within=within)),
                                    executor=wiring.executor)

        app.agent(app.topic(DR_EVENTS, **raw), name="sems.dr-events")(dr_events)
        app.agent(app.topic(BMS_COMMANDS, **raw), name="sems.bms-commands")(bms_commands)

    def owns(self, facility_id: str) -> bool:
        assigned = {tp.partition for tp in self.app.consumer.assignment()
                    if tp.topic == DR_EVENTS}
        return partition_for(facility_id.encode(), self.partitions) in assigned

    async def start(self) -> list[tuple[Coroutine[Any, Any, None], str]]:
        await self.wiring.open()
        return [(self.wiring.service.run_forever(), "dr-scheduler"),
                (self.wiring.watchdog.run_forever(), "dr-watchdog")]

    async def close(self) -> None:
        for sink in (self.event_sink, self.command_sink):
            with contextlib.suppress(Exception):  # a failed delivery was logged already
                await sink.close()
        await self.wiring.close()


async def _decoded(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[
        list[BmsCommandRecord]]:
    async for batch in batches:
        commands = []
        for value in batch:
            try:
                commands.append(BmsCommandRecord.model_validate_json(value))
            except ValueError as exc:  # not ours to execute: the others go on
                log.error("bms-commands: a message that is not a command is skipped (%s)",
                          str(exc).splitlines()[0])
        yield commands
