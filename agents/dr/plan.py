"""A reduction plan that explains itself, and the staged release after the event.

Release rule: actions are spread over ``stages`` release times ``stage_gap_s`` apart, the first
at the event end. Actions are dealt largest first to the stage with the least kW so far
(longest-processing-time balancing), then the stages go out in increasing kW, so the largest
block of load returns last, once the earlier rebound has settled. Each stage releases at most
``total / stages + largest action`` kW, instead of the whole shed at once.

Times are UTC: a naive one is refused, an offset is converted (``schemas.dr.UtcDatetime``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.dr import UtcDatetime

ActionKind = Literal["hvac_setpoint", "lighting_dim", "defer_load"]
SolverStatus = Literal["optimal", "time_limit", "infeasible", "error", "nothing_to_do"]

RELEASE_RULE = (
    "largest action first to the stage with the least kW released so far; stages released in "
    "increasing kW, {gap_s:g} s apart from the event end: each stage releases at most "
    "total/stages + the largest single action"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannedAction(_Frozen):
    kind: ActionKind
    target_id: str
    setpoint_offset_c: float | None = None
    dim_level_pct: float | None = None
    deferred: bool | None = None
    restore_setpoint_offset_c: float | None = None
    """What the release sets: the zone's offset, the group's level, before the event (None in
    plans made before SEMS kept them: offset 0, level 100 %)."""
    restore_level_pct: float | None = None
    expected_reduction_kw: float
    comfort_cost: float
    priority: int
    start: UtcDatetime
    release_at: UtcDatetime
    release_stage: int
    reason: str


class ReleaseStage(_Frozen):
    stage: int
    release_at: UtcDatetime
    target_ids: tuple[str, ...]  # "hvac:<zone_id>", "lighting:<group_id>", "deferrable:<load_id>"
    released_kw: float


class Plan(_Frozen):
    """What to do for one event, why, and what it is expected to achieve."""

    event_id: str | None = None
    facility_id: str
    event_start: UtcDatetime
    event_end: UtcDatetime
    target_reduction_kw: float
    robust_margin_kw: float = Field(
        description="upper band above the baseline in the worst event interval, added to the "
        "target so the target holds if load comes in at the upper band"
    )
    required_reduction_kw: float
    expected_reduction_kw: float
    shortfall_kw: float
    meets_target: bool
    objective_cost: float
    solver_status: SolverStatus
    actions: tuple[PlannedAction, ...]
    release_stages: tuple[ReleaseStage, ...]
    release_rule: str
    notes: tuple[str, ...] = ()

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        return cls.model_validate_json(text)


def release_schedule(
    shed_kw: Sequence[tuple[str, float]],
    *,
    event_end: datetime,
    stages: int = 3,
    stage_gap_s: float = 300.0,
) -> tuple[dict[str, int], tuple[ReleaseStage, ...]]:
    """Stage per target id, and the stages in release order (see the module docstring)."""
    if stages < 1:
        raise ValueError("stages must be at least 1")
    if stage_gap_s < 0:
        raise ValueError("stage_gap_s must not be negative")
    n = min(stages, len(shed_kw))
    bins: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for target_id, kw in sorted(shed_kw, key=lambda a: (-a[1], a[0])):
        k = min(range(n), key=lambda i: (totals[i], i))
        bins[k].append((target_id, kw))
        totals[k] += kw
    order = sorted(range(n), key=lambda i: (totals[i], i))
    stage_of: dict[str, int] = {}
    out: list[ReleaseStage] = []
    for stage, k in enumerate(order):
        ids = tuple(t for t, _ in bins[k])
        for t in ids:
            stage_of[t] = stage
        out.append(
            ReleaseStage(
                stage=stage,
                release_at=event_end + timedelta(seconds=stage * stage_gap_s),
                target_ids=ids,
                released_kw=totals[k],
            )
        )
    return stage_of, tuple(out)
