"""What Redis does beside the session contract (tests/contract/test_session_contract.py):
it forgets a session by its own clock too (each key's TTL is the shorter of its idle time and
what is left of its lifetime, renewed at each lookup; the indexes live as long as their
longest session), and a Redis that is down is ``StoreUnavailable``, never signed in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from connectors.cache.redis_sessions import RedisSessions
from schemas.identity import SessionRecord, sha256_hex
from tables.ports.store import StoreUnavailable
from tests.servers import Redis, free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def session(name: str, *, idle_s: float, lifetime: timedelta) -> SessionRecord:
    return SessionRecord(session_sha256=sha256_hex(name), user_id="u-1", organisation_id="o",
                         created_at=T0, last_seen_at=T0, idle_timeout_s=idle_s,
                         absolute_expires_at=T0 + lifetime)


@pytest.fixture
async def raw(redis_server: Redis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_keys_ttl_is_the_shorter_of_idle_time_and_remaining_lifetime(
    redis_server: Redis, raw: aioredis.Redis,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sessions = RedisSessions(redis_server.url, prefix=prefix)
    try:
        idle = session("idle-bound", idle_s=600, lifetime=timedelta(hours=8))
        short = session("life-bound", idle_s=600, lifetime=timedelta(seconds=90))
        await sessions.create(idle)
        await sessions.create(short)
        # Each pair: the TTL Redis has, the TTL worked out (ms), within the test's run time.
        assert 590_000 < await raw.pttl(f"{prefix}session:{idle.session_sha256}") <= 600_000
        assert 80_000 < await raw.pttl(f"{prefix}session:{short.session_sha256}") <= 90_000
        for index in ("sessions", "user-sessions:u-1"):  # the longest session's lifetime
            assert 8 * 3_590_000 < await raw.pttl(prefix + index) <= 8 * 3_600_000

        # A lookup 60 s later: idle-bound renews to 600 s, life-bound has 30 s left.
        later = T0 + timedelta(seconds=60)
        assert await sessions.get(idle.session_sha256, now=later) is not None
        assert await sessions.get(short.session_sha256, now=later) is not None
        assert 590_000 < await raw.pttl(f"{prefix}session:{idle.session_sha256}") <= 600_000
        assert 20_000 < await raw.pttl(f"{prefix}session:{short.session_sha256}") <= 30_000
    finally:
        await sessions.close()


@pytest.fixture
async def fresh(redis_server: Redis) -> AsyncIterator[tuple[RedisSessions, str]]:
    """A session store under a prefix of its own, and that prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sessions = RedisSessions(redis_server.url, prefix=prefix)
    yield sessions, prefix
    await sessions.close()


async def test_an_index_entry_whose_session_hash_has_gone_is_cleaned_up(
    fresh: tuple[RedisSessions, str], raw: aioredis.Redis,
) -> None:
    sessions, prefix = fresh
    gone = session("gone", idle_s=600, lifetime=timedelta(hours=1))
    kept = session("kept", idle_s=600, lifetime=timedelta(hours=1))
    for s in (gone, kept):
        await sessions.create(s)
    await raw.delete(f"{prefix}session:{gone.session_sha256}")  # as an eviction would
    assert [s.session_sha256 for s in await sessions.sessions_of("u-1", now=T0)] == [
        kept.session_sha256]
    await sessions.create(gone.model_copy(update={"session_sha256": sha256_hex("g2")}))
    await raw.delete(f"{prefix}session:{sha256_hex('g2')}")
    assert await sessions.revoke_all("u-1", at=T0) == 1  # kept; g2 is not counted
    assert await raw.zcard(f"{prefix}user-sessions:u-1") == 1
    await sessions.create(gone.model_copy(update={"session_sha256": sha256_hex("g3")}))
    await raw.delete(f"{prefix}session:{sha256_hex('g3')}")
    # expire forgets kept (revoked) and drops g3 from both indexes though its hash is gone.
    assert await sessions.expire(now=T0) == 1
    assert await raw.zcard(f"{prefix}sessions") == 0
    assert await raw.zcard(f"{prefix}user-sessions:u-1") == 0


async def test_sign_out_everywhere_holds_when_the_users_index_is_lost(
    fresh: tuple[RedisSessions, str], raw: aioredis.Redis,
) -> None:
    sessions, prefix = fresh
    one = session("one", idle_s=600, lifetime=timedelta(hours=1))
    two = session("two", idle_s=600, lifetime=timedelta(hours=1))
    for s in (one, two):
        await sessions.create(s)
    await raw.delete(f"{prefix}user-sessions:u-1")
    at = T0 + timedelta(seconds=1)
    assert await sessions.revoke_all("u-1", at=at, keep_sha256=two.session_sha256) == 0
    assert await sessions.get(one.session_sha256, now=at) is None  # created before
    assert await sessions.get(two.session_sha256, now=at) is not None  # kept
    assert [s.session_sha256 for s in await sessions.all_sessions(now=at)] == [
        two.session_sha256]
    later = session("later", idle_s=600, lifetime=timedelta(hours=1)).model_copy(
        update={"created_at": at, "last_seen_at": at})
    await sessions.create(later)
    assert await sessions.get(later.session_sha256, now=at) is not None


async def test_an_index_never_lives_without_a_ttl(
    fresh: tuple[RedisSessions, str], raw: aioredis.Redis,
) -> None:
    sessions, prefix = fresh
    # Its absolute expiry is before the caller's now: the index must not keep it forever.
    dead = session("dead", idle_s=600, lifetime=timedelta(seconds=-1))
    await sessions.create(dead)
    for index in ("sessions", "user-sessions:u-1"):
        assert await raw.pttl(prefix + index) != -1  # -2: gone; else a TTL


async def test_a_redis_that_is_down_is_unavailable_not_signed_in() -> None:
    sessions = RedisSessions(f"redis://127.0.0.1:{free_port()}/0", prefix="t:")
    try:
        with pytest.raises(StoreUnavailable, match="redis get failed"):
            await sessions.get(sha256_hex("x"), now=T0)
        with pytest.raises(StoreUnavailable):
            await sessions.create(session("x", idle_s=60, lifetime=timedelta(hours=1)))
        with pytest.raises(StoreUnavailable):
            await sessions.sessions_of("u-1", now=T0)
        with pytest.raises(StoreUnavailable):
            await sessions.ping()
    finally:
        await sessions.close()
