"""What the audit trail says is still shed: only a successful release executed after an apply
undoes it, and an apply that may have been applied counts as shed (the fail-safe reading)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.dr_audit import shed_loads
from schemas.dr import BmsCommandRecord, CommandPhase, command_uuid

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)


def command(phase: CommandPhase, at_s: float, *, target: str = "zone-1",
            bms_at_s: float | None = None, **changes: object) -> BmsCommandRecord:
    at = T0 + timedelta(seconds=at_s)
    values: dict[str, object] = {
        "command_id": command_uuid("e-1", phase, "zone_setpoint_offset", target),
        "dr_event_id": "e-1", "facility_id": "fac-001", "kind": "zone_setpoint_offset",
        "target_id": target, "value": 2.0 if phase == "apply" else 0.0, "phase": phase,
        "why": "test", "requested_at": at, "sent_at": at, "result": "ok",
        "applied_at": None if bms_at_s is None else T0 + timedelta(seconds=bms_at_s)}
    values.update(changes)
    return BmsCommandRecord.model_validate(values)


def test_a_release_after_the_apply_undoes_it() -> None:
    assert shed_loads([command("apply", 0, bms_at_s=1), command("release", 60, bms_at_s=61)]) == []


def test_a_release_executed_before_the_apply_undoes_nothing() -> None:
    """An apply retried, redelivered or republished after its load's release sheds it again:
    the load is shed, whatever order the records were written in."""
    apply = command("apply", 0, bms_at_s=120)  # requested first, executed last
    assert shed_loads([apply, command("release", 60, bms_at_s=61)]) == [apply]
    late = command("apply", 90)  # without the BMS's clock: SEMS's
    assert shed_loads([command("release", 60), late]) == [late]


def test_each_load_is_undone_by_its_own_release_only() -> None:
    other = command("apply", 0, target="zone-2", bms_at_s=1)
    assert shed_loads([command("apply", 0, bms_at_s=1), other,
                       command("release", 60, bms_at_s=61)]) == [other]


@pytest.mark.parametrize(("result", "failure", "shed"), [
    ("ok", None, True), ("pending", None, True), ("failed", "timeout", True),
    ("failed", "protocol", True), ("failed", "fault", False), ("failed", "rejected", False),
    ("failed", "transport", False), ("failed", "superseded", False)])
def test_an_apply_that_may_have_been_applied_counts_as_shed(result: str, failure: str | None,
                                                             shed: bool) -> None:
    apply = command("apply", 0, result=result, failure=failure)
    failed_release = command("release", 60, result="failed", failure="fault")
    assert shed_loads([apply, failed_release]) == ([apply] if shed else [])


def test_a_failed_release_undoes_nothing_and_released_at_does() -> None:
    apply = command("apply", 0, bms_at_s=1)
    assert shed_loads([apply, command("release", 60, result="failed", failure="fault")]) == [
        apply]
    assert shed_loads([apply.model_copy(update={"released_at": T0 + timedelta(minutes=1)})]) == []
