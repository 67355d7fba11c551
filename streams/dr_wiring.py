"""Demand response inside a process: the BMS, the services that command it, and what the API
needs; ``streams/runtime.py`` builds it, ``streams/compose.py`` registers its agents
(``dr-events``, ``bms-commands``) and services (``dr-scheduler``, ``dr-watchdog``).

The BMS is ``SEMS_BMS_URL`` (its WSDL) when set. Unset, and when this process simulates the
demo fleet (``sems run``), it is the simulated BMS served in-process (``BmsServer`` on
``SEMS_BMS_PORT``) over the very building objects the meter simulator reads, so a shed shows up
in the readings; the planner's inventory then comes from the building models. With a real BMS
the inventory comes from its zone and lighting lists (``agents/dr/bms_inventory.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from agents.bms_command_agent import BmsCommandExecutor
from agents.dr.bms_inventory import BmsInventory
from agents.dr.inventory import ComfortLimits, InventorySource
from agents.dr.site_rules import RuledInventory, load_site_rules
from agents.dr_baseline_source import BaselineSource
from agents.dr_scheduler import DrService
from agents.dr_watchdog import DrWatchdog
from api.dr_deps import DrApi
from connectors.bms.soap import BmsClient
from core.metrics import Metrics
from schemas.dr import BmsCommandRecord, DrEvent
from simulators.bms.server import BmsServer
from simulators.bms.service import BmsService
from simulators.building import BuildingModel
from simulators.inventory import SimulatorInventory
from streams.settings import Settings
from tables.ports.bms import BmsError
from tables.ports.store import Store

log = logging.getLogger(__name__)


class DrWiring:
    """Builds demand response for one process. What needs no BMS (the baselines, the API's
    intake) exists from construction; :meth:`open` opens the BMS and only then builds the
    services that command it, each given its BMS client and inventory in its constructor
    (``None`` when no BMS can be reached: events then fail with the reason)."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 clock: Callable[[], datetime], *,
                 publish_event: Callable[[DrEvent], Awaitable[None]],
                 publish_command: Callable[[BmsCommandRecord], Awaitable[None]],
                 owned: Callable[[str], bool] = lambda _facility_id: True,
                 models: Mapping[str, BuildingModel] | None = None) -> None:
        s = settings
        self.settings = settings
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._publish_command = publish_command
        self._owned = owned
        self.models = models
        """The demo fleet this process simulates (``sems run``): the in-process BMS."""
        self.baselines = BaselineSource(store, store, method=s.dr_baseline, events=store)
        self.api = DrApi(store=store, access=store, baselines=self.baselines,
                         submit=publish_event, max_lead_s=s.dr_max_lead_s)
        self.limits = ComfortLimits(max_setpoint_offset_c=s.dr_max_setpoint_offset_c,
                                    min_lighting_pct=s.dr_min_lighting_pct)
        # Read at start: a mistake in the file stops SEMS with where and why.
        self.sites = load_site_rules(s.dr_sites) if s.dr_sites is not None else {}
        self.bms_server: BmsServer | None = None
        self._client: BmsClient | None = None
        self._executor: BmsCommandExecutor | None = None
        self._service: DrService | None = None
        self._watchdog: DrWatchdog | None = None

    @property
    def executor(self) -> BmsCommandExecutor:
        return _opened(self._executor)

    @property
    def service(self) -> DrService:
        return _opened(self._service)

    @property
    def watchdog(self) -> DrWatchdog:
        return _opened(self._watchdog)

    async def open(self) -> None:
        """Open the BMS (``SEMS_BMS_URL``, else the simulated one over ``models``), then build
        the command executor, the DR scheduler and the watchdog on it."""
        s = self.settings
        client = await self._open_bms()
        inventory: RuledInventory | None = None
        if client is not None:
            source: Callable[[ComfortLimits], InventorySource] = (
                functools.partial(SimulatorInventory, self.models)
                if s.bms_url is None and self.models is not None
                else functools.partial(BmsInventory, client))
            inventory = RuledInventory(source, self.limits, self.sites)
        store, metrics, clock, owned = self._store, self._metrics, self._clock, self._owned
        self._executor = BmsCommandExecutor(store, metrics, clock, bms=client)
        self._service = DrService(store, self.baselines, self._publish_command, metrics, clock,
                                  inventory=inventory, release_stages=s.dr_release_stages,
                                  release_gap_s=s.dr_release_gap_s,
                                  report_timeout_s=s.dr_report_timeout_s, owned=owned)
        # Restores from the audit trail what the release path leaves shed past its deadline;
        # through the executor's BMS client, not the planner or the bms-commands stream.
        self._watchdog = DrWatchdog(store, self._executor, metrics, clock,
                                    release_stages=s.dr_release_stages,
                                    release_gap_s=s.dr_release_gap_s,
                                    grace_s=s.dr_release_grace_s, owned=owned)

    async def _open_bms(self) -> BmsClient | None:
        s = self.settings
        url = s.bms_url
        if url is None and self.models is not None:
            self.bms_server = BmsServer(BmsService(self.models), host=s.api_host,
                                        port=s.bms_port)
            await self.bms_server.start()
            url = self.bms_server.wsdl_url
        if url is None:
            log.warning("no BMS: set SEMS_BMS_URL; DR events will fail")
            return None
        client = BmsClient(url, timeout_s=s.bms_timeout_s)
        try:
            await client.open()
        except BmsError as exc:  # metering goes on; DR events fail with the reason
            log.error("the BMS at %s cannot be reached (%s): DR events will fail until SEMS "
                      "is restarted with a BMS", url, exc)
            return None
        self._client = client
        return client

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


T = TypeVar("T")


def _opened(part: T | None) -> T:
    if part is None:
        raise RuntimeError("demand response is not open yet (DrWiring.open)")
    return part
