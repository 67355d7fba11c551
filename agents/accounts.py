"""Account use cases that span the identity store and the session store (issue 16): the
API and the CLI call these, never the two stores one after the other themselves.

The two stores cannot share a transaction (the sessions are in Redis in production), so the
order is what keeps the promise: the user is disabled first (refused whole when they are an
organisation's last active admin), then every live session of theirs is revoked. A failure
in between leaves a disabled user with sessions that the caller's retry revokes, which is
why whoever resolves a session should also check that its user is still active.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from agents.identity.passwords import PasswordHasher, check_password
from agents.identity.permissions import may_grant
from schemas.identity import AuditAction, AuditRecord, AuditValue, PersonRole, User
from tables.ports.identity import IdentityStore, NotFound, SessionStore, WrongOrganisation


async def disable_user(identity: IdentityStore, sessions: SessionStore, user_id: str, *,
                       actor_id: str, at: datetime, client_address: str | None = None,
                       organisation_id: str | None = None) -> int:
    """Disables the user and revokes their live sessions at once: how many were revoked
    (``NotFound``, ``LastAdmin`` from the identity store; nothing revoked then)."""
    user = await identity.user(user_id)
    if user is None:
        raise NotFound(f"user {user_id}")
    if user.status != "disabled":
        await identity.update_user(
            user.model_copy(update={"status": "disabled"}),
            audit=AuditRecord(at=at, actor_id=actor_id, action=AuditAction.USER_DISABLED,
                              organisation_id=organisation_id, target=f"user:{user_id}",
                              client_address=client_address))
    revoked = await sessions.revoke_all(user_id, at=at)
    if revoked:
        await identity.append_audit(AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.SESSIONS_REVOKED_ALL,
            organisation_id=organisation_id, target=f"user:{user_id}",
            client_address=client_address, details={"sessions": revoked}))
    return revoked


class NotAllowed(Exception):
    """The actor's role may not do this to that user (``permissions.may_grant``)."""


def _check_rank(actor: PersonRole, target: PersonRole) -> None:
    if target.rank > actor.rank:
        raise NotAllowed(f"a {actor.value} may not change a {target.value}")


async def create_member(identity: IdentityStore, hasher: PasswordHasher, *, actor: PersonRole,
                        organisation_id: str, user: User, role: PersonRole,
                        password: str | None, facility_ids: Sequence[str], actor_id: str,
                        at: datetime, client_address: str | None = None) -> User:
    """A new user in the organisation with ``role`` (never above ``actor``'s) and the
    facilities given (the organisation's, checked before anything is written:
    ``WrongOrganisation``); ``PasswordRejected`` for a password the policy refuses."""
    if not may_grant(actor, current=None, new=role):
        raise NotAllowed(f"a {actor.value} may not make a {role.value}")
    beyond = sorted(set(facility_ids) - set(await identity.organisation_facilities(
        organisation_id)))
    if beyond:
        raise WrongOrganisation(organisation_id, beyond)
    if password is not None:
        check_password(password, email=user.email, display_name=user.display_name)
        user = user.model_copy(update={"password_hash": await asyncio.to_thread(
            hasher.hash, password)})

    def audit(action: AuditAction, **details: AuditValue) -> AuditRecord:
        return AuditRecord(at=at, actor_id=actor_id, action=action,
                           organisation_id=organisation_id, target=f"user:{user.user_id}",
                           client_address=client_address, details=details)

    await identity.add_user(user, audit=audit(AuditAction.USER_CREATED))
    await identity.set_membership(user.user_id, organisation_id, role,
                                  audit=audit(AuditAction.ROLE_CHANGED, role=role.value))
    if facility_ids:
        await identity.set_assignments(user.user_id, organisation_id, sorted(set(facility_ids)),
                                       audit=audit(AuditAction.FACILITIES_ASSIGNED,
                                                   facilities=",".join(sorted(facility_ids))))
    return user


async def update_member(identity: IdentityStore, sessions: SessionStore, *, actor: PersonRole,
                        organisation_id: str, user_id: str, display_name: str | None = None,
                        role: PersonRole | None = None, status: str | None = None,
                        actor_id: str, at: datetime, client_address: str | None = None) -> None:
    """Renames, changes the role of, disables or re-enables a member (``NotFound`` for a
    non-member, ``NotAllowed`` above the actor, ``LastAdmin``); disabling revokes their
    sessions at once."""
    membership = await identity.membership(user_id, organisation_id)
    user = await identity.user(user_id)
    if membership is None or user is None:
        raise NotFound(f"user {user_id}")
    _check_rank(actor, membership.role)
    target = f"user:{user_id}"
    if role is not None and role is not membership.role:
        if not may_grant(actor, current=membership.role, new=role):
            raise NotAllowed(f"a {actor.value} may not make a {role.value}")
        await identity.set_membership(user_id, organisation_id, role, audit=AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.ROLE_CHANGED,
            organisation_id=organisation_id, target=target, client_address=client_address,
            details={"from": membership.role.value, "to": role.value}))
    if display_name is not None and display_name != user.display_name:
        user = user.model_copy(update={"display_name": display_name})
        await identity.update_user(user, audit=AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.USER_UPDATED,
            organisation_id=organisation_id, target=target, client_address=client_address))
    if status == "disabled":
        await disable_user(identity, sessions, user_id, actor_id=actor_id, at=at,
                           client_address=client_address, organisation_id=organisation_id)
    elif status == "active" and user.status != "active":
        await identity.update_user(user.model_copy(update={"status": "active"}),
                                   audit=AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.USER_UPDATED,
            organisation_id=organisation_id, target=target, client_address=client_address,
            details={"status": "active"}))


async def assign_facilities(identity: IdentityStore, *, actor: PersonRole,
                            organisation_id: str, user_id: str, facility_ids: Sequence[str],
                            actor_id: str, at: datetime,
                            client_address: str | None = None) -> None:
    """Replaces a member's facilities (``NotFound``, ``NotAllowed``, ``WrongOrganisation``)."""
    membership = await identity.membership(user_id, organisation_id)
    if membership is None:
        raise NotFound(f"user {user_id}")
    _check_rank(actor, membership.role)
    chosen = sorted(set(facility_ids))
    await identity.set_assignments(user_id, organisation_id, chosen, audit=AuditRecord(
        at=at, actor_id=actor_id, action=AuditAction.FACILITIES_ASSIGNED,
        organisation_id=organisation_id, target=f"user:{user_id}",
        client_address=client_address, details={"facilities": ",".join(chosen)}))


async def set_role(identity: IdentityStore, *, organisation_id: str, user_id: str,
                   role: PersonRole, actor_id: str, at: datetime,
                   client_address: str | None = None) -> PersonRole | None:
    """The operator's change (``sems user set-role``, no role above it): the user joins the
    organisation with ``role``, or their role there changes (``NotFound``, ``LastAdmin``).
    The role they had, none for a new member."""
    membership = await identity.membership(user_id, organisation_id)
    before = None if membership is None else membership.role
    if before is not role:
        await identity.set_membership(user_id, organisation_id, role, audit=AuditRecord(
            at=at, actor_id=actor_id, action=AuditAction.ROLE_CHANGED,
            organisation_id=organisation_id, target=f"user:{user_id}",
            client_address=client_address,
            details={"from": None if before is None else before.value, "to": role.value}))
    return before
