"""The simulated BMS's behaviour, without I/O: queries, idempotent commands, fault injection.

``BmsService`` commands the same ``BuildingModel`` objects the meter simulator reads, so when
both run in one process a setpoint offset or a dimming level shows up in the meter readings.
Commands are idempotent on ``command_id``: the first execution fixes the outcome (a result or a
fault), and a repeat with the same parameters returns it again and changes nothing. That is
the BMS-side half of "a replay never sends a command twice".
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from simulators.building import MAX_SETPOINT_OFFSET_C, BuildingModel

log = logging.getLogger(__name__)

REMEMBERED_COMMANDS = 100_000  # oldest command ids are forgotten past this many
FaultCode = Literal[
    "unknown_facility",
    "unknown_zone",
    "unknown_group",
    "out_of_range",
    "command_id_conflict",
    "injected",
    "invalid_request",
    "internal",
]
CommandKind = Literal["zone_setpoint_offset", "lighting_level"]


class BmsFault(Exception):
    """A SOAP Fault the service answers; ``server_side`` faults blame the BMS, others the caller."""

    def __init__(self, code: FaultCode, message: str, *, command_id: str | None = None) -> None:
        super().__init__(message)
        self.code: FaultCode = code
        self.message = message
        self.command_id = command_id

    @property
    def server_side(self) -> bool:
        return self.code in ("injected", "internal")

    def copy(self) -> BmsFault:
        return BmsFault(self.code, self.message, command_id=self.command_id)


@dataclass(frozen=True, slots=True)
class ZoneState:
    zone_id: str
    setpoint_offset_c: float
    max_offset_c: float
    rated_kw: float


@dataclass(frozen=True, slots=True)
class LightingGroupState:
    group_id: str
    level_pct: float
    rated_kw: float


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a command did. ``accepted=False`` (a local override) changed nothing."""

    command_id: str
    accepted: bool
    applied_at: datetime | None
    reason: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PointValue:
    point_id: str
    value: float
    unit: str


