"""The identity store's logs and credentials in the embedded store: the audit log, personal
tokens and sign-in failure counts (the base of ``SqliteIdentity``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from connectors.epoch import dt, us
from connectors.identity_input import sign_in_account
from connectors.sqlite.db import SqliteDb
from schemas.identity import (
    ORGANISATION_WIDE_ROLES,
    SIGN_IN_FAILURE_WINDOW,
    AuditAction,
    AuditRecord,
    PersonalToken,
    PersonRole,
    SignInFailures,
)
from tables.ports.identity import Audits, Conflict, audit_records, check_personal_token

T = TypeVar("T")

def append_audit(conn: sqlite3.Connection, record: AuditRecord) -> int:
    cursor = conn.execute(
        "INSERT INTO audit_log (at_us, actor_id, action, organisation_id, target, "
        "client_address, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (us(record.at), record.actor_id, record.action.value, record.organisation_id,
         record.target, record.client_address, orjson.dumps(record.details).decode()))
    return int(cursor.lastrowid or 0)


def _audit(r: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(audit_id=r[0], at=dt(r[1]), actor_id=r[2], action=AuditAction(r[3]),
                       organisation_id=r[4], target=r[5], client_address=r[6],
                       details=orjson.loads(r[7]))


_TOKEN = ("token_id, user_id, organisation_id, token_sha256, name, role, facility_ids, "
          "created_at_us, expires_at_us, revoked_at_us")


def _token(r: tuple[Any, ...]) -> PersonalToken:
    return PersonalToken(token_id=r[0], user_id=r[1], organisation_id=r[2],
                         token_sha256=r[3], name=r[4], role=PersonRole(r[5]),
                         facility_ids=None if r[6] is None else tuple(orjson.loads(r[6])),
                         created_at=dt(r[7]), expires_at=dt(r[8]),
                         revoked_at=None if r[9] is None else dt(r[9]))


def _failures(r: tuple[Any, ...]) -> SignInFailures:
    return SignInFailures(account=r[0], failures=r[1], first_failed_at=dt(r[2]),
                          last_failed_at=dt(r[3]))


class SqliteIdentityRecords:
    """Audit log, personal tokens, sign-in failures; ``_write``: a change and its audit record
    in one transaction."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def _write(self, op: str, audit: Audits, fn: Callable[[sqlite3.Connection], T], *,
                     changed: Callable[[T], bool] = lambda _: True) -> T:
        """``fn`` and the audit records (when ``changed`` says its result changed something)
        in one transaction; what ``fn`` returned."""
        out: list[T] = []

        def write(conn: sqlite3.Connection) -> None:
            out.append(fn(conn))
            if changed(out[0]):
                for record in audit_records(audit):
                    append_audit(conn, record)

        try:
            await self._db.write(write, op=op)
        except sqlite3.IntegrityError as exc:  # a rule the checks in fn did not foresee
            raise Conflict(f"{op} was refused by the store's constraints ({exc})") from None
        return out[0]

    # -- audit log -------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> int:
        ids: list[int] = []
        await self._db.write(lambda conn: ids.append(append_audit(conn, record)),
                             op="append_audit")
        return ids[0]

    async def audit(self, *, organisation_id: str | None = None, actor_id: str | None = None,
                    target: str | None = None, actions: Sequence[AuditAction] = (),
                    since: datetime | None = None, until: datetime | None = None,
                    before_id: int | None = None, limit: int = 100) -> list[AuditRecord]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("organisation_id = ?", organisation_id),
                              ("actor_id = ?", actor_id), ("target = ?", target),
                              ("at_us >= ?", None if since is None else us(since)),
                              ("at_us < ?", None if until is None else us(until)),
                              ("audit_id < ?", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if actions:
            where.append(f"action IN ({', '.join('?' * len(actions))})")
            params.extend(a.value for a in actions)
        sql = ("SELECT audit_id, at_us, actor_id, action, organisation_id, target, "
               "client_address, details FROM audit_log"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY audit_id DESC LIMIT ?")
        rows = await self._db.read(sql, (*params, max(0, limit)))
        return [_audit(r) for r in rows]

    # -- personal tokens -------------------------------------------------------------------

    async def add_personal_token(self, token: PersonalToken, *,
                                 audit: AuditRecord | None = None) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT role FROM memberships WHERE user_id = ? AND "
                               "organisation_id = ?",
                               (token.user_id, token.organisation_id)).fetchone()
            role = None if row is None else PersonRole(row[0])
            if role in ORGANISATION_WIDE_ROLES:
                sql = "SELECT facility_id FROM organisation_facilities WHERE organisation_id = ?"
                params: tuple[str, ...] = (token.organisation_id,)
            else:
                sql = ("SELECT facility_id FROM facility_assignments WHERE user_id = ? AND "
                       "organisation_id = ? AND facility_id IN (SELECT facility_id FROM "
                       "organisation_facilities WHERE organisation_id = ?)")
                params = (token.user_id, token.organisation_id, token.organisation_id)
            check_personal_token(token, role, {r[0] for r in conn.execute(sql, params)})
            if conn.execute("SELECT 1 FROM personal_tokens WHERE token_id = ?",
                            (token.token_id,)).fetchone() is not None:
                raise Conflict(f"personal token {token.token_id} already exists")
            conn.execute(f"INSERT INTO personal_tokens ({_TOKEN}) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                             token.token_id, token.user_id, token.organisation_id,
                             token.token_sha256, token.name, token.role.value,
                             None if token.facility_ids is None
                             else orjson.dumps(list(token.facility_ids)).decode(),
                             us(token.created_at), us(token.expires_at),
                             None if token.revoked_at is None else us(token.revoked_at)))

        await self._write("add_personal_token", audit, fn)

    async def personal_token(self, token_id: str) -> PersonalToken | None:
        rows = await self._db.read(f"SELECT {_TOKEN} FROM personal_tokens WHERE token_id = ?",
                                   (token_id,))
        return _token(rows[0]) if rows else None

    async def personal_tokens(self, user_id: str) -> list[PersonalToken]:
        rows = await self._db.read(f"SELECT {_TOKEN} FROM personal_tokens WHERE user_id = ? "
                                   "ORDER BY created_at_us DESC, token_id", (user_id,))
        return [_token(r) for r in rows]

    async def revoke_personal_token(self, token_id: str, *, at: datetime,
                                    audit: AuditRecord | None = None) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE personal_tokens SET revoked_at_us = ? WHERE "
                                "token_id = ? AND revoked_at_us IS NULL",
                                (us(at), token_id)).rowcount > 0

        return await self._write("revoke_personal_token", audit, fn, changed=bool)

    # -- sign-in failures ------------------------------------------------------------------

    async def record_sign_in_failure(self, account: str, *, at: datetime,
                                     audit: AuditRecord | None = None) -> SignInFailures:
        key = sign_in_account(account)

        def fn(conn: sqlite3.Connection) -> SignInFailures:
            row = conn.execute(
                "INSERT INTO sign_in_failures (account, failures, first_failed_at_us, "
                "last_failed_at_us) VALUES (:key, 1, :at, :at) ON CONFLICT (account) DO UPDATE "
                "SET failures = CASE WHEN last_failed_at_us <= :quiet THEN 1 "
                "ELSE failures + 1 END, first_failed_at_us = CASE WHEN last_failed_at_us <= "
                ":quiet THEN excluded.first_failed_at_us ELSE first_failed_at_us END, "
                "last_failed_at_us = excluded.last_failed_at_us "
                "RETURNING account, failures, first_failed_at_us, last_failed_at_us",
                {"key": key, "at": us(at),
                 "quiet": us(at - SIGN_IN_FAILURE_WINDOW)}).fetchone()
            return _failures(row)

        return await self._write("record_sign_in_failure", audit, fn)

    async def clear_sign_in_failures(self, account: str, *,
                                     audit: AuditRecord | None = None) -> bool:
        key = sign_in_account(account)

        def fn(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM sign_in_failures WHERE account = ?",
                                (key,)).rowcount > 0

        return await self._write("clear_sign_in_failures", audit, fn, changed=bool)

    async def sign_in_failures(self, account: str) -> SignInFailures | None:
        rows = await self._db.read("SELECT account, failures, first_failed_at_us, "
                                   "last_failed_at_us FROM sign_in_failures WHERE account = ?",
                                   (sign_in_account(account),))
        return _failures(rows[0]) if rows else None
