"""People in PostgreSQL (``IdentityStore``); schema in migration 0008.

Each change is one transaction. The rules across rows are checked inside it under row locks,
so that two concurrent changes cannot both pass a check that only one may (two admins
demoting each other): a change to a user or their memberships first locks the user's row,
then every organisation it concerns in one statement in id order (``FOR NO KEY UPDATE``,
which leaves foreign-key checks of concurrent inserts unblocked). That ordering avoids the
deadlocks we know of, but PostgreSQL may still pick a deadlock victim (or a serialisation
failure) among changes that lock in other orders (a facility's row with organisations,
cascades): such a transaction is run again, up to ``RETRY_ATTEMPTS`` times in all
(``PostgresDb.transact``), before it is ``StoreUnavailable``. Unique emails are the
constraint's; a violation that a check before it could not see (a concurrent insert) is
mapped to the same error, and any other integrity error to ``Conflict``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

from connectors.identity_input import checked_inputs, sign_in_account
from connectors.postgres.db import Conn, PostgresDb
from connectors.postgres.identity_records import _lock, _one
from connectors.postgres.identity_resets import PostgresPasswordResets
from schemas.identity import (
    AuditRecord,
    Membership,
    Organisation,
    PersonRole,
    User,
    UserStatus,
    normalise_email,
)
from tables.ports.identity import (
    Audits,
    Conflict,
    EmailTaken,
    LastAdmin,
    NotFound,
    WrongOrganisation,
)

_USER = ("user_id, email, display_name, status, created_at, last_sign_in_at, password_hash, "
         "oidc_issuer, oidc_subject")
_ACTIVE_ADMINS = ("SELECT count(*) FROM memberships m JOIN users u USING (user_id) WHERE "
                  "m.organisation_id = %s AND m.role = 'admin' AND u.status = 'active'")


def _user(r: TupleRow) -> User:
    return User(user_id=r[0], email=r[1], display_name=r[2], status=r[3], created_at=r[4],
                last_sign_in_at=r[5], password_hash=r[6], oidc_issuer=r[7], oidc_subject=r[8])


async def _lock_organisations(conn: Conn, organisation_ids: set[str]) -> set[str]:
    """Locks the organisations in one statement, in id order (so that two changes locking
    overlapping sets wait for each other instead of deadlocking): those that exist."""
    cursor = await conn.execute(
        "SELECT organisation_id FROM organisations WHERE organisation_id = ANY(%s) "
        "ORDER BY organisation_id FOR NO KEY UPDATE", (sorted(organisation_ids),))
    return {r[0] for r in await cursor.fetchall()}


async def _keeping_admins(conn: Conn, user_id: str, change: Callable[[], Awaitable[object]],
                          also: str | None = None) -> None:
    """Runs ``change`` with the organisations where the user is an admin (and ``also``,
    ``NotFound`` when it does not exist) locked, and refuses it (``LastAdmin``) if one of
    them had an active admin before it and has none after. The caller holds the user's row
    lock, so the set of the user's admin memberships read here cannot change meanwhile."""
    cursor = await conn.execute("SELECT organisation_id FROM memberships WHERE user_id = %s "
                                "AND role = 'admin'", (user_id,))
    wanted = {r[0] for r in await cursor.fetchall()} | ({also} if also else set())
    if also is not None and also not in await _lock_organisations(conn, wanted):
        raise NotFound(f"organisation {also}")
    if also is None and wanted:
        await _lock_organisations(conn, wanted)
    orgs = sorted(wanted)
    before = {}
    for org in orgs:
        row = await _one(conn, _ACTIVE_ADMINS, (org,))
        before[org] = 0 if row is None else int(row[0])
    await change()
    for org in orgs:
        row = await _one(conn, _ACTIVE_ADMINS, (org,))
        if before[org] > 0 and (row is None or int(row[0]) == 0):
            raise LastAdmin(org)


async def _check_user(conn: Conn, user: User) -> None:
    if await _one(conn, "SELECT 1 FROM users WHERE email = %s AND user_id <> %s",
                  (user.email, user.user_id)) is not None:
        raise EmailTaken(user.email)
    if user.oidc_issuer is not None and await _one(
            conn, "SELECT 1 FROM users WHERE oidc_issuer = %s AND oidc_subject = %s AND "
            "user_id <> %s", (user.oidc_issuer, user.oidc_subject, user.user_id)) is not None:
        raise Conflict("another account already has that OIDC identity")


