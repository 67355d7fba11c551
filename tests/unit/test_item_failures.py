"""``ItemFailures`` logs a failing item once per reason and ``relog_s``, and forgets items that
stopped failing ``forget_s`` ago, so a long life of one-off failures (BMS commands given up,
failed DR events, deleted facilities) does not grow its memory (issue 13)."""

from __future__ import annotations

import logging

import pytest

from agents.item_failures import ItemFailures
from core.metrics import Metrics

pytestmark = pytest.mark.unit

log = logging.getLogger("tests.item_failures")
HOUR_S = 3_600.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def failures(clock: Clock, **options: float) -> ItemFailures:
    return ItemFailures("test", Metrics(), log, clock_s=clock, **options)  # type: ignore[arg-type]


def fail(f: ItemFailures, item: str, exc: Exception) -> bool:
    """As the loops call it: inside the ``except`` that caught the item's exception."""
    try:
        raise exc
    except Exception as caught:
        return f.failed(item, caught, what="skipped")


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_one_off_failures_over_a_long_life_keep_a_bounded_memory() -> None:
    """A given-up BMS command every 10 minutes for 30 days: 4,320 items that never fail
    again. With ``forget_s`` of a day, at most a day's worth (144, plus the one just added) is
    held."""
    clock = Clock()
    f = failures(clock, relog_s=600, forget_s=24 * HOUR_S)
    held = []
    per_day = 24 * 6
    for n in range(30 * per_day):
        clock.now_s = n * 600.0
        fail(f, f"command-{n}", RuntimeError("BMS refused"))
        held.append(len(f._logged))
    assert max(held) == per_day + 1  # the day before (144 failures) and this one
    assert held[-1] == per_day + 1  # and still at the end: it does not creep up
    assert f.failing() == {f"command-{n}" for n in range(29 * per_day - 1, 30 * per_day)}


def test_an_item_retried_hourly_is_still_known_days_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model choice fails every hour for a week, beside one-off failures that are forgotten:
    it stays known, is logged again each hour (past ``relog_s``) without a new traceback, and
    its success is announced."""
    clock = Clock()
    f = failures(clock, relog_s=600, forget_s=24 * HOUR_S)
    with caplog.at_level(logging.INFO, logger=log.name):
        for hour in range(7 * 24):
            clock.now_s = hour * HOUR_S
            fail(f, "plant-a", ValueError("bad weather"))
            fail(f, f"once-{hour}", ValueError("gone"))
        assert len(f._logged) == 26  # plant-a, and the one-offs of this hour and the day before
        records = [r for r in warnings(caplog) if "plant-a" in r.getMessage()]
        assert len(records) == 7 * 24  # an hour is past relog_s: each failure is logged
        assert records[0].exc_info and records[0].exc_info[0] is ValueError  # a traceback
        assert not any(r.exc_info for r in records[1:])  # the same reason: no traceback
        clock.now_s += HOUR_S
        f.succeeded("plant-a")
    assert "test plant-a works again" in caplog.text


RELOG_CASES = [  # (at s, reason, logged): one item's failures in turn, relog_s = 600
    (0.0, "timeout", True),  # the first failure
    (599.0, "timeout", False),  # the same reason within relog_s
    (599.5, "refused", True),  # a new reason
    (1_199.0, "refused", False),  # 599.5 s after it was logged: within relog_s
    (1_199.5, "refused", True),  # 600 s after: logged again
    (1_200.0, "timeout", True),  # back to the first reason: a change again
]


def test_a_failure_is_logged_when_its_reason_changes_or_relog_s_passed() -> None:
    clock = Clock()
    f = failures(clock, relog_s=600, forget_s=24 * HOUR_S)
    for at_s, reason, logged in RELOG_CASES:
        clock.now_s = at_s
        assert fail(f, "item", RuntimeError(reason)) is logged, (at_s, reason)


def test_forgetting_before_relog_s_is_refused() -> None:
    with pytest.raises(ValueError, match="forget_s"):
        failures(Clock(), relog_s=600, forget_s=60)
