"""The BMS port: what demand response asks of a building management system, and its answers.

Adapters: ``connectors.bms.soap.BmsClient`` (SOAP through zeep). This module imports no client
library, so the core can depend on the port alone.

A command never raises for a BMS or network failure: it returns a ``CommandResult`` whose
``failure`` says what went wrong, so the caller records it on its event and moves on (no retry,
by design). ``result.raise_for_failure()`` turns it into ``BmsCommandFailed`` where an exception
reads better. Queries (``list_*``) raise ``BmsRequestFailed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

CommandKind = Literal["zone_setpoint_offset", "lighting_level"]
FailureKind = Literal["fault", "rejected", "timeout", "transport", "protocol"]
"""Why a command did not succeed.

- ``fault``: the BMS answered with a SOAP Fault (``fault_code`` says which); nothing changed.
- ``rejected``: the BMS answered ``accepted=false`` (e.g. a local override); nothing changed.
- ``timeout``: no answer within the call's timeout. The command may have been applied: repeat
  it with the same ``command_id`` to learn its outcome without applying it twice.
- ``transport``: no connection, or an HTTP error without a SOAP Fault; the BMS did not get it.
- ``protocol``: an answer that is not what the WSDL promises.
"""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command's outcome as the caller records it on its event and audit trail."""

    command_id: str
    accepted: bool
    applied_at: datetime | None  # the BMS's clock, UTC
    error: str | None = None
    failure: FailureKind | None = None
    fault_code: str | None = None  # bms:BmsFault/code, e.g. out_of_range, unknown_zone
    replayed: bool = False  # the BMS had this command_id already and repeated its first outcome

    @property
    def ok(self) -> bool:
        return self.accepted and self.failure is None

    def raise_for_failure(self) -> CommandResult:
        """This result if it succeeded, else ``BmsCommandFailed``."""
        if not self.ok:
            raise BmsCommandFailed(self)
        return self


@dataclass(frozen=True, slots=True)
class BmsCommand:
    """What was sent, for observers (metrics, audit): the "what" and "when" of a command."""

    command_id: str
    facility_id: str
    kind: CommandKind
    target_id: str  # zone id or lighting group id
    value: float  # offset in degC or level in %
    sent_at: datetime


CommandObserver = Callable[[BmsCommand, CommandResult, float], None]
"""Called once per command with what was sent, its result and the call's duration in
seconds; must not block. An observer that raises is logged and does not affect the result."""


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    zone_id: str
    setpoint_offset_c: float
    max_offset_c: float  # the BMS accepts offsets within +-max_offset_c
    rated_kw: float


@dataclass(frozen=True, slots=True)
class LightingGroupInfo:
    group_id: str
    level_pct: float
    rated_kw: float


@dataclass(frozen=True, slots=True)
class PointValue:
    point_id: str  # e.g. hvac:zone-1/power_kw, lighting:floor-2/level_pct, site/power_kw
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class PointValues:
    at: datetime
    points: tuple[PointValue, ...]


class BmsError(Exception):
    """Base of the BMS port's errors."""


class BmsCommandFailed(BmsError):
    """A command that failed, raised by ``CommandResult.raise_for_failure``."""

    def __init__(self, result: CommandResult) -> None:
        kind = result.failure or "rejected"
        code = f" [{result.fault_code}]" if result.fault_code else ""
        super().__init__(f"BMS command {result.command_id} failed ({kind}{code}): {result.error}")
        self.result = result


class BmsRequestFailed(BmsError):
    """A query (or opening the client) that failed."""

    def __init__(self, message: str, *, failure: FailureKind, fault_code: str | None = None
                 ) -> None:
        super().__init__(message)
        self.failure: FailureKind = failure
        self.fault_code = fault_code


class BmsController(Protocol):
    """The port demand response commands buildings through.

    Commands are idempotent on ``command_id`` at the BMS: send each command once with a fresh
    id; a repeat with the same id (after a crash, or to learn the outcome of a timeout)
    returns the first outcome and changes nothing.
    """

    async def list_zones(self, facility_id: str) -> list[ZoneInfo]: ...

    async def list_lighting_groups(self, facility_id: str) -> list[LightingGroupInfo]: ...

    async def set_zone_setpoint_offset(
        self, facility_id: str, zone_id: str, offset_c: float, *, command_id: str
    ) -> CommandResult: ...

    async def set_lighting_level(
        self, facility_id: str, group_id: str, level_pct: float, *, command_id: str
    ) -> CommandResult: ...


__all__ = [
    "BmsCommand",
    "BmsCommandFailed",
    "BmsController",
    "BmsError",
    "BmsRequestFailed",
    "CommandKind",
    "CommandObserver",
    "CommandResult",
    "FailureKind",
    "LightingGroupInfo",
    "PointValue",
    "PointValues",
    "ZoneInfo",
]
