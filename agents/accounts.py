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

import asyncio
from collections.abc import Sequence
from datetime import datetime

from agents.identity.passwords import PasswordHasher, check_password
from agents.identity.permissions import may_grant
from schemas.identity import AuditAction, AuditRecord, AuditValue, PersonRole, User
from tables.ports.identity import IdentityStore, NotFound, SessionStore, WrongOrganisation


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
        await enable_user(identity, user_id, actor_id=actor_id, at=at,
                          client_address=client_address)


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
