"""Account use cases that span the identity store and the session store (issue 16): the
API and the CLI call these, never the two stores one after the other themselves.

The two stores cannot share a transaction (the sessions are in Redis in production), so the
order is what keeps the promise: the account change is made first (refused whole when it
would leave an organisation without an active admin), then the sessions it ends are
revoked. A failure in between leaves a changed account with sessions that the caller's retry
revokes, which is why whoever resolves a session should also check that its user is still
active and a member of the session's organisation.

Each change's audit records carry the organisation they concern (one record per
organisation of the user, read just before the change), so that an organisation's audit log
shows what happened to its members.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from schemas.identity import AuditAction, AuditRecord, AuditValue
from tables.ports.identity import IdentityStore, SessionStore


async def _per_organisation(identity: IdentityStore, user_id: str, action: AuditAction, *,
                            actor_id: str, at: datetime, client_address: str | None,
                            details: dict[str, AuditValue] | None = None,
                            also: str | None = None) -> list[AuditRecord]:
    """One record per organisation the user is a member of, and ``also`` (one without an
    organisation for a user who is in none)."""
    organisations: Sequence[str | None] = sorted(
        {m.organisation_id for m in await identity.memberships(user_id=user_id)}
        | ({also} if also else set()))
    return [AuditRecord(at=at, actor_id=actor_id, action=action, organisation_id=org,
                        target=f"user:{user_id}", client_address=client_address,
                        details=details or {})
            for org in organisations or [None]]


async def _revoke_all(identity: IdentityStore, sessions: SessionStore, user_id: str,
                      audits: list[AuditRecord], *, at: datetime,
                      keep_sha256: str | None = None) -> int:
    """Revokes the user's sessions (but ``keep_sha256``) and logs how many, on the
    organisations of ``audits``."""
    revoked = await sessions.revoke_all(user_id, at=at, keep_sha256=keep_sha256)
    if revoked:
        for record in audits:
            await identity.append_audit(record.model_copy(update={
                "action": AuditAction.SESSIONS_REVOKED_ALL, "details": {"sessions": revoked}}))
    return revoked


async def disable_user(identity: IdentityStore, sessions: SessionStore, user_id: str, *,
                       actor_id: str, at: datetime, client_address: str | None = None,
                       organisation_id: str | None = None) -> int:
    """Disables the user and revokes their live sessions at once: how many were revoked
    (``NotFound``, ``LastAdmin`` from the identity store; nothing revoked then). Only the
    status is written (``IdentityStore.set_user_status``), so a concurrent edit of the user
    stays; an already disabled user's sessions are revoked again, with no second
    ``user_disabled`` record. The records go to each organisation of the user, and to
    ``organisation_id`` (the acting admin's) if it is not among them."""
    audits = await _per_organisation(identity, user_id, AuditAction.USER_DISABLED,
                                     actor_id=actor_id, at=at, client_address=client_address,
                                     also=organisation_id)
    await identity.set_user_status(user_id, "disabled", audit=audits)
    return await _revoke_all(identity, sessions, user_id, audits, at=at)


async def enable_user(identity: IdentityStore, user_id: str, *, actor_id: str, at: datetime,
                      client_address: str | None = None) -> bool:
    """Whether a disabled user is active again (``NotFound``). Their old sessions stay
    revoked: they sign in anew."""
    audits = await _per_organisation(identity, user_id, AuditAction.USER_UPDATED,
                                     actor_id=actor_id, at=at, client_address=client_address,
                                     details={"status": "active"})
    return await identity.set_user_status(user_id, "active", audit=audits)


async def delete_user(identity: IdentityStore, sessions: SessionStore, user_id: str, *,
                      actor_id: str, at: datetime, client_address: str | None = None) -> int:
    """Deletes the user (``NotFound``, ``LastAdmin``; nothing revoked then), then revokes
    every session of theirs: how many."""
    audits = await _per_organisation(identity, user_id, AuditAction.USER_DELETED,
                                     actor_id=actor_id, at=at, client_address=client_address)
    await identity.delete_user(user_id, audit=audits)
    return await _revoke_all(identity, sessions, user_id, audits, at=at)


async def remove_membership(identity: IdentityStore, sessions: SessionStore, user_id: str,
                            organisation_id: str, *, actor_id: str, at: datetime,
                            client_address: str | None = None) -> int:
    """Removes the user from the organisation (``NotFound``, ``LastAdmin``; nothing revoked
    then), then revokes their sessions signed in to that organisation: how many. Their
    sessions in other organisations stay."""
    audit = AuditRecord(at=at, actor_id=actor_id, action=AuditAction.MEMBERSHIP_REMOVED,
                        organisation_id=organisation_id, target=f"user:{user_id}",
                        client_address=client_address)
    await identity.remove_membership(user_id, organisation_id, audit=audit)
    revoked = 0
    for session in await sessions.sessions_of(user_id, now=at):
        if session.organisation_id == organisation_id:
            revoked += await sessions.revoke(session.session_sha256, at=at)
    if revoked:
        await identity.append_audit(audit.model_copy(update={
            "action": AuditAction.SESSIONS_REVOKED_ALL, "details": {"sessions": revoked}}))
    return revoked


async def set_password_hash(identity: IdentityStore, sessions: SessionStore, user_id: str,
                            password_hash: str | None, *, actor_id: str, at: datetime,
                            keep_sha256: str | None = None, reset: bool = False,
                            client_address: str | None = None) -> int:
    """Replaces the user's password hash (``NotFound``), then revokes every session of
    theirs but ``keep_sha256`` (the one that changed it; none kept for an admin's
    ``reset``): how many. A password someone else may know must not leave their session
    signed in."""
    audits = await _per_organisation(
        identity, user_id, AuditAction.PASSWORD_RESET if reset else AuditAction.PASSWORD_CHANGED,
        actor_id=actor_id, at=at, client_address=client_address)
    await identity.set_password_hash(user_id, password_hash, audit=audits)
    return await _revoke_all(identity, sessions, user_id, audits, at=at,
                             keep_sha256=keep_sha256)
