"""Password resets (issue 16): the same behaviour in SQLite and in PostgreSQL (alone and in
the production store): a token works once, before it expires, for an active user; a new one
replaces the user's unused ones; its use and its audit record are one transaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas.identity import AuditAction, AuditRecord, PasswordReset, User
from tables.ports.identity import Conflict, NotFound, ResetTokenRefused
from tests.contract.adapters import RelationalStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HASH = "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA"


@pytest.fixture
def store(relational: RelationalStore) -> RelationalStore:
    """Every adapter of the port: SQLite, PostgreSQL, InfluxDB + PostgreSQL (conftest.py)."""
    return relational


def reset(digest_char: str, *, user_id: str = "u-1", minutes: int = 30,
          organisation_id: str | None = None) -> PasswordReset:
    return PasswordReset(token_sha256=digest_char * 64, user_id=user_id,
                         organisation_id=organisation_id, created_at=T0,
                         expires_at=T0 + timedelta(minutes=minutes), created_by="u-admin")


def audit(action: AuditAction) -> AuditRecord:
    return AuditRecord(at=T0, actor_id="u-admin", action=action, target="user:u-1")


async def users(store: RelationalStore) -> None:
    for uid, status in (("u-1", "active"), ("u-2", "active")):
        await store.add_user(User(user_id=uid, email=f"{uid}@example.com",
                                  display_name=uid, created_at=T0, status=status))


async def test_a_token_sets_the_password_once(store: RelationalStore) -> None:
    await users(store)
    issued = reset("a")
    await store.add_password_reset(issued, audit=audit(AuditAction.PASSWORD_RESET_ISSUED))
    assert await store.password_reset("a" * 64) == issued
    assert await store.password_reset("f" * 64) is None

    at = T0 + timedelta(minutes=5)
    assert await store.use_password_reset("a" * 64, HASH, at=at,
                                          audit=audit(AuditAction.PASSWORD_RESET)) == "u-1"
    user = await store.user("u-1")
    assert user is not None and user.password_hash == HASH
    used = await store.password_reset("a" * 64)
    assert used is not None and used.used_at == at and not used.usable(at)
    with pytest.raises(ResetTokenRefused) as caught:
        await store.use_password_reset("a" * 64, HASH.replace("aGFzaA", "b3RoZXI"), at=at)
    assert caught.value.reason == "used"
    user = await store.user("u-1")
    assert user is not None and user.password_hash == HASH  # the second use wrote nothing
    assert [r.action for r in await store.audit()] == [AuditAction.PASSWORD_RESET,
                                                        AuditAction.PASSWORD_RESET_ISSUED]


@pytest.mark.parametrize(("case", "reason"), [
    ("unknown", "unknown"),  # never issued
    ("expired", "expired"),  # used at its expiry: too late
    ("disabled", "disabled"),  # its user was disabled after it was issued
    ("replaced", "unknown"),  # a newer token for the same user replaced it
])
async def test_refused_tokens_write_nothing(store: RelationalStore, case: str,
                                            reason: str) -> None:
    await users(store)
    await store.add_password_reset(reset("a"))
    at = T0 + timedelta(minutes=1)
    if case == "expired":
        at = T0 + timedelta(minutes=30)
    if case == "disabled":
        user = await store.user("u-1")
        assert user is not None
        await store.update_user(user.model_copy(update={"status": "disabled"}))
    if case == "replaced":
        await store.add_password_reset(reset("b"))
    digest = "f" * 64 if case == "unknown" else "a" * 64
    with pytest.raises(ResetTokenRefused) as caught:
        await store.use_password_reset(digest, HASH, at=at,
                                       audit=audit(AuditAction.PASSWORD_RESET))
    assert caught.value.reason == reason
    user = await store.user("u-1")
    assert user is not None and user.password_hash is None
    assert await store.audit() == []  # the refused use wrote no audit record either
    left = await store.password_reset("a" * 64)
    assert (left is None) == (case == "replaced")
    assert left is None or left.used_at is None


async def test_a_new_token_replaces_unused_ones_only_of_its_user(
    store: RelationalStore,
) -> None:
    await users(store)
    await store.add_password_reset(reset("a"))
    await store.add_password_reset(reset("c", user_id="u-2", organisation_id=None))
    await store.use_password_reset("a" * 64, HASH, at=T0)
    await store.add_password_reset(reset("b", organisation_id=None))
    used = await store.password_reset("a" * 64)
    assert used is not None and used.used_at == T0  # a used one stays: a replay says "used"
    assert await store.password_reset("c" * 64) == reset("c", user_id="u-2")
    with pytest.raises(Conflict):
        await store.add_password_reset(reset("b"))
    with pytest.raises(NotFound):
        await store.add_password_reset(reset("d", user_id="u-9"))


async def test_of_two_concurrent_uses_one_wins(store: RelationalStore) -> None:
    await users(store)
    await store.add_password_reset(reset("a"))
    outcomes = await asyncio.gather(
        *(store.use_password_reset("a" * 64, HASH, at=T0 + timedelta(seconds=n))
          for n in range(4)), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == [
        "ResetTokenRefused", "ResetTokenRefused", "ResetTokenRefused", "str"]


async def test_a_deleted_users_tokens_go_with_them(store: RelationalStore) -> None:
    await users(store)
    await store.add_password_reset(reset("a"))
    await store.delete_user("u-1")
    assert await store.password_reset("a" * 64) is None
    with pytest.raises(ResetTokenRefused):
        await store.use_password_reset("a" * 64, HASH, at=T0)
