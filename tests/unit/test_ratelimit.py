"""Token buckets, worked by hand."""

import pytest

from api import apikeys
from api.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


def test_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    # t=0: a full bucket of 3 -> three requests pass, the fourth waits (1 - 0) / 2 = 0.5 s.
    assert [limiter.take("a", 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    # t=0.25: 0.25 s * 2/s = 0.5 token -> still short by 0.5 -> 0.25 s to wait.
    assert limiter.take("a", 0.25) == pytest.approx(0.25)
    # t=0.5: 0.5 + 0.25 * 2 = 1.0 token -> passes, bucket empty again.
    assert limiter.take("a", 0.5) == 0.0
    # t=100: refilled, but never beyond the burst of 3.
    assert [limiter.take("a", 100.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert limiter.take("b", 0.5) == 0.0  # another caller has its own bucket


def test_the_idlest_caller_is_forgotten_beyond_max_callers() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_callers=2)
    assert limiter.take("a", 0.0) == 0.0  # a: empty bucket
    assert limiter.take("b", 0.0) == 0.0
    assert limiter.take("c", 0.0) == 0.0  # a is dropped: it would have refilled anyway
    assert limiter.take("b", 0.0) == 1.0  # b is still remembered as empty
    assert limiter.take("a", 0.0) == 0.0  # a starts over with a full bucket


def test_api_keys_round_trip_and_only_the_digest_is_kept() -> None:
    from datetime import UTC, datetime

    issued = apikeys.issue("gridco", now=datetime(2026, 1, 1, tzinfo=UTC))
    parsed = apikeys.parse(issued.key)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == issued.record.key_id and secret not in issued.record.model_dump_json()
    assert apikeys.matches(issued.record, secret)
    assert not apikeys.matches(issued.record, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert apikeys.parse(issued.key + "x") is None
    assert apikeys.parse("sems_uk_nothex0000000000_" + "a" * 43) is None
