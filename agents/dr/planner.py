"""Plan a load reduction with a mixed-integer programme (scipy.optimize.milp, HiGHS).

Variables, one set per load for the whole event:
  HVAC zone z   n_z integer in 0..floor(max_offset/step) (setpoint steps), r_z >= 0 its kW shed,
                r_z <= kw_per_degc * step * n_z and r_z <= max_reduction_kw
  lighting g    m_g integer dimming steps (or d_g continuous %), shed kw_at_full * dim% / 100
  deferrable l  b_l binary, shed kw_l; fixed at 0 when max_deferral_s < event duration
Constraint: total shed >= R = min(required, most the inventory can shed), where
  required = target + max over the event of (forecast upper band - baseline, if above).
Objective: minimum comfort cost, after priorities: from the most protected priority down, each
tier's kW is first minimised and then capped at that minimum (lexicographic), so a protected load
is used only as far as the less protected ones cannot cover R. If R < required, the plan sheds
everything it can and reports the shortfall instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from agents.dr.inventory import Inventory
from agents.dr.plan import (
    RELEASE_RULE,
    ActionKind,
    Plan,
    PlannedAction,
    ReleaseStage,
    SolverStatus,
    release_schedule,
)

TOLERANCE_KW = 1e-6
TIE_BREAK = 1e-6  # per unit of action, so a free lever is not moved for nothing
_STATUS: dict[int, SolverStatus] = {0: "optimal", 1: "time_limit", 2: "infeasible"}


@dataclass(frozen=True, slots=True)
class _Lever:
    key: str
    kind: ActionKind
    priority: int
    var: int  # index of the decision variable (steps, % or binary)
    shed_var: int  # index of the variable counted as shed kW (== var unless HVAC)
    shed_per_unit_kw: float  # kW per unit of shed_var


class _Model:
    """Column-wise builder of the MILP."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def var(self, *, cost: float, ub: float, integer: bool) -> int:
        self.cost.append(cost)
        self.lb.append(0.0)
        self.ub.append(ub)
        self.integer.append(1 if integer else 0)
        return len(self.cost) - 1


def _build(
    inventory: Inventory, duration_s: float, notes: list[str]
) -> tuple[_Model, list[_Lever]]:
    model = _Model()
    levers: list[_Lever] = []
    for z in inventory.zones:
        steps = model.var(cost=z.comfort_cost_per_degc * z.setpoint_step_c + TIE_BREAK,
                          ub=float(z.max_steps) if z.kw_per_degc > 0 else 0.0, integer=True)
        shed = model.var(cost=0.0, ub=z.reduction_kw(z.max_steps), integer=False)
        model.rows.append(({shed: 1.0, steps: -z.kw_per_degc * z.setpoint_step_c}, -np.inf, 0.0))
        levers.append(_Lever(f"hvac:{z.zone_id}", "hvac_setpoint", z.priority, steps, shed, 1.0))
    for g in inventory.lighting_groups:
        step = g.dim_step_pct
        if step is None:
            var = model.var(cost=g.comfort_cost_per_pct + TIE_BREAK, ub=g.max_dim_pct,
                            integer=False)
            per_unit = g.kw_at_full / 100.0
        else:
            var = model.var(cost=g.comfort_cost_per_pct * step + TIE_BREAK,
                            ub=float(int(g.max_dim_pct / step + 1e-9)), integer=True)
            per_unit = g.kw_at_full * step / 100.0
        levers.append(_Lever(f"lighting:{g.group_id}", "lighting_dim", g.priority, var, var,
                             per_unit))
    for d in inventory.deferrable_loads:
        allowed = d.max_deferral_s >= duration_s
        if not allowed:
            notes.append(f"{d.load_id} not deferred: may wait {d.max_deferral_s:g} s, the event "
                         f"lasts {duration_s:g} s")
        var = model.var(cost=d.deferral_cost + TIE_BREAK, ub=1.0 if allowed else 0.0,
                        integer=True)
        levers.append(_Lever(f"deferrable:{d.load_id}", "defer_load", d.priority, var, var, d.kw))
    return model, levers


def _shed_row(levers: Sequence[_Lever], n: int, priority: int | None = None) -> np.ndarray:
    row = np.zeros(n)
    for lever in levers:
        if priority is None or lever.priority == priority:
            row[lever.shed_var] = lever.shed_per_unit_kw
    return row


