"""The identity store's logs and credentials in PostgreSQL: the audit log, personal tokens and
sign-in failure counts (the base of ``PostgresIdentity``); schema in migration 0008."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from connectors.identity_input import sign_in_account
from connectors.postgres.db import Conn, PostgresDb
from schemas.identity import (
    ORGANISATION_WIDE_ROLES,
    SIGN_IN_FAILURE_WINDOW,
    AuditAction,
    AuditRecord,
    PersonalToken,
    PersonRole,
    SignInFailures,
)
from tables.ports.identity import (
    Audits,
    Conflict,
    NotFound,
    audit_records,
    check_personal_token,
)

T = TypeVar("T")

_AUDIT = "audit_id, at, actor_id, action, organisation_id, target, client_address, details"
_TOKEN = ("token_id, user_id, organisation_id, token_sha256, name, role, facility_ids, "
          "created_at, expires_at, revoked_at")
_FAILURES = "account, failures, first_failed_at, last_failed_at"


async def append_audit(conn: Conn, record: AuditRecord) -> int:
    cursor = await conn.execute(
        "INSERT INTO audit_log (at, actor_id, action, organisation_id, target, client_address, "
        "details) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING audit_id",
        (record.at, record.actor_id, record.action.value, record.organisation_id,
         record.target, record.client_address, Jsonb(record.details)))
    row = await cursor.fetchone()
    if row is None:
        raise Conflict("the audit record was not written")  # INSERT RETURNING always returns
    return int(row[0])


def _audit(r: TupleRow) -> AuditRecord:
    return AuditRecord(audit_id=r[0], at=r[1], actor_id=r[2], action=AuditAction(r[3]),
                       organisation_id=r[4], target=r[5], client_address=r[6], details=r[7])


def _token(r: TupleRow) -> PersonalToken:
    return PersonalToken(token_id=r[0], user_id=r[1], organisation_id=r[2], token_sha256=r[3],
                         name=r[4], role=PersonRole(r[5]),
                         facility_ids=None if r[6] is None else tuple(r[6]),
                         created_at=r[7], expires_at=r[8], revoked_at=r[9])


def _failures(r: TupleRow) -> SignInFailures:
    return SignInFailures(account=r[0], failures=r[1], first_failed_at=r[2],
                          last_failed_at=r[3])



async def _one(conn: Conn, sql: str, params: tuple[object, ...]) -> TupleRow | None:
    return await (await conn.execute(sql, params)).fetchone()


async def _lock(conn: Conn, table: str, column: str, value: str, what: str) -> None:
    """Locks the row against changes, not against rows that refer to it (``FOR NO KEY
    UPDATE``: an insert's foreign-key check takes ``FOR KEY SHARE``, which ``FOR UPDATE``
    would make wait, and which then deadlocked with a transaction holding that row's
    referrers); ``NotFound`` when there is none."""
    if await _one(conn, f"SELECT 1 FROM {table} WHERE {column} = %s FOR NO KEY UPDATE",
                  (value,)) is None:
        raise NotFound(f"{what} {value}")


class PostgresIdentityRecords:
    """Audit log, personal tokens, sign-in failures; ``_change``: a transaction that appends
    its audit records before it commits."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    async def _change(self, op: str, audit: Audits, fn: Callable[[Conn], Awaitable[T]], *,
                      changed: Callable[[T], bool] = lambda _: True) -> T:
        """``fn`` and the audit records (when ``changed`` says its result changed something)
        in one transaction, retried on a deadlock or serialisation failure
        (``PostgresDb.transact``). An integrity error that the checks inside ``fn`` could not
        see coming (a row a concurrent change removed) is a ``Conflict``, never the driver's
        exception; ``fn`` maps the unique violations it knows first."""
        async def run(conn: Conn) -> T:
            result = await fn(conn)
            if changed(result):
                for record in audit_records(audit):
                    await append_audit(conn, record)
            return result

        try:
            return await self._db.transact(op, run)
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(f"{op} met a concurrent change ({exc.diag.message_primary}); "
                           "try again") from None

    # -- audit log -------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord) -> int:
        async with self._db.transaction("append_audit") as conn:
            return await append_audit(conn, record)

    async def audit(self, *, organisation_id: str | None = None, actor_id: str | None = None,
                    target: str | None = None, actions: Sequence[AuditAction] = (),
                    since: datetime | None = None, until: datetime | None = None,
                    before_id: int | None = None, limit: int = 100) -> list[AuditRecord]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("organisation_id = %s", organisation_id),
                              ("actor_id = %s", actor_id), ("target = %s", target),
                              ("at >= %s", since), ("at < %s", until),
                              ("audit_id < %s", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if actions:
            where.append("action = ANY(%s)")
            params.append([a.value for a in actions])
        sql = (f"SELECT {_AUDIT} FROM audit_log"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY audit_id DESC LIMIT %s")
        rows = await self._db.read("audit", sql, (*params, max(0, limit)))
        return [_audit(r) for r in rows]

    # -- personal tokens -------------------------------------------------------------------

    async def add_personal_token(self, token: PersonalToken, *,
                                 audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            row = await (await conn.execute(
                "SELECT role FROM memberships WHERE user_id = %s AND organisation_id = %s "
                "FOR SHARE", (token.user_id, token.organisation_id))).fetchone()
            role = None if row is None else PersonRole(row[0])
            if role in ORGANISATION_WIDE_ROLES:
                cursor = await conn.execute("SELECT facility_id FROM organisation_facilities "
                                            "WHERE organisation_id = %s",
                                            (token.organisation_id,))
            else:
                cursor = await conn.execute(
                    "SELECT facility_id FROM facility_assignments WHERE user_id = %s AND "
                    "organisation_id = %s", (token.user_id, token.organisation_id))
            check_personal_token(token, role, {r[0] for r in await cursor.fetchall()})
            cursor = await conn.execute(
                f"INSERT INTO personal_tokens ({_TOKEN}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (token_id) DO NOTHING", (
                    token.token_id, token.user_id, token.organisation_id, token.token_sha256,
                    token.name, token.role.value,
                    None if token.facility_ids is None else list(token.facility_ids),
                    token.created_at, token.expires_at, token.revoked_at))
            if cursor.rowcount == 0:
                raise Conflict(f"personal token {token.token_id} already exists")

        await self._change("add_personal_token", audit, fn)

    async def personal_token(self, token_id: str) -> PersonalToken | None:
        rows = await self._db.read("personal_token", f"SELECT {_TOKEN} FROM personal_tokens "
                                   "WHERE token_id = %s", (token_id,))
        return _token(rows[0]) if rows else None

    async def personal_tokens(self, user_id: str) -> list[PersonalToken]:
        rows = await self._db.read("personal_tokens", f"SELECT {_TOKEN} FROM personal_tokens "
                                   "WHERE user_id = %s ORDER BY created_at DESC, token_id",
                                   (user_id,))
        return [_token(r) for r in rows]

    async def revoke_personal_token(self, token_id: str, *, at: datetime,
                                    audit: AuditRecord | None = None) -> bool:
        async def fn(conn: Conn) -> bool:
            cursor = await conn.execute("UPDATE personal_tokens SET revoked_at = %s WHERE "
                                        "token_id = %s AND revoked_at IS NULL", (at, token_id))
            return cursor.rowcount > 0

        return await self._change("revoke_personal_token", audit, fn, changed=bool)

    # -- sign-in failures ------------------------------------------------------------------

    async def record_sign_in_failure(self, account: str, *, at: datetime,
                                     audit: Audits = None) -> SignInFailures:
        key = sign_in_account(account)

        async def fn(conn: Conn) -> SignInFailures:
            row = await (await conn.execute(
                f"INSERT INTO sign_in_failures ({_FAILURES}) VALUES (%(key)s, 1, %(at)s, "
                "%(at)s) ON CONFLICT (account) DO UPDATE SET "
                "failures = CASE WHEN sign_in_failures.last_failed_at <= %(quiet)s THEN 1 "
                "ELSE sign_in_failures.failures + 1 END, "
                "first_failed_at = CASE WHEN sign_in_failures.last_failed_at <= %(quiet)s "
                "THEN excluded.first_failed_at ELSE sign_in_failures.first_failed_at END, "
                f"last_failed_at = excluded.last_failed_at RETURNING {_FAILURES}",
                {"key": key, "at": at, "quiet": at - SIGN_IN_FAILURE_WINDOW})).fetchone()
            if row is None:
                raise Conflict("the sign-in failure was not counted")  # RETURNING always does
            return _failures(row)

        return await self._change("record_sign_in_failure", audit, fn)

    async def clear_sign_in_failures(self, account: str, *,
                                     audit: AuditRecord | None = None) -> bool:
        key = sign_in_account(account)

        async def fn(conn: Conn) -> bool:
            cursor = await conn.execute("DELETE FROM sign_in_failures WHERE account = %s",
                                        (key,))
            return cursor.rowcount > 0

        return await self._change("clear_sign_in_failures", audit, fn, changed=bool)

    async def sign_in_failures(self, account: str) -> SignInFailures | None:
        rows = await self._db.read("sign_in_failures", f"SELECT {_FAILURES} FROM "
                                   "sign_in_failures WHERE account = %s",
                                   (sign_in_account(account),))
        return _failures(rows[0]) if rows else None
