"""Lock-out after failed sign-ins (agents/identity/lockout.py), with the quiet period after
which the store stops counting (schemas.identity.SIGN_IN_FAILURE_WINDOW)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.identity.lockout import LockoutPolicy, locked_until
from schemas.identity import SIGN_IN_FAILURE_WINDOW, SignInFailures

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def failed(n: int) -> SignInFailures:
    return SignInFailures(account="a@example.com", failures=n, first_failed_at=T0,
                          last_failed_at=T0)


@pytest.mark.parametrize(("failures", "until"), [
    (None, None),  # never failed
    (4, None),  # the first four are free
    (5, T0 + 30 * S),  # base_s after the last failure
    (6, T0 + 60 * S),  # doubled
    (9, T0 + 480 * S),  # 30 * 2**4
    (12, T0 + 3600 * S),  # 30 * 2**7 = 3840 s, capped at the hour
    (10_000, T0 + 3600 * S),  # still the cap, no huge power
])
def test_the_wait_doubles_after_the_free_failures_up_to_a_cap(
    failures: int | None, until: datetime | None,
) -> None:
    assert locked_until(None if failures is None else failed(failures),
                        LockoutPolicy()) == until


def test_the_longest_lock_ends_within_the_stores_quiet_period() -> None:
    """A count the store would reset (a failure after the quiet period) never locks longer
    than that period: the cap fits inside it."""
    assert timedelta(seconds=LockoutPolicy().max_s) <= SIGN_IN_FAILURE_WINDOW