def _solve(
    model: _Model, objective: np.ndarray, extra: Sequence[tuple[np.ndarray, float, float]],
    time_limit_s: float,
) -> tuple[SolverStatus, np.ndarray | None]:
    n = len(model.cost)
    a = np.zeros((len(model.rows) + len(extra), n))
    lo = np.zeros(a.shape[0])
    hi = np.zeros(a.shape[0])
    for i, (coefs, row_lo, row_hi) in enumerate(model.rows):
        for j, v in coefs.items():
            a[i, j] = v
        lo[i], hi[i] = row_lo, row_hi
    for k, (row, row_lo, row_hi) in enumerate(extra, start=len(model.rows)):
        a[k], lo[k], hi[k] = row, row_lo, row_hi
    res = milp(
        objective,
        constraints=LinearConstraint(a, lo, hi) if a.shape[0] else None,
        integrality=np.array(model.integer),
        bounds=Bounds(np.array(model.lb), np.array(model.ub)),
        options={"time_limit": time_limit_s},
    )
    status = _STATUS.get(int(res.status), "error")
    return status, (None if res.x is None else np.asarray(res.x))


@dataclass(frozen=True, slots=True)
class _Draft:
    key: str
    lever: _Lever
    target_id: str
    kw: float
    comfort_cost: float
    reason: str
    setting: dict[str, float | bool]


def _draft(inventory: Inventory, lever: _Lever, value: float, duration_s: float) -> _Draft | None:
    """The physical action a solver value stands for, or None if the lever is not moved."""
    for z in inventory.zones:
        if lever.key == f"hvac:{z.zone_id}":
            steps = round(value)
            offset = z.offset_sign * steps * z.setpoint_step_c
            kw = z.reduction_kw(steps)
            capped = kw < z.kw_per_degc * abs(offset) - TOLERANCE_KW
            cap_note = ", capped at the zone shed" if capped else ""
            reason = (f"{'raise cooling' if offset > 0 else 'lower heating'} setpoint by "
                      f"{abs(offset):g} degC ({steps} x {z.setpoint_step_c:g} degC at "
                      f"{z.kw_per_degc:.3g} kW/degC{cap_note})")
            return None if steps == 0 else _Draft(
                lever.key, lever, z.zone_id, kw, z.comfort_cost_per_degc * abs(offset), reason,
                {"setpoint_offset_c": z.current_offset_c + offset,
                 "restore_setpoint_offset_c": z.current_offset_c})
    for g in inventory.lighting_groups:
        if lever.key == f"lighting:{g.group_id}":
            # continuous dimming: the solver's 1e-6 kW slack shows as 66.99999 %; report 67 %
            dim = round(value, 3) if g.dim_step_pct is None else round(value) * g.dim_step_pct
            level = g.level_pct - dim
            reason = (f"dim from {g.level_pct:g} to {level:g} % ({dim:g} points of "
                      f"{g.kw_at_full:.3g} kW dimmable at 100 %)")
            return None if dim <= 1e-9 else _Draft(
                lever.key, lever, g.group_id, g.kw_at_full * dim / 100.0,
                g.comfort_cost_per_pct * dim, reason,
                {"dim_level_pct": level, "restore_level_pct": g.level_pct})
    for d in inventory.deferrable_loads:
        if lever.key == f"deferrable:{d.load_id}":
            reason = (f"defer {d.kw:g} kW for the {duration_s:g} s event (may wait "
                      f"{d.max_deferral_s:g} s)")
            return None if round(value) != 1 else _Draft(
                lever.key, lever, d.load_id, d.kw, d.deferral_cost, reason, {"deferred": True})
    raise LookupError(lever.key)


def _actions(
    drafts: Sequence[_Draft], *, start: datetime, end: datetime, stages: int, gap_s: float,
) -> tuple[list[PlannedAction], tuple[ReleaseStage, ...]]:
    stage_of, release = release_schedule(
        [(d.key, d.kw) for d in drafts], event_end=end, stages=stages, stage_gap_s=gap_s
    )
    at = {s.stage: s.release_at for s in release}
    actions = [
        PlannedAction.model_validate(
            {
                "kind": d.lever.kind, "target_id": d.target_id, **d.setting,
                "expected_reduction_kw": d.kw, "comfort_cost": d.comfort_cost,
                "priority": d.lever.priority, "start": start,
                "release_at": at[stage_of[d.key]], "release_stage": stage_of[d.key],
                "reason": d.reason,
            }
        )
        for d in drafts
    ]
    return actions, release


