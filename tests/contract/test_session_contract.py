"""Signed-in sessions (issue 16): the same behaviour in SQLite and in Redis. Expiry is decided
by the ``now`` each call is given, so the cases below step time without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.accounts import delete_user, disable_user, remove_membership, set_password_hash
from connectors.cache.redis_sessions import RedisSessions
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.identity import AuditAction, Organisation, PersonRole, SessionRecord, User, sha256_hex
from streams.settings import Settings
from streams.stores import build_sessions
from tables.ports.identity import Conflict, LastAdmin, SessionStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 250, tzinfo=UTC)
IDLE_S = 1800.0
LIFETIME = timedelta(hours=8)
US = timedelta(microseconds=1)


def session(name: str, *, user_id: str = "u-1", org: str = "org-1",
            at: datetime = T0) -> SessionRecord:
    return SessionRecord(session_sha256=sha256_hex(name), user_id=user_id,
                         organisation_id=org, created_at=at, last_seen_at=at,
                         idle_timeout_s=IDLE_S, absolute_expires_at=at + LIFETIME,
                         client_address="2001:db8::7", user_agent="Firefox/140")


async def test_a_session_is_found_by_its_digest_and_each_lookup_restarts_its_idle_time(
    sessions: SessionStore,
) -> None:
    s = session("one")
    await sessions.create(s)
    with pytest.raises(Conflict):
        await sessions.create(s)  # a new id at every sign-in: a taken one is refused
    assert await sessions.get(sha256_hex("unknown"), now=T0) is None

    seen = T0 + timedelta(seconds=IDLE_S) - US  # the last microsecond of its idle time
    found = await sessions.get(s.session_sha256, now=seen)
    assert found == s.model_copy(update={"last_seen_at": seen})
    # Idle time runs from the last lookup: 29 min later it is still there...
    later = seen + timedelta(minutes=29)
    assert await sessions.get(s.session_sha256, now=later) is not None
    # ... and at a full idle time after that lookup it is gone.
    assert await sessions.get(s.session_sha256, now=later + timedelta(seconds=IDLE_S)) is None


async def test_an_idle_session_expires_at_its_idle_timeout(sessions: SessionStore) -> None:
    s = session("idle")
    await sessions.create(s)
    assert await sessions.get(s.session_sha256, now=T0 + timedelta(seconds=IDLE_S)) is None
    assert await sessions.sessions_of("u-1", now=T0 + timedelta(seconds=IDLE_S)) == []


async def test_a_session_in_use_still_ends_at_its_absolute_expiry(sessions: SessionStore) -> None:
    s = session("busy")
    await sessions.create(s)
    now = T0
    while now + timedelta(minutes=20) < s.absolute_expires_at:  # used every 20 minutes
        now += timedelta(minutes=20)
        assert await sessions.get(s.session_sha256, now=now) is not None, now
    assert await sessions.get(s.session_sha256, now=s.absolute_expires_at - US) is not None
    assert await sessions.get(s.session_sha256, now=s.absolute_expires_at) is None


async def test_sign_out_revokes_one_session_once(sessions: SessionStore) -> None:
    mine, other = session("mine"), session("other")
    await sessions.create(mine)
    await sessions.create(other)
    at = T0 + timedelta(minutes=1)
    assert await sessions.revoke(mine.session_sha256, at=at)
    assert not await sessions.revoke(mine.session_sha256, at=at)
    assert not await sessions.revoke(sha256_hex("unknown"), at=at)
    assert await sessions.get(mine.session_sha256, now=at) is None
    assert await sessions.get(other.session_sha256, now=at) is not None
    assert [x.session_sha256 for x in await sessions.sessions_of("u-1", now=at)] == [
        other.session_sha256]


async def test_sign_out_everywhere_revokes_every_session_of_the_user_alone(
    sessions: SessionStore,
) -> None:
    laptop = session("laptop", at=T0)
    phone = session("phone", at=T0 + timedelta(minutes=1))
    tablet = session("tablet", at=T0 + timedelta(minutes=2))
    someone_else = session("bob", user_id="u-2", org="org-2")
    for s in (laptop, phone, tablet, someone_else):
        await sessions.create(s)
    at = T0 + timedelta(minutes=3)
    assert [s.session_sha256 for s in await sessions.sessions_of("u-1", now=at)] == [
        tablet.session_sha256, phone.session_sha256, laptop.session_sha256]  # newest first
    # "Everywhere else": the session asking is kept.
    assert await sessions.revoke_all("u-1", at=at, keep_sha256=tablet.session_sha256) == 2
    assert [s.session_sha256 for s in await sessions.sessions_of("u-1", now=at)] == [
        tablet.session_sha256]
    assert await sessions.revoke_all("u-1", at=at) == 1
    assert await sessions.revoke_all("u-1", at=at) == 0
    for s in (laptop, phone, tablet):
        assert await sessions.get(s.session_sha256, now=at) is None
    assert await sessions.get(someone_else.session_sha256, now=at) is not None


async def test_an_admin_lists_live_sessions_of_every_user_or_one_organisation(
    sessions: SessionStore,
) -> None:
    a = session("a", at=T0)
    b = session("b", user_id="u-2", org="org-2", at=T0 + timedelta(seconds=1))
    gone = session("gone", user_id="u-3", at=T0 - LIFETIME)  # past its absolute expiry
    for s in (a, b, gone):
        await sessions.create(s)
    now = T0 + timedelta(seconds=2)
    assert await sessions.all_sessions(now=now) == [b, a]
    assert await sessions.all_sessions(now=now, organisation_id="org-1") == [a]


async def test_expire_forgets_expired_and_revoked_sessions(sessions: SessionStore) -> None:
    kept = session("kept", at=T0 + timedelta(hours=1))
    idle, revoked = session("idle"), session("revoked", at=T0 + timedelta(hours=1))
    for s in (kept, idle, revoked):
        await sessions.create(s)
    now = T0 + timedelta(hours=1, minutes=1)  # idle has been idle for over 30 minutes
    assert await sessions.revoke(revoked.session_sha256, at=now)
    assert await sessions.expire(now=now) == 2
    assert await sessions.expire(now=now) == 0
    assert [s.session_sha256 for s in await sessions.all_sessions(now=now)] == [
        kept.session_sha256]


async def test_disabling_a_user_revokes_their_sessions_at_once(
    sessions: SessionStore, tmp_path: Path,
) -> None:
    identity = SqliteStore(tmp_path / "identity.db", metrics=Metrics())
    await identity.open()
    try:
        await identity.add_organisation(Organisation(organisation_id="org-1", name="One"))
        for user_id, role in (("u-admin", PersonRole.ADMIN), ("u-1", PersonRole.OPERATOR)):
            await identity.add_user(User(user_id=user_id, email=f"{user_id}@example.com",
                                         display_name=user_id, created_at=T0))
            await identity.set_membership(user_id, "org-1", role)
        await sessions.create(session("one"))
        await sessions.create(session("two"))
        await sessions.create(session("admin", user_id="u-admin"))
        at = T0 + timedelta(minutes=5)

        assert await disable_user(identity, sessions, "u-1", actor_id="u-admin", at=at) == 2
        disabled = await identity.user("u-1")
        assert disabled is not None and disabled.status == "disabled"
        assert await sessions.sessions_of("u-1", now=at) == []
        assert await sessions.get(sha256_hex("one"), now=at) is None
        assert [(r.action, r.target, r.organisation_id) for r in await identity.audit()] == [
            (AuditAction.SESSIONS_REVOKED_ALL, "user:u-1", "org-1"),
            (AuditAction.USER_DISABLED, "user:u-1", "org-1")]
        # Disabling again revokes what is left, with no second user_disabled record.
        assert await disable_user(identity, sessions, "u-1", actor_id="u-admin", at=at) == 0
        assert len(await identity.audit(organisation_id="org-1")) == 2

        # The last admin is refused whole: still active, still signed in.
        with pytest.raises(LastAdmin):
            await disable_user(identity, sessions, "u-admin", actor_id="u-admin", at=at)
        assert await sessions.get(sha256_hex("admin"), now=at) is not None
    finally:
        await identity.close()


async def test_deleting_removing_or_changing_a_password_ends_the_sessions_it_should(
    sessions: SessionStore, tmp_path: Path,
) -> None:
    identity = SqliteStore(tmp_path / "identity.db", metrics=Metrics())
    await identity.open()
    try:
        for org in ("org-1", "org-2"):
            await identity.add_organisation(Organisation(organisation_id=org, name=org))
        for user_id in ("u-1", "u-2", "u-3"):
            await identity.add_user(User(user_id=user_id, email=f"{user_id}@example.com",
                                         display_name=user_id, created_at=T0))
            for org in ("org-1", "org-2"):
                await identity.set_membership(user_id, org, PersonRole.OPERATOR)
        for name, user_id, org in (("d1", "u-1", "org-1"), ("d2", "u-1", "org-2"),
                                   ("r1", "u-2", "org-1"), ("r2", "u-2", "org-2"),
                                   ("p1", "u-3", "org-1"), ("p2", "u-3", "org-1")):
            await sessions.create(session(name, user_id=user_id, org=org))
        at = T0 + timedelta(minutes=5)

        assert await delete_user(identity, sessions, "u-1", actor_id="cli", at=at) == 2
        assert await sessions.sessions_of("u-1", now=at) == []
        # Removed from org-1: the org-1 session ends, the org-2 one stays.
        assert await remove_membership(identity, sessions, "u-2", "org-1", actor_id="cli",
                                       at=at) == 1
        assert [s.organisation_id for s in await sessions.sessions_of("u-2", now=at)] == [
            "org-2"]
        # A password change keeps the session that made it, and ends the others.
        assert await set_password_hash(identity, sessions, "u-3", None, actor_id="u-3", at=at,
                                       keep_sha256=sha256_hex("p2")) == 1
        assert [s.session_sha256 for s in await sessions.sessions_of("u-3", now=at)] == [
            sha256_hex("p2")]
        assert {r.organisation_id for r in await identity.audit(
            actions=[AuditAction.USER_DELETED])} == {"org-1", "org-2"}
    finally:
        await identity.close()


async def test_each_profile_builds_its_session_store(tmp_path: Path) -> None:
    embedded = Settings.model_validate({"data_dir": tmp_path / "data"})
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    assert build_sessions(embedded, store) is store.sessions
    production = embedded.model_copy(update={"profile": "production",
                                             "redis_url": "redis://127.0.0.1:1/0"})
    redis = build_sessions(production, store)
    assert isinstance(redis, RedisSessions)
    await redis.close()
    # Production without Redis has no sessions: sign-in answers 503, tokens work.
    assert build_sessions(production.model_copy(update={"redis_url": None}), store) is None
