"""The verified-token cache, worked by hand with a fake clock."""

import pytest

from api.principal import Principal, Role
from api.token_cache import VerifiedTokenCache, digest

pytestmark = pytest.mark.unit

ALICE = Principal(subject="alice", role=Role.VIEWER, facility_ids=frozenset({"a"}), via="token",
                  issuer="sems-local")


class Clock:
    now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.mark.parametrize(("exp_s", "leeway_s", "ttl_s", "last_hit_s"), [
    # exp 1,010 + leeway 30 = 1,040 comes before 1,000 + ttl 300 = 1,300: kept until 1,040.
    (1_010.0, 30.0, 300.0, 1_039.9),
    # exp far ahead: the ttl bounds it, 1,000 + 60 = 1,060.
    (99_999.0, 30.0, 60.0, 1_059.9),
    # no leeway: exactly until exp.
    (1_005.0, 0.0, 300.0, 1_004.9),
])
def test_an_entry_lives_until_exp_plus_leeway_or_the_ttl(exp_s: float, leeway_s: float,
                                                          ttl_s: float,
                                                          last_hit_s: float) -> None:
    clock = Clock()
    cache = VerifiedTokenCache(ttl_s=ttl_s, clock=clock)
    cache.put(digest("t"), ALICE, exp_s=exp_s, leeway_s=leeway_s, generation=3)
    clock.now_s = last_hit_s
    assert cache.get(digest("t"), 3) is ALICE
    clock.now_s = last_hit_s + 0.1  # the boundary itself: no longer valid
    assert cache.get(digest("t"), 3) is None
    assert len(cache) == 0  # dropped, not kept around


def test_a_changed_or_stale_key_set_is_a_miss() -> None:
    cache = VerifiedTokenCache(clock=Clock())
    cache.put(digest("t"), ALICE, exp_s=2_000.0, leeway_s=0.0, generation=1)
    assert cache.get(digest("t"), 1) is ALICE
    assert cache.get(digest("t"), 2) is None  # rotated since: verify again
    cache.put(digest("t"), ALICE, exp_s=2_000.0, leeway_s=0.0, generation=1)
    assert cache.get(digest("t"), None) is None  # due for a refresh: verify again


def test_another_token_is_another_entry() -> None:
    cache = VerifiedTokenCache(clock=Clock())
    cache.put(digest("t"), ALICE, exp_s=2_000.0, leeway_s=0.0, generation=0)
    assert cache.get(digest("t2"), 0) is None
    assert cache.get(digest("T"), 0) is None


def test_already_expired_is_not_kept_and_the_size_is_bounded() -> None:
    cache = VerifiedTokenCache(max_entries=2, clock=Clock())
    cache.put(digest("old"), ALICE, exp_s=900.0, leeway_s=30.0, generation=0)  # 930 < 1,000
    assert len(cache) == 0
    for name in ("a", "b", "c"):
        cache.put(digest(name), ALICE, exp_s=2_000.0, leeway_s=0.0, generation=0)
    assert len(cache) == 2
    assert cache.get(digest("a"), 0) is None  # the oldest went
    assert cache.get(digest("b"), 0) is ALICE and cache.get(digest("c"), 0) is ALICE


def test_the_rate_key_is_computed_once_and_unchanged() -> None:
    # The bucket a token spends: issuer, subject, role, and a digest of the scope.
    assert ALICE.rate_key.startswith("token:sems-local:alice:viewer:")
    assert ALICE.rate_key == Principal(subject="alice", role=Role.VIEWER,
                                       facility_ids=frozenset({"a"}), via="token",
                                       issuer="sems-local").rate_key
