"""People in the embedded store (``IdentityStore``; tables of migration 0002).

Each change runs in one ``BEGIN IMMEDIATE`` transaction on the writer connection
(``SqliteDb.write``), which serialises writers: the rules across rows (the last active admin,
assignments within the organisation, unique emails) are checked inside it and cannot race.
A domain error raised there rolls the transaction back. Times are epoch microseconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from connectors.epoch import dt, us
from connectors.identity_input import checked_inputs, sign_in_account
from connectors.sqlite.db import SqliteDb
from connectors.sqlite.identity_records import SqliteIdentityRecords
from schemas.identity import (
    AuditRecord,
    Membership,
    Organisation,
    PasswordReset,
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
    check_password_reset,
)

_RESET = ("token_sha256, user_id, organisation_id, created_at_us, expires_at_us, created_by, "
          "used_at_us")


def _reset(r: tuple[Any, ...]) -> PasswordReset:
    return PasswordReset(token_sha256=r[0], user_id=r[1], organisation_id=r[2],
                         created_at=dt(r[3]), expires_at=dt(r[4]), created_by=r[5],
                         used_at=None if r[6] is None else dt(r[6]))


_USER = ("user_id, email, display_name, status, created_at_us, last_sign_in_at_us, "
         "password_hash, oidc_issuer, oidc_subject")


def _user(r: tuple[Any, ...]) -> User:
    return User(user_id=r[0], email=r[1], display_name=r[2], status=r[3],
                created_at=dt(r[4]), last_sign_in_at=None if r[5] is None else dt(r[5]),
                password_hash=r[6], oidc_issuer=r[7], oidc_subject=r[8])


def _exists(conn: sqlite3.Connection, table: str, column: str, value: str) -> bool:
    return conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (value,)).fetchone() \
        is not None


def _need(conn: sqlite3.Connection, table: str, column: str, value: str, what: str) -> None:
    if not _exists(conn, table, column, value):
        raise NotFound(f"{what} {value}")


def _active_admins(conn: sqlite3.Connection, organisation_id: str) -> int:
    return int(conn.execute(
        "SELECT count(*) FROM memberships m JOIN users u USING (user_id) WHERE "
        "m.organisation_id = ? AND m.role = 'admin' AND u.status = 'active'",
        (organisation_id,)).fetchone()[0])


def _keeping_admins(conn: sqlite3.Connection, user_id: str,
                    change: Callable[[], object]) -> None:
    """Runs ``change`` and refuses it (``LastAdmin``) if an organisation where the user is
    an admin had an active admin before it and has none after."""
    orgs = [r[0] for r in conn.execute(
        "SELECT organisation_id FROM memberships WHERE user_id = ? AND role = 'admin' "
        "ORDER BY organisation_id", (user_id,))]
    before = {org: _active_admins(conn, org) for org in orgs}
    change()
    for org in orgs:
        if before[org] > 0 and _active_admins(conn, org) == 0:
            raise LastAdmin(org)


def _check_user(conn: sqlite3.Connection, user: User) -> None:
    taken = conn.execute("SELECT user_id FROM users WHERE email = ? AND user_id <> ?",
                         (user.email, user.user_id)).fetchone()
    if taken is not None:
        raise EmailTaken(user.email)
    if user.oidc_issuer is not None and conn.execute(
            "SELECT 1 FROM users WHERE oidc_issuer = ? AND oidc_subject = ? AND user_id <> ?",
            (user.oidc_issuer, user.oidc_subject, user.user_id)).fetchone() is not None:
        raise Conflict("another account already has that OIDC identity")


def _memberships(rows: list[tuple[Any, ...]],
                 assigned: list[tuple[Any, ...]]) -> list[Membership]:
    facilities: dict[tuple[str, str], list[str]] = {}
    for user_id, org, facility_id in assigned:
        facilities.setdefault((user_id, org), []).append(facility_id)
    return [Membership(user_id=u, organisation_id=o, role=PersonRole(role),
                       facility_ids=tuple(facilities.get((u, o), ())))
            for u, o, role in rows]


@checked_inputs
class SqliteIdentity(SqliteIdentityRecords):
    """``IdentityStore`` through the file's connection object (``SqliteDb``); the audit log,
    personal tokens and sign-in failures are in the base class."""

    def __init__(self, db: SqliteDb) -> None:
        super().__init__(db)
        self._db = db

    # -- organisations ---------------------------------------------------------------------

    async def add_organisation(self, organisation: Organisation, *,
                               audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if _exists(conn, "organisations", "organisation_id", organisation.organisation_id):
                raise Conflict(f"organisation {organisation.organisation_id} already exists")
            conn.execute("INSERT INTO organisations (organisation_id, name) VALUES (?, ?)",
                         (organisation.organisation_id, organisation.name))

        await self._write("add_organisation", audit, fn)

    async def update_organisation(self, organisation: Organisation, *,
                                  audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE organisations SET name = ? WHERE organisation_id = ?",
                            (organisation.name, organisation.organisation_id)).rowcount == 0:
                raise NotFound(f"organisation {organisation.organisation_id}")

        await self._write("update_organisation", audit, fn)

    async def delete_organisation(self, organisation_id: str, *,
                                  audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "organisations", "organisation_id", organisation_id, "organisation")
            if (_exists(conn, "memberships", "organisation_id", organisation_id)
                    or _exists(conn, "organisation_facilities", "organisation_id",
                               organisation_id)):
                raise Conflict(f"organisation {organisation_id} still has members or "
                               "facilities")
            conn.execute("DELETE FROM organisations WHERE organisation_id = ?",
                         (organisation_id,))

        await self._write("delete_organisation", audit, fn)

    async def organisation(self, organisation_id: str) -> Organisation | None:
        rows = await self._db.read("SELECT organisation_id, name FROM organisations "
                                   "WHERE organisation_id = ?", (organisation_id,))
        return Organisation(organisation_id=rows[0][0], name=rows[0][1]) if rows else None

    async def organisations(self) -> list[Organisation]:
        rows = await self._db.read("SELECT organisation_id, name FROM organisations "
                                   "ORDER BY organisation_id")
        return [Organisation(organisation_id=r[0], name=r[1]) for r in rows]

    async def set_facility_organisation(self, facility_id: str, organisation_id: str, *,
                                        audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "facilities", "facility_id", facility_id, "facility")
            _need(conn, "organisations", "organisation_id", organisation_id, "organisation")
            conn.execute("DELETE FROM facility_assignments WHERE facility_id = ? AND "
                         "organisation_id <> ?", (facility_id, organisation_id))
            conn.execute("INSERT INTO organisation_facilities (facility_id, organisation_id) "
                         "VALUES (?, ?) ON CONFLICT (facility_id) DO UPDATE SET "
                         "organisation_id = excluded.organisation_id",
                         (facility_id, organisation_id))

        await self._write("set_facility_organisation", audit, fn)

    async def facility_organisation(self, facility_id: str) -> str | None:
        rows = await self._db.read("SELECT organisation_id FROM organisation_facilities "
                                   "WHERE facility_id = ?", (facility_id,))
        return str(rows[0][0]) if rows else None

    async def organisation_facilities(self, organisation_id: str) -> list[str]:
        rows = await self._db.read("SELECT facility_id FROM organisation_facilities WHERE "
                                   "organisation_id = ? ORDER BY facility_id",
                                   (organisation_id,))
        return [r[0] for r in rows]

    # -- users -----------------------------------------------------------------------------

    async def add_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if _exists(conn, "users", "user_id", user.user_id):
                raise Conflict(f"user {user.user_id} already exists")
            _check_user(conn, user)
            conn.execute(f"INSERT INTO users ({_USER}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                user.user_id, user.email, user.display_name, user.status, us(user.created_at),
                None if user.last_sign_in_at is None else us(user.last_sign_in_at),
                user.password_hash, user.oidc_issuer, user.oidc_subject))

        await self._write("add_user", audit, fn)

    async def update_user(self, user: User, *, audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "users", "user_id", user.user_id, "user")
            _check_user(conn, user)
            _keeping_admins(conn, user.user_id, lambda: conn.execute(
                "UPDATE users SET email = ?, display_name = ?, status = ?, oidc_issuer = ?, "
                "oidc_subject = ? WHERE user_id = ?",
                (user.email, user.display_name, user.status, user.oidc_issuer,
                 user.oidc_subject, user.user_id)))

        await self._write("update_user", audit, fn)

    async def set_user_status(self, user_id: str, status: UserStatus, *,
                              audit: Audits = None) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT status FROM users WHERE user_id = ?",
                               (user_id,)).fetchone()
            if row is None:
                raise NotFound(f"user {user_id}")
            if row[0] == status:
                return False
            _keeping_admins(conn, user_id, lambda: conn.execute(
                "UPDATE users SET status = ? WHERE user_id = ?", (status, user_id)))
            return True

        return await self._write("set_user_status", audit, fn, changed=bool)

    async def set_password_hash(self, user_id: str, password_hash: str | None, *,
                                audit: Audits = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?",
                            (password_hash, user_id)).rowcount == 0:
                raise NotFound(f"user {user_id}")

        await self._write("set_password_hash", audit, fn)

    async def delete_user(self, user_id: str, *, audit: Audits = None) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            for table in ("facility_assignments", "personal_tokens", "memberships", "users"):
                conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))

        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "users", "user_id", user_id, "user")
            _keeping_admins(conn, user_id, lambda: delete(conn))

        await self._write("delete_user", audit, fn)

    async def user(self, user_id: str) -> User | None:
        rows = await self._db.read(f"SELECT {_USER} FROM users WHERE user_id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    async def user_by_email(self, email: str) -> User | None:
        try:
            normalised = normalise_email(email)
        except ValueError:
            return None
        rows = await self._db.read(f"SELECT {_USER} FROM users WHERE email = ?", (normalised,))
        return _user(rows[0]) if rows else None

    async def user_by_oidc(self, issuer: str, subject: str) -> User | None:
        rows = await self._db.read(f"SELECT {_USER} FROM users WHERE oidc_issuer = ? AND "
                                   "oidc_subject = ?", (issuer, subject))
        return _user(rows[0]) if rows else None

    async def users(self, *, organisation_id: str | None = None) -> list[User]:
        if organisation_id is None:
            rows = await self._db.read(f"SELECT {_USER} FROM users ORDER BY user_id")
        else:
            rows = await self._db.read(
                f"SELECT {_USER} FROM users WHERE user_id IN (SELECT user_id FROM memberships "
                "WHERE organisation_id = ?) ORDER BY user_id", (organisation_id,))
        return [_user(r) for r in rows]

    # -- memberships and assignments -------------------------------------------------------

    async def set_membership(self, user_id: str, organisation_id: str, role: PersonRole, *,
                             audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "users", "user_id", user_id, "user")
            _need(conn, "organisations", "organisation_id", organisation_id, "organisation")
            _keeping_admins(conn, user_id, lambda: conn.execute(
                "INSERT INTO memberships (user_id, organisation_id, role) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, organisation_id) DO UPDATE SET role = excluded.role",
                (user_id, organisation_id, role.value)))

        await self._write("set_membership", audit, fn)

    async def remove_membership(self, user_id: str, organisation_id: str, *,
                                audit: Audits = None) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            for table in ("facility_assignments", "personal_tokens", "memberships"):
                conn.execute(f"DELETE FROM {table} WHERE user_id = ? AND organisation_id = ?",
                             (user_id, organisation_id))

        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM memberships WHERE user_id = ? AND "
                            "organisation_id = ?", (user_id, organisation_id)).fetchone() is None:
                raise NotFound(f"membership of user {user_id} in {organisation_id}")
            _keeping_admins(conn, user_id, lambda: delete(conn))

        await self._write("remove_membership", audit, fn)

    async def membership(self, user_id: str, organisation_id: str) -> Membership | None:
        found = await self.memberships(user_id=user_id, organisation_id=organisation_id)
        return found[0] if found else None

    async def memberships(self, *, user_id: str | None = None,
                          organisation_id: str | None = None) -> list[Membership]:
        where, params = "WHERE (? IS NULL OR user_id = ?) AND (? IS NULL OR organisation_id = ?)", (
            user_id, user_id, organisation_id, organisation_id)
        rows = await self._db.read(f"SELECT user_id, organisation_id, role FROM memberships "
                                   f"{where} ORDER BY organisation_id, user_id", params)
        assigned = await self._db.read(
            f"SELECT user_id, organisation_id, facility_id FROM facility_assignments {where} "
            "ORDER BY facility_id", params)
        return _memberships(rows, assigned)

    async def set_assignments(self, user_id: str, organisation_id: str,
                              facility_ids: Sequence[str], *,
                              audit: AuditRecord | None = None) -> None:
        wanted = sorted(set(facility_ids))

        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM memberships WHERE user_id = ? AND "
                            "organisation_id = ?", (user_id, organisation_id)).fetchone() is None:
                raise NotFound(f"membership of user {user_id} in {organisation_id}")
            ours = {r[0] for r in conn.execute(
                "SELECT facility_id FROM organisation_facilities WHERE organisation_id = ?",
                (organisation_id,))}
            if foreign := [f for f in wanted if f not in ours]:
                raise WrongOrganisation(organisation_id, foreign)
            conn.execute("DELETE FROM facility_assignments WHERE user_id = ? AND "
                         "organisation_id = ?", (user_id, organisation_id))
            conn.executemany("INSERT INTO facility_assignments (user_id, organisation_id, "
                             "facility_id) VALUES (?, ?, ?)",
                             [(user_id, organisation_id, f) for f in wanted])

        await self._write("set_assignments", audit, fn)

    async def record_sign_in_success(self, user_id: str, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> None:
        key = sign_in_account(account)

        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE users SET last_sign_in_at_us = ? WHERE user_id = ?",
                            (us(at), user_id)).rowcount == 0:
                raise NotFound(f"user {user_id}")
            conn.execute("DELETE FROM sign_in_failures WHERE account = ?", (key,))

        await self._write("record_sign_in_success", audit, fn)

    # -- password resets (migration 0003) --------------------------------------------------

    async def add_password_reset(self, reset: PasswordReset, *,
                                 audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            _need(conn, "users", "user_id", reset.user_id, "user")
            if _exists(conn, "password_resets", "token_sha256", reset.token_sha256):
                raise Conflict("that password-reset token exists already")
            conn.execute("DELETE FROM password_resets WHERE user_id = ? AND used_at_us IS NULL",
                         (reset.user_id,))
            conn.execute(f"INSERT INTO password_resets ({_RESET}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (reset.token_sha256, reset.user_id, reset.organisation_id,
                          us(reset.created_at), us(reset.expires_at), reset.created_by,
                          None if reset.used_at is None else us(reset.used_at)))

        await self._write("add_password_reset", audit, fn)

    async def password_reset(self, token_sha256: str) -> PasswordReset | None:
        rows = await self._db.read(f"SELECT {_RESET} FROM password_resets WHERE "
                                   "token_sha256 = ?", (token_sha256,))
        return _reset(rows[0]) if rows else None

    async def use_password_reset(self, token_sha256: str, password_hash: str, *,
                                 at: datetime, audit: AuditRecord | None = None) -> str:
        def fn(conn: sqlite3.Connection) -> str:
            row = conn.execute(f"SELECT {_RESET} FROM password_resets WHERE token_sha256 = ?",
                               (token_sha256,)).fetchone()
            reset = None if row is None else _reset(row)
            status = None if reset is None else conn.execute(
                "SELECT status FROM users WHERE user_id = ?", (reset.user_id,)).fetchone()
            used = check_password_reset(reset, None if status is None else status[0], at=at)
            conn.execute("UPDATE password_resets SET used_at_us = ? WHERE token_sha256 = ?",
                         (us(at), token_sha256))
            conn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?",
                         (password_hash, used.user_id))
            return used.user_id

        return await self._write("use_password_reset", audit, fn)