def plan_reduction(
    inventory: Inventory,
    *,
    target_reduction_kw: float,
    forecast_upper_kw: Sequence[float],
    event_start: datetime,
    event_end: datetime,
    baseline_kw: Sequence[float] | None = None,
    event_id: str | None = None,
    release_stages: int = 3,
    release_gap_s: float = 300.0,
    time_limit_s: float = 10.0,
) -> Plan:
    """The minimum-comfort-cost plan that sheds the target even at the forecast's upper band.

    ``forecast_upper_kw`` is the 80 % or 95 % upper band per event interval; with
    ``baseline_kw`` (same intervals) the shed must also cover the band's excess over the
    baseline, since settlement measures against the baseline. Never raises for an infeasible
    target: the plan sheds what it can and reports ``shortfall_kw``.
    """
    if target_reduction_kw < 0:
        raise ValueError("target_reduction_kw must not be negative")
    if not event_end > event_start:
        raise ValueError("event_end must be after event_start")
    upper = np.asarray(forecast_upper_kw, dtype=float)
    if upper.size == 0:
        raise ValueError("forecast_upper_kw must cover the event")
    margin = 0.0
    if baseline_kw is not None:
        base = np.asarray(baseline_kw, dtype=float)
        if base.shape != upper.shape:
            raise ValueError("baseline_kw and forecast_upper_kw must cover the same intervals")
        margin = max(0.0, float(np.max(upper - base)))
    required = target_reduction_kw + margin
    duration_s = (event_end - event_start).total_seconds()
    notes: list[str] = []
    model, levers = _build(inventory, duration_s, notes)
    n = len(model.cost)
    shed_all = _shed_row(levers, n)
    most_kw = float(np.sum([lv.shed_per_unit_kw * model.ub[lv.shed_var] for lv in levers]))
    goal = min(required, most_kw)
    if goal < required - TOLERANCE_KW:
        notes.append(f"inventory sheds at most {most_kw:.3f} kW of the {required:.3f} kW needed")
    if required > float(upper.min()):
        notes.append("the reduction needed exceeds the forecast upper band in some interval")
    status: SolverStatus = "nothing_to_do"
    x: np.ndarray | None = np.zeros(n)
    if goal > TOLERANCE_KW:
        extra: list[tuple[np.ndarray, float, float]] = [(shed_all, goal - TOLERANCE_KW, np.inf)]
        for priority in sorted({lv.priority for lv in levers}, reverse=True)[:-1]:
            tier = _shed_row(levers, n, priority)
            status, x = _solve(model, tier, extra, time_limit_s)
            if x is None:
                break
            extra.append((tier, -np.inf, float(tier @ x) + TOLERANCE_KW))
            notes.append(f"priority {priority} loads shed {float(tier @ x):.3f} kW, no more")
        if x is not None:
            status, x = _solve(model, np.array(model.cost), extra, time_limit_s)
    if x is None:
        notes.append(f"solver status {status}: no action planned")
        x = np.zeros(n)
    drafts = [_draft(inventory, lv, float(x[lv.var]), duration_s) for lv in levers]
    actions, release = _actions([d for d in drafts if d is not None], start=event_start,
                                end=event_end, stages=release_stages, gap_s=release_gap_s)
    expected = float(sum(a.expected_reduction_kw for a in actions))
    shortfall = max(0.0, required - expected)
    return Plan(
        event_id=event_id,
        facility_id=inventory.facility_id,
        event_start=event_start,
        event_end=event_end,
        target_reduction_kw=target_reduction_kw,
        robust_margin_kw=margin,
        required_reduction_kw=required,
        expected_reduction_kw=expected,
        shortfall_kw=shortfall if shortfall > TOLERANCE_KW else 0.0,
        meets_target=shortfall <= TOLERANCE_KW,
        objective_cost=float(sum(a.comfort_cost for a in actions)),
        solver_status=status,
        actions=tuple(actions),
        release_stages=release,
        release_rule=RELEASE_RULE.format(gap_s=release_gap_s),
        notes=tuple(notes),
    )
