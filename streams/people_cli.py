"""``sems org add|list`` and ``sems user add|list|set-role|assign|disable|reset-password``
(issue 16): the operator at the machine manages organisations and people, with no role
above theirs (the first admin is made here). The rules are ``agents/accounts.py``'s and
``agents/password_reset.py``'s; every change is audited with the actor ``cli``. A refusal
is a message on stderr and exit status 2; nothing is half-written."""

from __future__ import annotations

import argparse
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from agents.accounts import (
    NotAllowed,
    assign_facilities,
    create_member,
    disable_user,
    set_role,
)
from agents.identity.passwords import PasswordRejected
from agents.password_reset import UserDisabled, issue_password_reset
from schemas.identity import AuditAction, AuditRecord, Organisation, PersonRole, User
from streams.settings import Settings
from tables.ports.identity import IdentityError, NotFound, SessionStore
from tables.ports.store import Store

ACTOR = "cli"
GENERATED_PASSWORD_BYTES = 18
"""A generated password: 24 URL-safe characters, 144 random bits."""


class Refused(Exception):
    """Bad input at the command line: the message is the user's."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    org = sub.add_parser("org", help="organisations (portfolio owners' customers)")
    org_sub = org.add_subparsers(dest="action", required=True)
    add = org_sub.add_parser("add", help="add an organisation")
    add.add_argument("organisation_id", metavar="ID")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--facility", dest="facilities", action="append", default=[],
                     metavar="ID", help="a registered facility it owns (repeat)")
    listing = org_sub.add_parser("list", help="list organisations")

    user = sub.add_parser("user", help="people who sign in to the API and the dashboard")
    user_sub = user.add_subparsers(dest="action", required=True)
    uadd = user_sub.add_parser("add", help="add a user to an organisation; prints a generated "
                                           "password once unless --password-stdin")
    uadd.add_argument("--email", required=True)
    uadd.add_argument("--name", required=True, help="display name")
    uadd.add_argument("--org", required=True, metavar="ID")
    uadd.add_argument("--role", required=True, choices=[r.value for r in PersonRole])
    uadd.add_argument("--facility", dest="facilities", action="append", default=[],
                      metavar="ID", help="an assigned facility of the organisation (repeat)")
    uadd.add_argument("--password-stdin", action="store_true",
                      help="read the password from the first line of stdin")
    ulist = user_sub.add_parser("list", help="list users and their roles")
    ulist.add_argument("--org", metavar="ID", help="members of this organisation only")
    role = user_sub.add_parser("set-role", help="add a user to an organisation or change "
                                                "their role there")
    role.add_argument("email")
    role.add_argument("organisation_id", metavar="ORG")
    role.add_argument("role", choices=[r.value for r in PersonRole])
    assign = user_sub.add_parser("assign", help="replace a member's assigned facilities")
    assign.add_argument("email")
    assign.add_argument("organisation_id", metavar="ORG")
    assign.add_argument("facilities", nargs="*", metavar="FACILITY")
    disable = user_sub.add_parser("disable", help="disable a user and revoke their sessions")
    disable.add_argument("email")
    reset = user_sub.add_parser("reset-password", help="print a one-time password-reset "
                                                       "token for the user")
    reset.add_argument("email")
    for p in (add, listing, uadd, ulist, role, assign, disable, reset):
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--profile", choices=["embedded", "production"])


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from core.metrics import Metrics
    from streams.stores import build_store

    store = build_store(settings, Metrics())
    await store.open()
    try:
        if args.command == "org":
            await (_add_org(store, args) if args.action == "add" else _list_orgs(store))
        else:
            await _user(settings, store, args)
    except (Refused, IdentityError, NotAllowed, PasswordRejected, UserDisabled) as exc:
        print(f"sems: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        print(f"sems: {problems}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    return 0


def _audit(action: AuditAction, *, organisation_id: str | None, target: str,
           at: datetime) -> AuditRecord:
    return AuditRecord(at=at, actor_id=ACTOR, action=action, organisation_id=organisation_id,
                       target=target)


async def _add_org(store: Store, args: argparse.Namespace) -> None:
    organisation = Organisation(organisation_id=args.organisation_id, name=args.name)
    known = {f.facility_id for f in await store.facilities()}
    if unknown := sorted(set(args.facilities) - known):
        raise Refused(f"unknown facilities: {', '.join(unknown)} (sems facilities import)")
    now = datetime.now(UTC)
    await store.add_organisation(organisation, audit=_audit(
        AuditAction.ORGANISATION_CREATED, organisation_id=organisation.organisation_id,
        target=f"organisation:{organisation.organisation_id}", at=now))
    for facility_id in sorted(set(args.facilities)):
        await store.set_facility_organisation(facility_id, organisation.organisation_id,
                                              audit=_audit(
            AuditAction.FACILITY_ORGANISATION_SET, organisation_id=organisation.organisation_id,
            target=f"facility:{facility_id}", at=now))
    print(f"organisation {organisation.organisation_id} ({organisation.name}): "
          f"{len(set(args.facilities))} facilities")


async def _list_orgs(store: Store) -> None:
    print("ORGANISATION\tNAME\tFACILITIES\tMEMBERS")
    for o in await store.organisations():
        facilities = await store.organisation_facilities(o.organisation_id)
        members = await store.memberships(organisation_id=o.organisation_id)
        print(f"{o.organisation_id}\t{o.name}\t{','.join(facilities) or '-'}\t{len(members)}")


async def _organisation(store: Store, organisation_id: str) -> str:
    if await store.organisation(organisation_id) is None:
        raise Refused(f"no organisation {organisation_id!r} (sems org add)")
    return organisation_id


async def _user_of(store: Store, email: str) -> User:
    user = await store.user_by_email(email)
    if user is None:
        raise Refused(f"no user with the email address {email!r}")
    return user


def _read_password() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise Refused("--password-stdin: no password on stdin")
    return line


async def _user(settings: Settings, store: Store, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    if args.action == "add":
        await _add_user(settings, store, args, now)
    elif args.action == "list":
        await _list_users(store, args.org)
    elif args.action == "set-role":
        user = await _user_of(store, args.email)
        org = await _organisation(store, args.organisation_id)
        before = await set_role(store, organisation_id=org, user_id=user.user_id,
                                role=PersonRole(args.role), actor_id=ACTOR, at=now)
        print(f"{user.email}: {before.value if before else 'not a member'} -> {args.role} "
              f"in {org}")
    elif args.action == "assign":
        user = await _user_of(store, args.email)
        org = await _organisation(store, args.organisation_id)
        try:
            await assign_facilities(store, actor=PersonRole.ADMIN, organisation_id=org,
                                    user_id=user.user_id, facility_ids=args.facilities,
                                    actor_id=ACTOR, at=now)
        except NotFound:
            raise Refused(f"{user.email} is not a member of {org} (sems user set-role)") \
                from None
        print(f"{user.email} in {org}: {', '.join(sorted(set(args.facilities))) or 'none'}")
    elif args.action == "disable":
        user = await _user_of(store, args.email)
        async with _sessions(settings, store) as sessions:
            revoked = await disable_user(store, sessions, user.user_id, actor_id=ACTOR, at=now)
        print(f"{user.email} disabled; {revoked} sessions revoked")
    else:
        user = await _user_of(store, args.email)
        issued = await issue_password_reset(store, user_id=user.user_id, actor=None,
                                            organisation_id=None, actor_id=ACTOR, at=now,
                                            ttl_s=settings.password_reset_ttl_s)
        print(f"password-reset token for {user.email} (shown once; valid until "
              f"{issued.reset.expires_at.isoformat(timespec='seconds')}; it replaces earlier "
              f"ones; POST it to /api/auth/password-reset with a new_password):\n"
              f"{issued.token}")


async def _add_user(settings: Settings, store: Store, args: argparse.Namespace,
                    now: datetime) -> None:
    from streams.security import hasher

    org = await _organisation(store, args.org)
    password = (_read_password() if args.password_stdin
                else secrets.token_urlsafe(GENERATED_PASSWORD_BYTES))
    user = User(user_id=f"u-{uuid.uuid4().hex[:16]}", email=args.email,
                display_name=args.name, created_at=now)
    created = await create_member(store, hasher(settings), actor=PersonRole.ADMIN,
                                  organisation_id=org, user=user, role=PersonRole(args.role),
                                  password=password, facility_ids=args.facilities,
                                  actor_id=ACTOR, at=now)
    print(f"user {created.email} ({created.user_id}): {args.role} in {org}")
    if not args.password_stdin:
        print(f"password (shown once):\n{password}")


async def _list_users(store: Store, organisation_id: str | None) -> None:
    if organisation_id is not None:
        await _organisation(store, organisation_id)
    memberships: dict[str, list[str]] = {}
    for m in await store.memberships(organisation_id=organisation_id):
        facilities = ",".join(m.facility_ids) or "-"
        memberships.setdefault(m.user_id, []).append(
            f"{m.organisation_id}:{m.role.value}:{facilities}")
    print("EMAIL\tNAME\tSTATUS\tORGANISATION:ROLE:FACILITIES")
    for u in sorted(await store.users(organisation_id=organisation_id), key=lambda u: u.email):
        print(f"{u.email}\t{u.display_name}\t{u.status}\t"
              f"{' '.join(memberships.get(u.user_id, [])) or '-'}")


@asynccontextmanager
async def _sessions(settings: Settings, store: Store) -> AsyncIterator[SessionStore]:
    """The profile's session store (a disabled user's sessions end at once), its Redis
    client closed after."""
    from streams.settings import SettingsError
    from streams.stores import build_sessions

    sessions = build_sessions(settings, store)
    if sessions is None:
        raise SettingsError("SEMS_REDIS_URL is required for sessions in the production profile")
    try:
        yield sessions
    finally:
        close = getattr(sessions, "close", None)
        if close is not None:
            await close()
