"""``LocalBms``: the BMS port straight onto an in-process simulated BMS, without SOAP.

The fake for unit tests of demand response: the same validation, idempotency on
``command_id``, injected faults and result mapping as ``BmsClient`` against the simulator
(``tests/integration/test_bms_soap.py`` runs one suite against both), with no server to start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from connectors.bms.observe import report_command
from simulators.bms.service import BmsFault, BmsService, CommandOutcome
from tables.ports.bms import (
    BmsCommand,
    BmsRequestFailed,
    CommandObserver,
    CommandResult,
    LightingGroupInfo,
    PointValue,
    PointValues,
    ZoneInfo,
)

T = TypeVar("T")


class LocalBms:
    def __init__(self, service: BmsService, *, observers: Sequence[CommandObserver] = ()
                 ) -> None:
        self.service = service
        self.observers = tuple(observers)

    @staticmethod
    def _query(operation: str, facility_id: str, call: Callable[[str], T]) -> T:
        try:
            return call(facility_id)
        except BmsFault as fault:
            raise BmsRequestFailed(f"BMS {operation}({facility_id}) failed (fault): "
                                   f"{fault.message}", failure="fault",
                                   fault_code=fault.code) from fault

    async def list_zones(self, facility_id: str) -> list[ZoneInfo]:
        zones = self._query("ListZones", facility_id, self.service.list_zones)
        return [ZoneInfo(z.zone_id, z.setpoint_offset_c, z.max_offset_c, z.rated_kw)
                for z in zones]

    async def list_lighting_groups(self, facility_id: str) -> list[LightingGroupInfo]:
        groups = self._query("ListLightingGroups", facility_id,
                             self.service.list_lighting_groups)
        return [LightingGroupInfo(g.group_id, g.level_pct, g.rated_kw) for g in groups]

    async def get_point_values(self, facility_id: str) -> PointValues:
        at, points = self._query("GetPointValues", facility_id, self.service.point_values)
        return PointValues(at, tuple(PointValue(p.point_id, p.value, p.unit) for p in points))

    async def set_zone_setpoint_offset(
        self, facility_id: str, zone_id: str, offset_c: float, *, command_id: str
    ) -> CommandResult:
        command = BmsCommand(command_id, facility_id, "zone_setpoint_offset", zone_id,
                             offset_c, datetime.now(UTC))
        return self._command(command, lambda: self.service.set_zone_setpoint_offset(
            facility_id, zone_id, offset_c, command_id=command_id))

    async def set_lighting_level(
        self, facility_id: str, group_id: str, level_pct: float, *, command_id: str
    ) -> CommandResult:
        command = BmsCommand(command_id, facility_id, "lighting_level", group_id, level_pct,
                             datetime.now(UTC))
        return self._command(command, lambda: self.service.set_lighting_level(
            facility_id, group_id, level_pct, command_id=command_id))

    def _command(self, command: BmsCommand, call: Callable[[], CommandOutcome]
                 ) -> CommandResult:
        started = time.perf_counter()
        try:
            outcome = call()
        except BmsFault as fault:
            result = CommandResult(command.command_id, False, None, fault.message, "fault",
                                   fault.code)
        else:
            result = CommandResult(
                command.command_id, outcome.accepted, outcome.applied_at,
                None if outcome.accepted else outcome.reason,
                None if outcome.accepted else "rejected", replayed=outcome.replayed)
        report_command(command, result, time.perf_counter() - started, self.observers)
        return result


__all__ = ["LocalBms"]
