"""Lock-out after repeated failed sign-ins: a pure function from an account's failure count
to the time it may try again (issue 16).

The first ``free_failures`` failures cost nothing (people mistype); from then on each further
failure locks the account for twice as long as the one before, from ``base_s`` up to
``max_s``: with the defaults, 5 failures lock it for 30 s, 6 for 60 s, 7 for 2 min ... 12 and
more for the hour. A success or an admin (``clear_sign_in_failures``) resets the count; an
unknown account is counted like a known one, so a lock-out tells nothing about existence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.identity import SignInFailures


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    free_failures: int = 5
    base_s: float = 30.0
    max_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.free_failures < 1 or not 0 < self.base_s <= self.max_s:
            raise ValueError("a lock-out policy needs free_failures >= 1 and "
                             "0 < base_s <= max_s")


def locked_until(failures: SignInFailures | None, policy: LockoutPolicy) -> datetime | None:
    """When the account may try again (after its last failure), or ``None``: not locked by
    this count. The caller compares it with the time of the attempt."""
    if failures is None or failures.failures < policy.free_failures:
        return None
    doublings = min(failures.failures - policy.free_failures, 64)  # 2**64 s: past any max_s
    delay_s = min(policy.max_s, policy.base_s * 2.0 ** doublings)
    return failures.last_failed_at + timedelta(seconds=delay_s)