def _unique(exc: psycopg.errors.UniqueViolation, user: User) -> Exception:
    if exc.diag.constraint_name == "users_email_key":
        return EmailTaken(user.email)
    if exc.diag.constraint_name == "users_oidc_key":
        return Conflict("another account already has that OIDC identity")
    return Conflict(f"user {user.user_id} already exists")


@checked_inputs
class PostgresIdentity(PostgresPasswordResets):
    """``IdentityStore`` through the store's pool (``PostgresDb``); the audit log, personal
    tokens and sign-in failures are in the base class."""

    def __init__(self, db: PostgresDb) -> None:
        super().__init__(db)
        self._db = db

    # -- organisations ---------------------------------------------------------------------

    async def add_organisation(self, organisation: Organisation, *,
                               audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            cursor = await conn.execute(
                "INSERT INTO organisations (organisation_id, name) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING", (organisation.organisation_id, organisation.name))
            if cursor.rowcount == 0:
                raise Conflict(f"organisation {organisation.organisation_id} already exists")

        await self._change("add_organisation", audit, fn)

    async def update_organisation(self, organisation: Organisation, *,
                                  audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            cursor = await conn.execute(
                "UPDATE organisations SET name = %s WHERE organisation_id = %s",
                (organisation.name, organisation.organisation_id))
            if cursor.rowcount == 0:
                raise NotFound(f"organisation {organisation.organisation_id}")

        await self._change("update_organisation", audit, fn)

    async def delete_organisation(self, organisation_id: str, *,
                                  audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "organisations", "organisation_id", organisation_id,
                        "organisation")
            if await _one(conn, "SELECT 1 FROM memberships WHERE organisation_id = %s UNION ALL "
                          "SELECT 1 FROM organisation_facilities WHERE organisation_id = %s",
                          (organisation_id, organisation_id)) is not None:
                raise Conflict(f"organisation {organisation_id} still has members or "
                               "facilities")
            await conn.execute("DELETE FROM organisations WHERE organisation_id = %s",
                               (organisation_id,))

        await self._change("delete_organisation", audit, fn)

    async def organisation(self, organisation_id: str) -> Organisation | None:
        rows = await self._db.read("organisation", "SELECT organisation_id, name FROM "
                                   "organisations WHERE organisation_id = %s",
                                   (organisation_id,))
        return Organisation(organisation_id=rows[0][0], name=rows[0][1]) if rows else None

    async def organisations(self) -> list[Organisation]:
        rows = await self._db.read("organisations", "SELECT organisation_id, name FROM "
                                   "organisations ORDER BY organisation_id")
        return [Organisation(organisation_id=r[0], name=r[1]) for r in rows]

    async def set_facility_organisation(self, facility_id: str, organisation_id: str, *,
                                        audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "facilities", "facility_id", facility_id, "facility")
            current = await _one(conn, "SELECT organisation_id FROM organisation_facilities "
                                 "WHERE facility_id = %s", (facility_id,))
            # The facility's present organisation too, so that a concurrent deletion of it or
            # assignment to it waits; in id order with the new one, in one statement.
            wanted = {organisation_id} | ({current[0]} if current else set())
            if organisation_id not in await _lock_organisations(conn, wanted):
                raise NotFound(f"organisation {organisation_id}")
            await conn.execute("DELETE FROM facility_assignments WHERE facility_id = %s AND "
                               "organisation_id <> %s", (facility_id, organisation_id))
            await conn.execute(
                "INSERT INTO organisation_facilities (facility_id, organisation_id) VALUES "
                "(%s, %s) ON CONFLICT (facility_id) DO UPDATE SET organisation_id = "
                "excluded.organisation_id", (facility_id, organisation_id))

        await self._change("set_facility_organisation", audit, fn)

    async def facility_organisation(self, facility_id: str) -> str | None:
        rows = await self._db.read("facility_organisation", "SELECT organisation_id FROM "
                                   "organisation_facilities WHERE facility_id = %s",
                                   (facility_id,))
        return str(rows[0][0]) if rows else None

    async def organisation_facilities(self, organisation_id: str) -> list[str]:
        rows = await self._db.read("organisation_facilities", "SELECT facility_id FROM "
                                   "organisation_facilities WHERE organisation_id = %s "
                                   "ORDER BY facility_id", (organisation_id,))
        return [r[0] for r in rows]

    # -- users -----------------------------------------------------------------------------

    async def add_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _check_user(conn, user)
            await conn.execute(
                f"INSERT INTO users ({_USER}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (user.user_id, user.email, user.display_name, user.status, user.created_at,
                 user.last_sign_in_at, user.password_hash, user.oidc_issuer,
                 user.oidc_subject))

        await self._user_change("add_user", user, audit, fn)

    async def update_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "users", "user_id", user.user_id, "user")
            await _check_user(conn, user)
            await _keeping_admins(conn, user.user_id, lambda: conn.execute(
                "UPDATE users SET email = %s, display_name = %s, status = %s, "
                "oidc_issuer = %s, oidc_subject = %s WHERE user_id = %s",
                (user.email, user.display_name, user.status, user.oidc_issuer,
                 user.oidc_subject, user.user_id)))

        await self._user_change("update_user", user, audit, fn)

    async def _user_change(self, op: str, user: User, audit: Audits,
                           fn: Callable[[Conn], Awaitable[None]]) -> None:
        async def mapped(conn: Conn) -> None:
            try:
                await fn(conn)
            except psycopg.errors.UniqueViolation as exc:
                raise _unique(exc, user) from None

        await self._change(op, audit, mapped)

    async def set_user_status(self, user_id: str, status: UserStatus, *,
                              audit: Audits = None) -> bool:
        async def fn(conn: Conn) -> bool:
            row = await _one(conn, "SELECT status FROM users WHERE user_id = %s "
                             "FOR NO KEY UPDATE", (user_id,))
            if row is None:
                raise NotFound(f"user {user_id}")
            if row[0] == status:
                return False
            await _keeping_admins(conn, user_id, lambda: conn.execute(
                "UPDATE users SET status = %s WHERE user_id = %s", (status, user_id)))
            return True

        return await self._change("set_user_status", audit, fn, changed=bool)

    async def set_password_hash(self, user_id: str, password_hash: str | None, *,
                                audit: Audits = None) -> None:
        async def fn(conn: Conn) -> None:
            cursor = await conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s",
                                        (password_hash, user_id))
            if cursor.rowcount == 0:
                raise NotFound(f"user {user_id}")

        await self._change("set_password_hash", audit, fn)

    async def delete_user(self, user_id: str, *, audit: Audits = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "users", "user_id", user_id, "user")
            await _keeping_admins(conn, user_id, lambda: conn.execute(
                "DELETE FROM users WHERE user_id = %s", (user_id,)))  # the rest cascades

        await self._change("delete_user", audit, fn)

    async def user(self, user_id: str) -> User | None:
        rows = await self._db.read("user", f"SELECT {_USER} FROM users WHERE user_id = %s",
                                   (user_id,))
        return _user(rows[0]) if rows else None

    async def user_by_email(self, email: str) -> User | None:
        try:
            normalised = normalise_email(email)
        except ValueError:
            return None
        rows = await self._db.read("user_by_email", f"SELECT {_USER} FROM users WHERE "
                                   "email = %s", (normalised,))
        return _user(rows[0]) if rows else None

    async def user_by_oidc(self, issuer: str, subject: str) -> User | None:
        rows = await self._db.read("user_by_oidc", f"SELECT {_USER} FROM users WHERE "
                                   "oidc_issuer = %s AND oidc_subject = %s", (issuer, subject))
        return _user(rows[0]) if rows else None

    async def users(self, *, organisation_id: str | None = None) -> list[User]:
        rows = await self._db.read(
            "users", f"SELECT {_USER} FROM users WHERE %s::text IS NULL OR user_id IN "
            "(SELECT user_id FROM memberships WHERE organisation_id = %s) ORDER BY user_id",
            (organisation_id, organisation_id))
        return [_user(r) for r in rows]

    # -- memberships and assignments -------------------------------------------------------

    async def set_membership(self, user_id: str, organisation_id: str, role: PersonRole, *,
                             audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "users", "user_id", user_id, "user")
            await _keeping_admins(conn, user_id, lambda: conn.execute(
                "INSERT INTO memberships (user_id, organisation_id, role) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id, organisation_id) DO UPDATE SET role = excluded.role",
                (user_id, organisation_id, role.value)), also=organisation_id)

        await self._change("set_membership", audit, fn)

    async def remove_membership(self, user_id: str, organisation_id: str, *,
                                audit: Audits = None) -> None:
        async def delete(conn: Conn) -> None:
            await conn.execute("DELETE FROM personal_tokens WHERE user_id = %s AND "
                               "organisation_id = %s", (user_id, organisation_id))
            await conn.execute("DELETE FROM memberships WHERE user_id = %s AND "
                               "organisation_id = %s", (user_id, organisation_id))

        async def fn(conn: Conn) -> None:
            await _lock(conn, "users", "user_id", user_id, "user")
            if await _one(conn, "SELECT 1 FROM memberships WHERE user_id = %s AND "
                          "organisation_id = %s", (user_id, organisation_id)) is None:
                raise NotFound(f"membership of user {user_id} in {organisation_id}")
            await _keeping_admins(conn, user_id, lambda: delete(conn), also=organisation_id)

        await self._change("remove_membership", audit, fn)

    async def membership(self, user_id: str, organisation_id: str) -> Membership | None:
        found = await self.memberships(user_id=user_id, organisation_id=organisation_id)
        return found[0] if found else None

    async def memberships(self, *, user_id: str | None = None,
                          organisation_id: str | None = None) -> list[Membership]:
        rows = await self._db.read(
            "memberships", "SELECT m.user_id, m.organisation_id, m.role, coalesce(array_agg("
            "a.facility_id ORDER BY a.facility_id) FILTER (WHERE a.facility_id IS NOT NULL), "
            "'{}') FROM memberships m LEFT JOIN facility_assignments a USING (user_id, "
            "organisation_id) WHERE (%s::text IS NULL OR m.user_id = %s) AND "
            "(%s::text IS NULL OR m.organisation_id = %s) GROUP BY m.user_id, "
            "m.organisation_id, m.role ORDER BY m.organisation_id, m.user_id",
            (user_id, user_id, organisation_id, organisation_id))
        return [Membership(user_id=r[0], organisation_id=r[1], role=PersonRole(r[2]),
                           facility_ids=tuple(r[3])) for r in rows]

    async def set_assignments(self, user_id: str, organisation_id: str,
                              facility_ids: Sequence[str], *,
                              audit: AuditRecord | None = None) -> None:
        wanted = sorted(set(facility_ids))

        async def fn(conn: Conn) -> None:
            await _lock(conn, "organisations", "organisation_id", organisation_id,
                        "organisation")
            if await _one(conn, "SELECT 1 FROM memberships WHERE user_id = %s AND "
                          "organisation_id = %s", (user_id, organisation_id)) is None:
                raise NotFound(f"membership of user {user_id} in {organisation_id}")
            cursor = await conn.execute("SELECT facility_id FROM organisation_facilities "
                                        "WHERE organisation_id = %s", (organisation_id,))
            ours = {r[0] for r in await cursor.fetchall()}
            if foreign := [f for f in wanted if f not in ours]:
                raise WrongOrganisation(organisation_id, foreign)
            await conn.execute("DELETE FROM facility_assignments WHERE user_id = %s AND "
                               "organisation_id = %s", (user_id, organisation_id))
            await conn.execute(
                "INSERT INTO facility_assignments (user_id, organisation_id, facility_id) "
                "SELECT %s, %s, unnest(%s::text[])", (user_id, organisation_id, wanted))

        await self._change("set_assignments", audit, fn)

    async def record_sign_in_success(self, user_id: str, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> None:
        key = sign_in_account(account)

        async def fn(conn: Conn) -> None:
            cursor = await conn.execute("UPDATE users SET last_sign_in_at = %s WHERE "
                                        "user_id = %s", (at, user_id))
            if cursor.rowcount == 0:
                raise NotFound(f"user {user_id}")
            await conn.execute("DELETE FROM sign_in_failures WHERE account = %s", (key,))

        await self._change("record_sign_in_success", audit, fn)
