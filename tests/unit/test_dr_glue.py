"""The pure parts of the DR loop: the meter-before baseline, commands from plan actions, the
stored baseline read back, and the intake contracts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agents.dr.baseline_result import (
    BaselineResult,
    DayOfAdjustment,
    MeterBeforeParams,
    baseline_of,
)
from agents.dr.commands import command_for
from agents.dr.meter_before import meter_before
from agents.dr.plan import PlannedAction
from agents.dr.series import InsufficientHistoryError
from schemas.dr import DrEvent, DrNotification, command_uuid, webhook_event_uuid

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def minutes(values: list[float], *, end: datetime = T0) -> list[tuple[datetime, float]]:
    """1-minute values ending at ``end``."""
    return [(end - (len(values) - i) * MIN, v) for i, v in enumerate(values)]


@pytest.mark.parametrize(("load", "window_end", "expected_kw"), [
    # 15 minutes at 100 kW before a 10:00 event: 100 kW
    (minutes([100.0] * 15), None, 100.0),
    # 20 minutes, the older 5 at 0 kW fall outside the 15-minute window: still 100 kW
    (minutes([0.0] * 5 + [100.0] * 15), None, 100.0),
    # 12 of 15 minutes metered (80 %): the mean of those, (6 x 90 + 6 x 110) / 12 = 100 kW
    (minutes([90.0] * 6 + [110.0] * 6), None, 100.0),
    # planned 5 minutes before the start: the window ends then, (10 x 100 + 5 x 130)/15 = 110
    (minutes([100.0] * 10 + [130.0] * 5, end=T0 - 5 * MIN), T0 - 5 * MIN, 110.0),
])
def test_meter_before(load: list[tuple[datetime, float]], window_end: datetime | None,
                      expected_kw: float) -> None:
    result = meter_before(load, event_start=T0, event_end=T0 + 3 * MIN, interval_s=60,
                          window_end=window_end)
    assert result.method == "meter_before"
    assert result.interval_starts == (T0, T0 + MIN, T0 + 2 * MIN)
    assert result.baseline_kw == pytest.approx((expected_kw,) * 3)


def test_meter_before_needs_most_of_its_window() -> None:
    with pytest.raises(InsufficientHistoryError, match="11 of 15"):
        meter_before(minutes([100.0] * 11), event_start=T0, event_end=T0 + MIN, interval_s=60)
    # a shorter window and coverage are parameters
    short = meter_before(minutes([100.0] * 4), event_start=T0, event_end=T0 + MIN,
                         interval_s=60, params=MeterBeforeParams(window_minutes=5))
    assert short.baseline_kw == (100.0,)


def action(kind: str, **setting: Any) -> PlannedAction:
    return PlannedAction.model_validate({
        "kind": kind, "target_id": "t-1", **setting, "expected_reduction_kw": 5.0,
        "comfort_cost": 1.0, "priority": 1, "start": T0, "release_at": T0 + 10 * MIN,
        "release_stage": 1, "reason": "because"})


EVENT = DrEvent(id="0d4d8c7e-0000-4000-8000-000000000001", event_id="E-9", utility_id="u",
                facility_id="fac-1", source="webhook", event_start=T0, event_end=T0 + 10 * MIN,
                trace_id="tr", created_at=T0, updated_at=T0)


@pytest.mark.parametrize(("planned", "kind", "apply_value", "release_value"), [
    (action("hvac_setpoint", setpoint_offset_c=-2.5), "zone_setpoint_offset", -2.5, 0.0),
    (action("lighting_dim", dim_level_pct=40.0), "lighting_level", 40.0, 100.0),
    # lights off is a level of 0 %, not a missing one
    (action("lighting_dim", dim_level_pct=0.0), "lighting_level", 0.0, 100.0),
])
def test_commands_of_plan_actions(planned: PlannedAction, kind: str, apply_value: float,
                                  release_value: float) -> None:
    apply = command_for(EVENT, planned, "apply", T0)
    release = command_for(EVENT, planned, "release", T0 + 10 * MIN)
    assert apply is not None and release is not None
    assert (apply.kind, apply.value, apply.release_stage) == (kind, apply_value, None)
    assert (release.kind, release.value, release.release_stage) == (kind, release_value, 1)
    assert apply.why == f"DR event {EVENT.id} (u/E-9): because"
    assert apply.trace_id == "tr" and apply.result == "pending"
    # deterministic: a repeated step makes the same ids; apply and release differ
    assert apply.command_id == command_uuid(EVENT.id, "apply", apply.kind, "t-1")
    assert apply.command_id != release.command_id
    assert command_for(EVENT, planned, "apply", T0 + MIN) == apply.model_copy(
        update={"requested_at": T0 + MIN})


def test_deferring_a_load_is_no_bms_command() -> None:
    assert command_for(EVENT, action("defer_load", deferred=True), "apply", T0) is None


def test_a_stored_baseline_reads_back() -> None:
    result = BaselineResult(
        method="caiso_10_in_10", interval_s=900, interval_starts=(T0, T0 + 15 * MIN),
        baseline_kw=(410.0, 420.0), unadjusted_kw=(400.0, 410.0),
        days_used=(date(2026, 7, 14), date(2026, 7, 13)),
        adjustment=DayOfAdjustment(kind="ratio", window_start=T0, window_end=T0, observed_kw=1,
                                   baseline_kw=1, raw=1.02, applied=1.02, capped=False))
    assert baseline_of(result.to_dict()) == BaselineResult(
        method=result.method, interval_s=900, interval_starts=result.interval_starts,
        baseline_kw=result.baseline_kw, unadjusted_kw=result.unadjusted_kw,
        days_used=result.days_used)


NOTE: dict[str, Any] = {"event_id": "GRID-1", "facility_ids": ["fac-1", "fac-2"],
                        "event_start": "2026-07-15T18:00:00Z",
                        "event_end": "2026-07-15T19:00:00+00:00",
                        "target_reduction_percentage": 20}


@pytest.mark.parametrize(("changes", "error"), [
    ({"event_start": "2026-07-15T18:00:30Z"}, "whole minutes"),
    ({"event_end": "2026-07-15T18:00:00Z"}, "after event_start"),
    ({"event_end": "2026-07-16T18:01:00Z"}, "at most 24 h"),
    ({"facility_ids": ["fac-1", "fac-1"]}, "must not repeat"),
    ({"facility_ids": []}, "at least 1"),
    ({"target_reduction_percentage": 120}, "less than or equal to 100"),
    ({"event_start": "2026-07-15T18:00:00"}, "timezone"),
    ({"priority": "high"}, "Extra inputs"),
])
def test_notifications_refused(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        DrNotification.model_validate({**NOTE, **changes})


def test_webhook_event_ids_are_per_utility_event_and_facility() -> None:
    assert DrNotification.model_validate(NOTE).facility_ids == ["fac-1", "fac-2"]
    ids = {webhook_event_uuid(u, e, f) for u in ("u1", "u2") for e in ("E1", "E2")
           for f in ("f1", "f2")}
    assert len(ids) == 8 and webhook_event_uuid("u1", "E1", "f1") in ids
