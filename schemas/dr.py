"""Demand-response contracts: what a utility sends, the event SEMS keeps, the BMS audit trail.

- ``DrNotification``: the body of ``POST /webhooks/utility/dr-notification`` (HMAC-signed).
- ``DrEventRequest``: the body of ``POST /api/dr-events`` (a utility's API key).
- ``DrEvent``: one facility's event, stored in ``dr_events`` and carried on the ``dr-events``
  topic; a notification for several facilities becomes one event per facility.
- ``BmsCommandRecord``: one command to a BMS, carried on the ``bms-commands`` topic and kept
  in the ``bms_commands`` audit trail (what, when, why, result, released when).

Ids are deterministic where a replay must find what it already made: a webhook event's id is
a UUID 5 of (utility, utility's event id, facility), a command's of (event id, phase, target).
Times need an offset (a naive one is refused) and are kept and answered in UTC, whatever
offset the sender used.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from schemas.common import (
    MAX_TIME,
    MIN_TIME,
    NAIVE_TIME,
    RFC3339,
    Identifier,
    in_supported_range,
)

DrStatus = Literal["scheduled", "active", "completed", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed"})
CommandPhase = Literal["apply", "release"]
CommandKind = Literal["zone_setpoint_offset", "lighting_level"]
CommandOutcome = Literal["pending", "ok", "failed"]

_NAMESPACE = uuid.UUID("6f1c2a0e-5d7b-4c36-9a51-3e0d2f8b7c11")
MAX_EVENT_S = 24 * 3600


def _to_utc(ts: datetime) -> datetime:
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # year 1 at +05:00, year 9999 at -05:00: no such UTC time
        raise ValueError("the time is outside what can be represented in UTC") from None


def _text_or_datetime(value: object) -> object:
    """A time from outside is an RFC 3339 string, read by the query parameters' grammar
    (``schemas.common.RFC3339``): not a JSON number (pydantic would read it as unix seconds),
    nor what else pydantic would take (``2026-07-15``, ``+0000``, a trailing NUL)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and NAIVE_TIME.fullmatch(value) is not None:
        raise ValueError("needs a timezone offset, e.g. 2026-07-15T18:00:00Z or +02:00")
    if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 string with an offset, e.g. "
                         "2026-07-15T18:00:00Z")
    return value


def _supported(ts: datetime) -> datetime:
    if not in_supported_range(ts):
        raise ValueError(f"must be from {MIN_TIME.isoformat()} and before "
                         f"{MAX_TIME.isoformat()}")
    return ts


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A time with an offset, normalised to UTC (as ``SensorReading.timestamp``)."""
RequestDatetime = Annotated[AwareDatetime, BeforeValidator(_text_or_datetime),
                            AfterValidator(_supported), AfterValidator(_to_utc)]
"""A time a caller gives: in the supported range (``schemas/common.py``), checked before any
arithmetic, then normalised to UTC."""


def _whole_minutes(start: datetime, end: datetime) -> None:
    if start.second or start.microsecond or end.second or end.microsecond:
        raise ValueError("event_start and event_end must be whole minutes (the baseline and "
                         "the report use 1-minute intervals at least)")
    if not end > start:
        raise ValueError("event_end must be after event_start")
    if (end - start).total_seconds() > MAX_EVENT_S:
        raise ValueError("an event lasts at most 24 h")


class DrNotification(BaseModel):
    """A utility's DR notification (webhook body). Strict where it matters: a reduction is a
    JSON number (not a boolean, not a string), a time is a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: Annotated[str, Field(min_length=1, max_length=128,
                                   pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                                   description="the utility's id of the event; a replay with "
                                               "the same id creates nothing new")]
    facility_ids: Annotated[list[Identifier], Field(min_length=1, max_length=100)]
    event_start: RequestDatetime
    event_end: RequestDatetime
    target_reduction_percentage: Annotated[float, Field(
        gt=0, le=100, strict=True, description="reduction asked, % of each facility's baseline")]

    @model_validator(mode="after")
    def _window(self) -> DrNotification:
        _whole_minutes(self.event_start, self.event_end)
        if len(set(self.facility_ids)) != len(self.facility_ids):
            raise ValueError("facility_ids must not repeat")
        return self


class DrEventRequest(BaseModel):
    """``POST /api/dr-events``: one facility, a reduction in kW (strict, as
    ``DrNotification``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    facility_id: Identifier
    event_start: RequestDatetime
    event_end: RequestDatetime
    target_reduction_kw: Annotated[float, Field(gt=0, le=1_000_000, strict=True)]

    @model_validator(mode="after")
    def _window(self) -> DrEventRequest:
        _whole_minutes(self.event_start, self.event_end)
        return self


class DrEvent(BaseModel):
    """One facility's DR event and everything SEMS decided and measured for it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(description="SEMS's id of the event (a UUID)")
    event_id: str | None = Field(default=None, description="the utility's id, if any")
    utility_id: Identifier | None = None
    facility_id: Identifier
    source: Literal["webhook", "api"]
    event_start: UtcDatetime
    event_end: UtcDatetime
    target_reduction_kw: float | None = Field(
        default=None, description="asked in kW, or percentage x baseline average once known")
    target_reduction_percentage: float | None = None
    status: DrStatus = "scheduled"
    baseline: dict[str, Any] | None = Field(
        default=None, description="BaselineResult.to_dict(): method, intervals, kW, days used, "
                                  "day-of adjustment")
    plan: dict[str, Any] | None = Field(default=None, description="the reduction Plan")
    report: dict[str, Any] | None = Field(default=None, description="PerformanceReport")
    achieved_reduction_kw: float | None = None
    failures: tuple[str, ...] = Field(default=(), description="why commands or steps failed")
    release_stages_sent: int = Field(default=0, ge=0,
                                     description="release stages whose commands were sent")
    trace_id: str | None = Field(default=None, description="trace id of the request that "
                                                           "created the event")
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def webhook_event_uuid(utility_id: str, event_id: str, facility_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"dr:{utility_id}:{event_id}:{facility_id}"))


def command_uuid(dr_event_id: str, phase: CommandPhase, kind: CommandKind,
                 target_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"bms:{dr_event_id}:{phase}:{kind}:{target_id}"))


class BmsCommandRecord(BaseModel):
    """A BMS command and its audit entry: written before it is sent, completed after."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    command_id: str
    dr_event_id: str
    facility_id: Identifier
    kind: CommandKind
    target_id: str
    value: float = Field(description="setpoint offset in degC, or lighting level in %")
    phase: CommandPhase
    release_stage: int | None = None
    why: str = Field(description="the event and the plan action that asked for it")
    trace_id: str | None = None
    requested_at: UtcDatetime = Field(description="when the DR agent asked for it")
    sent_at: UtcDatetime | None = None
    result: CommandOutcome = "pending"
    applied_at: UtcDatetime | None = Field(default=None, description="the BMS's clock")
    failure: str | None = None
    fault_code: str | None = None
    error: str | None = None
    replayed: bool = False
    released_at: UtcDatetime | None = Field(
        default=None, description="apply commands: when their release command was applied")
    restore_value: float | None = Field(
        default=None, description="apply commands: the load's setting before the event (what "
                                  "its release, or the DR watchdog, puts back)")
