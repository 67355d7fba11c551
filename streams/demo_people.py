"""The demo fleet's people (``sems run``, ``make run``; issue 16): an organisation owning the
demo facilities and one user per role, so that the dashboard and the people routes can be
tried at once.

Each user is made only when no account has its email yet, with a random password printed
once, in the DEMO block at start; a restart finds them, prints nothing and changes nothing
(a forgotten password: ``sems user reset-password EMAIL``). The facility-scoped roles are
assigned some of the facilities: a facility manager and a viewer the first, an operator the
first two. Facilities that another organisation owns already stay its.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agents.accounts import create_member
from agents.identity.passwords import PasswordHasher
from schemas.identity import AuditAction, AuditRecord, Organisation, PersonRole, User
from tables.ports.identity import IdentityStore

DEMO_ORGANISATION = Organisation(organisation_id="demo", name="Demo portfolio")
DEMO_DOMAIN = "demo.example"
ACTOR = "sems-run-demo"
PASSWORD_BYTES = 12
"""16 URL-safe characters, 96 random bits: a demo's, but no easy guess."""
ASSIGNED = {PersonRole.FACILITY_MANAGER: 1, PersonRole.OPERATOR: 2, PersonRole.VIEWER: 1}
"""How many of the organisation's facilities (the first ones) each scoped role is assigned."""


@dataclass(frozen=True, slots=True)
class DemoUser:
    email: str
    role: PersonRole
    password: str
    facility_ids: tuple[str, ...]


def demo_email(role: PersonRole) -> str:
    return f"{role.value.replace('_', '-')}@{DEMO_DOMAIN}"


async def provision(identity: IdentityStore, hasher: PasswordHasher,
                    facility_ids: Sequence[str], *, at: datetime) -> list[DemoUser]:
    """The demo organisation with the facilities no organisation owns, and the demo users
    that do not exist yet: those made now, with their passwords (none at a restart)."""
    org = DEMO_ORGANISATION.organisation_id
    audit = AuditRecord(at=at, actor_id=ACTOR, action=AuditAction.ORGANISATION_CREATED,
                        organisation_id=org, target=f"organisation:{org}")
    if await identity.organisation(org) is None:
        await identity.add_organisation(DEMO_ORGANISATION, audit=audit)
    for facility_id in facility_ids:
        if await identity.facility_organisation(facility_id) is None:
            await identity.set_facility_organisation(facility_id, org, audit=audit.model_copy(
                update={"action": AuditAction.FACILITY_ORGANISATION_SET,
                        "target": f"facility:{facility_id}"}))
    owned = await identity.organisation_facilities(org)
    made = []
    for role in PersonRole:
        email = demo_email(role)
        if await identity.user_by_email(email) is not None:
            continue
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        assigned = tuple(owned[:ASSIGNED.get(role, 0)])
        user = User(user_id=f"u-{uuid.uuid4().hex[:16]}", email=email,
                    display_name=f"Demo {role.value.replace('_', ' ')}", created_at=at)
        await create_member(identity, hasher, actor=PersonRole.ADMIN, organisation_id=org,
                            user=user, role=role, password=password, facility_ids=assigned,
                            actor_id=ACTOR, at=at)
        made.append(DemoUser(email=email, role=role, password=password,
                             facility_ids=assigned))
    return made


def demo_block(users: Sequence[DemoUser], *, base_url: str) -> str:
    """What ``sems run`` prints once, when it made the demo users."""
    title = f"{'=' * 30} DEMO ACCOUNTS (passwords shown once) {'=' * 30}"
    width = max(len(u.email) for u in users)
    lines = [title,
             f"  organisation {DEMO_ORGANISATION.organisation_id} "
             f"({DEMO_ORGANISATION.name}); sign in at {base_url}/api/auth/login",
             *(f"  {u.role.value:<17} {u.email:<{width}}  {u.password}"
               + (f"  (facilities {', '.join(u.facility_ids)})" if u.facility_ids else "")
               for u in users),
             "  Demo accounts for trying SEMS only. Lost a password? "
             "sems user reset-password EMAIL",
             "=" * len(title)]
    return "\n".join(lines)
