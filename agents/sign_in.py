"""Signing people in and out, and resolving a session to who it is (issue 16): the API and
the CLI call these, never the identity and session stores one after the other themselves.

A sign-in answers the same way, in about the same time, for an unknown account, a disabled
one and a wrong password: the password is always verified by argon2 (a dummy hash when there
is no account), on a worker thread so that the event loop keeps serving meanwhile. Failures
are counted per account (known or not) and lock it out by ``agents/identity/lockout.py``; a
locked account is refused before any password is checked, and such an attempt does not
count. Every outcome is in the audit log with the client's address.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from agents.identity.lockout import LockoutPolicy, locked_until
from agents.identity.passwords import PasswordHasher
from agents.identity.permissions import Grants, grants
from schemas.identity import (
    EMAIL_MAX_LENGTH,
    AuditAction,
    AuditRecord,
    Membership,
    SessionRecord,
    User,
    normalise_email,
    sha256_hex,
)
from tables.ports.identity import IdentityStore, SessionStore

SESSION_ID_BYTES = 32
"""A session id is this many random bytes (``secrets.token_urlsafe``); only its SHA-256 is
stored."""


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    idle_timeout_s: float = 30 * 60.0
    lifetime_s: float = 12 * 3600.0
    """A session's absolute expiry after its sign-in, however active it is."""
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    password_reset_ttl_s: float = 30 * 60.0
    """How long a one-time password-reset token works (``agents/password_reset.py``)."""


RefusalReason = Literal["invalid", "locked", "no_organisation"]


class SignInRefused(Exception):
    """``invalid``: unknown account, disabled, or wrong password (one answer for all);
    ``locked``: too many failures, ``retry_after_s`` from now; ``no_organisation``: the
    password was right but the user belongs to no organisation (or not to the one asked)."""

    def __init__(self, reason: RefusalReason, *, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class SignedIn:
    session_id: str
    """The secret the client keeps (the cookie); never stored."""
    session: SessionRecord
    user: User
    membership: Membership


@dataclass(frozen=True, slots=True)
class Resolved:
    """A live session with who it is and what they may do, looked up once per request."""

    session: SessionRecord
    user: User
    membership: Membership
    grants: Grants


def account_of(email: str) -> str:
    """What failures are counted under: the normalised address, or for text that is not one,
    its lower-cased, stripped form (cut to the length an address may have)."""
    return _valid(email) or email.strip().lower()[:EMAIL_MAX_LENGTH] or "(empty)"


def csrf_token(session_id: str) -> str:
    """The session's CSRF token, derived from its secret id (so nothing more is stored, and
    only the holder of the session can know it)."""
    return hashlib.sha256(b"sems-csrf\x00" + session_id.encode()).hexdigest()


async def sign_in(identity: IdentityStore, sessions: SessionStore, hasher: PasswordHasher, *,
                  email: str, password: str, at: datetime, policy: SignInPolicy,
                  organisation_id: str | None = None, client_address: str | None = None,
                  user_agent: str | None = None) -> SignedIn:
    """A new session (a new id at every sign-in), or ``SignInRefused``."""
    account = account_of(email)
    failures = await identity.sign_in_failures(account)
    until = locked_until(failures, policy.lockout)
    if until is not None and at < until:
        await identity.append_audit(AuditRecord(
            at=at, action=AuditAction.SIGN_IN_FAILED, target=f"account:{account}",
            client_address=client_address, details={"reason": "locked"}))
        raise SignInRefused("locked", retry_after_s=(until - at).total_seconds())
    valid = _valid(email)
    user = None if valid is None else await identity.user_by_email(valid)
    usable = user if user is not None and user.status == "active" else None
    ok = await asyncio.to_thread(hasher.verify, None if usable is None else
                                 usable.password_hash, password)
    if usable is None or not ok:
        reason = ("unknown_account" if user is None else
                  "disabled" if user.status != "active" else "wrong_password")
        await identity.record_sign_in_failure(account, at=at, audit=AuditRecord(
            at=at, actor_id=None if user is None else user.user_id,
            action=AuditAction.SIGN_IN_FAILED, target=f"account:{account}",
            client_address=client_address, details={"reason": reason}))
        raise SignInRefused("invalid")
    membership = await _membership(identity, usable.user_id, organisation_id)
    if membership is None:
        raise SignInRefused("no_organisation")
    if usable.password_hash is not None and hasher.needs_rehash(usable.password_hash):
        rehashed = await asyncio.to_thread(hasher.hash, password)
        await identity.set_password_hash(usable.user_id, rehashed)
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    record = SessionRecord(
        session_sha256=sha256_hex(session_id), user_id=usable.user_id,
        organisation_id=membership.organisation_id, created_at=at, last_seen_at=at,
        idle_timeout_s=policy.idle_timeout_s,
        absolute_expires_at=at + timedelta(seconds=policy.lifetime_s),
        client_address=client_address, user_agent=None if user_agent is None
        else user_agent[:512])
    await sessions.create(record)
    await identity.record_sign_in_success(usable.user_id, account, at=at, audit=AuditRecord(
        at=at, actor_id=usable.user_id, action=AuditAction.SIGN_IN,
        organisation_id=membership.organisation_id, target=f"user:{usable.user_id}",
        client_address=client_address, details={"session": record.session_sha256[:12]}))
    return SignedIn(session_id=session_id, session=record, user=usable, membership=membership)


def _valid(email: str) -> str | None:
    try:
        return normalise_email(email)
    except ValueError:
        return None


async def _membership(identity: IdentityStore, user_id: str,
                      organisation_id: str | None) -> Membership | None:
    if organisation_id is not None:
        return await identity.membership(user_id, organisation_id)
    memberships = await identity.memberships(user_id=user_id)
    return memberships[0] if memberships else None


async def resolve(identity: IdentityStore, sessions: SessionStore, session_id: str, *,
                  now: datetime) -> Resolved | None:
    """The live session of ``session_id`` (its idle time restarted) with its user, who must
    still be active and a member of the session's organisation; else ``None``. A session of
    a disabled user is revoked as it is met (``agents/accounts.py`` revokes them all, but a
    failure between its two steps could leave some)."""
    digest = sha256_hex(session_id)
    record = await sessions.get(digest, now=now)
    if record is None:
        return None
    user = await identity.user(record.user_id)
    if user is None or user.status != "active":
        await sessions.revoke(digest, at=now)
        return None
    membership = await identity.membership(record.user_id, record.organisation_id)
    if membership is None:
        return None
    return Resolved(session=record, user=user, membership=membership,
                    grants=await member_grants(identity, membership))


async def member_grants(identity: IdentityStore, membership: Membership) -> Grants:
    """What a member may do and see in their organisation (its facilities now)."""
    facilities = await identity.organisation_facilities(membership.organisation_id)
    return grants(organisation_id=membership.organisation_id, role=membership.role,
                  assigned_facility_ids=membership.facility_ids,
                  organisation_facility_ids=facilities)


async def sign_out(identity: IdentityStore, sessions: SessionStore, session: SessionRecord, *,
                   at: datetime, client_address: str | None = None) -> bool:
    """Revokes the session: whether it was live."""
    revoked = await sessions.revoke(session.session_sha256, at=at)
    if revoked:
        await identity.append_audit(AuditRecord(
            at=at, actor_id=session.user_id, action=AuditAction.SIGN_OUT,
            organisation_id=session.organisation_id, target=f"user:{session.user_id}",
            client_address=client_address, details={"session": session.session_sha256[:12]}))
    return revoked
