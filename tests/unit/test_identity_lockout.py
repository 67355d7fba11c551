"""Lock-out after failed sign-ins (agents/identity/lockout.py), worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.identity.lockout import LockoutPolicy, locked_until
from schemas.identity import SignInFailures

pytestmark = pytest.mark.unit

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the last failure
POLICY = LockoutPolicy(free_failures=5, base_s=30, max_s=3600)


def failures(n: int) -> SignInFailures:
    return SignInFailures(account="a@b.example.com", failures=n,
                          first_failed_at=T - timedelta(minutes=5), last_failed_at=T)


@pytest.mark.parametrize(("count", "delay_s"), [
    (1, None),  # people mistype: free
    (4, None),  # the last free one
    (5, 30),  # the 5th: base_s
    (6, 60),  # each further failure doubles it
    (7, 120),
    (11, 1920),  # 30 * 2**6
    (12, 3600),  # 30 * 2**7 = 3840, capped at max_s
    (10_000, 3600),  # no overflow however many
])
def test_backoff(count: int, delay_s: int | None) -> None:
    until = locked_until(failures(count), POLICY)
    assert until == (None if delay_s is None else T + timedelta(seconds=delay_s))


def test_no_failures_no_lock() -> None:
    assert locked_until(None, POLICY) is None


@pytest.mark.parametrize("kw", [{"free_failures": 0}, {"base_s": 0}, {"base_s": 10, "max_s": 5}])
def test_a_policy_that_makes_no_sense_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(**kw)  # type: ignore[arg-type]
