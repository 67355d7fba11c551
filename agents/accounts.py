"""Account use cases that span the identity store and the session store (issue 16): the
API and the CLI call these, never the two stores one after the other themselves.

The two stores cannot share a transaction (the sessions are in Redis in production), so the
order is what keeps the promise: the user is disabled first (refused whole when they are an
organisation's last active admin), then every live session of theirs is revoked. A failure
in between leaves a disabled user with sessions that the caller's retry revokes, which is
why whoever resolves a session should also check that its user is still active.
"""

from __future__ import annotations

from datetime import datetime

from schemas.identity import AuditAction, AuditRecord
from tables.ports.identity import IdentityStore, NotFound, SessionStore


async def disable_user(identity: IdentityStore, sessions: SessionStore, user_id: str, *,
                       actor_id: str, at: datetime, client_address: str | None = None) -> int:
    """Disables the user and revokes their live sessions at once: how many were revoked
    (``NotFound``, ``LastAdmin`` from the identity store; nothing revoked then)."""
    user = await identity.user(user_id)
    if user is None:
        raise NotFound(f"user {user_id}")
    if user.status != "disabled":
        await identity.update_user(
            user.model_copy(update={"status": "disabled"}),
            audit=AuditRecord(at=at, actor_id=actor_id, action=AuditAction.USER_DISABLED,
                              target=f"user:{user_id}", client_address=client_address))
    revoked = await sessions.revoke_all(user_id, at=at)
    if revoked:
        await identity.append_audit(AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.SESSIONS_REVOKED_ALL,
            target=f"user:{user_id}", client_address=client_address,
            details={"sessions": revoked}))
    return revoked