@dataclass(slots=True)
class FaultInjection:
    """Switches for tests and demos, read on every command.

    ``fail_next_commands``: that many commands get a server-side fault (``injected``) and
    change nothing. ``faulty_ids``: zone or group ids whose commands always fault.
    ``overridden_ids``: ids under a local operator override; commands to them are answered
    ``accepted=False`` and change nothing (BACnet: a higher priority holds the point).
    """

    fail_next_commands: int = 0
    faulty_ids: set[str] = field(default_factory=set)
    overridden_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Command:
    kind: CommandKind
    facility_id: str
    target_id: str
    value: float


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BmsService:
    """The BMS behaviour, without I/O: queries, idempotent commands, fault injection."""

    def __init__(
        self,
        models: Mapping[str, BuildingModel],
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.models = models
        self.clock = clock
        self.faults = FaultInjection()
        self.hits: Counter[str] = Counter()  # requests per operation, counted by the SOAP layer
        self._commands: OrderedDict[str, tuple[_Command, CommandOutcome | BmsFault]] = (
            OrderedDict()
        )

    def _model(self, facility_id: str) -> BuildingModel:
        model = self.models.get(facility_id)
        if model is None:
            raise BmsFault("unknown_facility", f"no facility {facility_id!r}")
        return model

    def list_zones(self, facility_id: str) -> list[ZoneState]:
        return [
            ZoneState(z.zone_id, z.setpoint_offset_c, MAX_SETPOINT_OFFSET_C, z.rated_kw)
            for z in self._model(facility_id).zones
        ]

    def list_lighting_groups(self, facility_id: str) -> list[LightingGroupState]:
        return [
            LightingGroupState(g.group_id, g.level_pct, g.rated_kw)
            for g in self._model(facility_id).lighting_groups
        ]

    def point_values(self, facility_id: str) -> tuple[datetime, list[PointValue]]:
        """Each zone's offset and kW, each group's level and kW, and the site total, now."""
        model = self._model(facility_id)
        at = self.clock()
        loads = model.loads_kw(at)
        points: list[PointValue] = []
        for z in model.zones:
            points.append(PointValue(f"hvac:{z.zone_id}/setpoint_offset_c", z.setpoint_offset_c,
                                     "degC"))
            points.append(PointValue(f"hvac:{z.zone_id}/power_kw", loads[f"hvac:{z.zone_id}"],
                                     "kW"))
        for g in model.lighting_groups:
            name = f"lighting:{g.group_id}"
            points.append(PointValue(f"{name}/level_pct", g.level_pct, "%"))
            points.append(PointValue(f"{name}/power_kw", loads[name], "kW"))
        points.append(PointValue("site/power_kw", math.fsum(loads.values()), "kW"))
        return at, points

    def set_zone_setpoint_offset(
        self, facility_id: str, zone_id: str, offset_c: float, *, command_id: str
    ) -> CommandOutcome:
        cmd = _Command("zone_setpoint_offset", facility_id, zone_id, offset_c)
        return self._execute(command_id, cmd)

    def set_lighting_level(
        self, facility_id: str, group_id: str, level_pct: float, *, command_id: str
    ) -> CommandOutcome:
        cmd = _Command("lighting_level", facility_id, group_id, level_pct)
        return self._execute(command_id, cmd)

    def _execute(self, command_id: str, cmd: _Command) -> CommandOutcome:
        prior = self._commands.get(command_id)
        if prior is not None:
            first, outcome = prior
            if first != cmd:
                raise BmsFault(
                    "command_id_conflict",
                    f"command {command_id} was already used for {first.kind} "
                    f"{first.facility_id}/{first.target_id}={first.value}",
                    command_id=command_id,
                )
            if isinstance(outcome, BmsFault):
                raise outcome.copy()
            return replace(outcome, replayed=True)
        try:
            result: CommandOutcome | BmsFault = self._apply(command_id, cmd)
        except BmsFault as fault:
            result = fault
        self._commands[command_id] = (cmd, result)
        if len(self._commands) > REMEMBERED_COMMANDS:
            self._commands.popitem(last=False)
        log.info("bms command %s %s %s/%s=%s: %s", command_id, cmd.kind, cmd.facility_id,
                 cmd.target_id, cmd.value, result)
        if isinstance(result, BmsFault):
            raise result.copy()
        return result

    def _apply(self, command_id: str, cmd: _Command) -> CommandOutcome:
        model = self._model(cmd.facility_id)
        if cmd.kind == "zone_setpoint_offset":
            if cmd.target_id not in {z.zone_id for z in model.zones}:
                raise BmsFault("unknown_zone", f"{cmd.facility_id} has no HVAC zone "
                               f"{cmd.target_id!r}", command_id=command_id)
            if not abs(cmd.value) <= MAX_SETPOINT_OFFSET_C:
                raise BmsFault("out_of_range", f"setpoint offset {cmd.value} degC is outside "
                               f"+-{MAX_SETPOINT_OFFSET_C} degC", command_id=command_id)
        else:
            if cmd.target_id not in {g.group_id for g in model.lighting_groups}:
                raise BmsFault("unknown_group", f"{cmd.facility_id} has no lighting group "
                               f"{cmd.target_id!r}", command_id=command_id)
            if not 0.0 <= cmd.value <= 100.0:
                raise BmsFault("out_of_range", f"lighting level {cmd.value} % is outside "
                               "0..100 %", command_id=command_id)
        faults = self.faults
        if cmd.target_id in faults.faulty_ids:
            raise BmsFault("injected", f"controller for {cmd.target_id} is not responding",
                           command_id=command_id)
        if faults.fail_next_commands > 0:
            faults.fail_next_commands -= 1
            raise BmsFault("injected", "injected command failure", command_id=command_id)
        if cmd.target_id in faults.overridden_ids:
            return CommandOutcome(command_id, False, None, f"{cmd.target_id} is under a local "
                                  "operator override")
        if cmd.kind == "zone_setpoint_offset":
            model.set_hvac_offset(cmd.target_id, cmd.value)
        else:
            model.set_lighting_level(cmd.target_id, cmd.value)
        return CommandOutcome(command_id, True, self.clock())
