"""When forecast cycles run: 60 s after each quarter hour (the quarter's rollup is final)."""

from datetime import UTC, datetime

import pytest

from agents.forecast import next_run

pytestmark = pytest.mark.unit


def t(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 7, 1, hh, mm, ss, tzinfo=UTC)


@pytest.mark.parametrize(("now", "expected"), [
    (t(12, 7, 30), t(12, 16)),  # mid-quarter: the next quarter hour + 60 s
    (t(12, 0, 30), t(12, 1)),  # the 12:00 quarter's run is still ahead
    (t(12, 1), t(12, 16)),  # exactly at a run: the next one
    (t(23, 59), t(0, 1).replace(day=2)),  # across midnight
])
def test_next_run(now: datetime, expected: datetime) -> None:
    assert next_run(now, interval_s=900, delay_s=60) == expected
