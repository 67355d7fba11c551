"""Password resets (issue 16): an admin, an energy manager or the operator at the CLI issues a
one-time token for a user; whoever holds it sets the user's new password with it, once,
before it expires. The API and the CLI call these.

The token is 32 random bytes (``secrets.token_urlsafe``), shown once to whoever issued it and
stored as its SHA-256; a new one replaces the user's unused ones. Using it checks the
password policy first (a weak password spends nothing), hashes on a worker thread, then sets
the hash and marks the token used in one transaction, so that of two concurrent uses one
wins. Then every session of the user's is revoked (before the change too, so that a session
store that is down stops the reset before anything is written), and the account's sign-in
failures are cleared: the reset lifts a lock-out. Every issue, use and refused use is in the
audit log.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from agents.accounts import NotAllowed
from agents.identity.passwords import PasswordHasher, check_password
from agents.sign_in import account_of
from schemas.identity import (
    AuditAction,
    AuditRecord,
    PasswordReset,
    PersonRole,
    sha256_hex,
)
from tables.ports.identity import (
    IdentityStore,
    NotFound,
    ResetTokenRefused,
    SessionStore,
    check_password_reset,
)

RESET_TOKEN_BYTES = 32
DEFAULT_TTL_S = 30 * 60.0


class UserDisabled(Exception):
    """A disabled user gets no reset: re-enable them first (a reset would not sign them in)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} is disabled; re-enable them first")
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class IssuedReset:
    token: str
    """The secret, shown once to whoever issued it; never stored."""
    reset: PasswordReset


@dataclass(frozen=True, slots=True)
class PasswordSet:
    user_id: str
    sessions_revoked: int


async def issue_password_reset(identity: IdentityStore, *, user_id: str,
                               actor: PersonRole | None, organisation_id: str | None,
                               actor_id: str, at: datetime, ttl_s: float = DEFAULT_TTL_S,
                               client_address: str | None = None) -> IssuedReset:
    """A new one-time token for the user. ``actor`` is the issuer's role in
    ``organisation_id``, where the user must be a member not above it (``NotFound``,
    ``NotAllowed``); ``None`` with no organisation: the operator at the CLI, who may reset
    anyone's. ``UserDisabled`` for a disabled user."""
    user = await identity.user(user_id)
    membership = (None if organisation_id is None
                  else await identity.membership(user_id, organisation_id))
    if user is None or (organisation_id is not None and membership is None):
        raise NotFound(f"user {user_id}")
    if actor is not None and (membership is None or membership.role.rank > actor.rank):
        target = "a non-member" if membership is None else f"a {membership.role.value}"
        raise NotAllowed(f"a {actor.value} may not reset the password of {target}")
    if user.status != "active":
        raise UserDisabled(user_id)
    token = secrets.token_urlsafe(RESET_TOKEN_BYTES)
    reset = PasswordReset(token_sha256=sha256_hex(token), user_id=user_id,
                          organisation_id=organisation_id, created_at=at,
                          expires_at=at + timedelta(seconds=ttl_s), created_by=actor_id)
    await identity.add_password_reset(reset, audit=AuditRecord(
        at=at, actor_id=actor_id, action=AuditAction.PASSWORD_RESET_ISSUED,
        organisation_id=organisation_id, target=f"user:{user_id}",
        client_address=client_address,
        details={"token": reset.token_sha256[:12], "expires_at": reset.expires_at.isoformat()}))
    return IssuedReset(token=token, reset=reset)


async def reset_password(identity: IdentityStore, sessions: SessionStore,
                         hasher: PasswordHasher, *, token: str, new_password: str,
                         at: datetime, client_address: str | None = None) -> PasswordSet:
    """Sets the password of the token's user and revokes their sessions:
    ``ResetTokenRefused`` (audited) for a token that is unknown, used, expired or of a
    disabled user; ``PasswordRejected`` for a password the policy refuses (the token stays
    usable)."""
    digest = sha256_hex(token)
    reset = await identity.password_reset(digest)
    user = None if reset is None else await identity.user(reset.user_id)

    def audit(action: AuditAction, **details: str | int) -> AuditRecord:
        return AuditRecord(at=at, actor_id=None if user is None else user.user_id,
                           action=action, organisation_id=None if reset is None
                           else reset.organisation_id,
                           target=None if user is None else f"user:{user.user_id}",
                           client_address=client_address,
                           details={"token": digest[:12], **details})

    try:
        check_password_reset(reset, None if user is None else user.status, at=at)
    except ResetTokenRefused as exc:
        await identity.append_audit(audit(AuditAction.PASSWORD_RESET_FAILED,
                                          reason=exc.reason))
        raise
    if user is None:  # check_password_reset refuses a reset without a user
        raise ResetTokenRefused("unknown")
    check_password(new_password, email=user.email, display_name=user.display_name)
    password_hash = await asyncio.to_thread(hasher.hash, new_password)
    revoked = await sessions.revoke_all(user.user_id, at=at)
    try:
        await identity.use_password_reset(digest, password_hash, at=at,
                                          audit=audit(AuditAction.PASSWORD_RESET))
    except ResetTokenRefused as exc:  # used or expired meanwhile
        await identity.append_audit(audit(AuditAction.PASSWORD_RESET_FAILED,
                                          reason=exc.reason))
        raise
    revoked += await sessions.revoke_all(user.user_id, at=at)
    if revoked:
        await identity.append_audit(audit(AuditAction.SESSIONS_REVOKED_ALL, sessions=revoked))
    await identity.clear_sign_in_failures(account_of(user.email))
    return PasswordSet(user_id=user.user_id, sessions_revoked=revoked)
