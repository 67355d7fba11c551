"""Password resets in PostgreSQL (migration 0009, issue 16): one-time tokens, stored as their
SHA-256, used once in the transaction that sets the new password hash."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import TupleRow

from connectors.postgres.db import Conn
from connectors.postgres.identity_records import PostgresIdentityRecords, _lock, _one
from schemas.identity import AuditRecord, PasswordReset
from tables.ports.identity import Conflict, check_password_reset

_RESET = "token_sha256, user_id, organisation_id, created_at, expires_at, created_by, used_at"


def _reset(r: TupleRow) -> PasswordReset:
    return PasswordReset(token_sha256=r[0], user_id=r[1], organisation_id=r[2],
                         created_at=r[3], expires_at=r[4], created_by=r[5], used_at=r[6])


class PostgresPasswordResets(PostgresIdentityRecords):
    async def add_password_reset(self, reset: PasswordReset, *,
                                 audit: AuditRecord | None = None) -> None:
        async def fn(conn: Conn) -> None:
            await _lock(conn, "users", "user_id", reset.user_id, "user")
            await conn.execute("DELETE FROM password_resets WHERE user_id = %s AND "
                               "used_at IS NULL AND token_sha256 <> %s",
                               (reset.user_id, reset.token_sha256))
            cursor = await conn.execute(
                f"INSERT INTO password_resets ({_RESET}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (token_sha256) DO NOTHING",
                (reset.token_sha256, reset.user_id, reset.organisation_id, reset.created_at,
                 reset.expires_at, reset.created_by, reset.used_at))
            if cursor.rowcount == 0:
                raise Conflict("that password-reset token exists already")

        await self._change("add_password_reset", audit, fn)

    async def password_reset(self, token_sha256: str) -> PasswordReset | None:
        rows = await self._db.read("password_reset", f"SELECT {_RESET} FROM password_resets "
                                   "WHERE token_sha256 = %s", (token_sha256,))
        return _reset(rows[0]) if rows else None

    async def use_password_reset(self, token_sha256: str, password_hash: str, *,
                                 at: datetime, audit: AuditRecord | None = None) -> str:
        async def fn(conn: Conn) -> str:
            # The user's row first, then the token's, as add_password_reset locks them.
            found = await _one(conn, "SELECT user_id FROM password_resets WHERE "
                               "token_sha256 = %s", (token_sha256,))
            status = None if found is None else await _one(
                conn, "SELECT status FROM users WHERE user_id = %s FOR NO KEY UPDATE",
                (found[0],))
            row = await _one(conn, f"SELECT {_RESET} FROM password_resets WHERE "
                             "token_sha256 = %s FOR UPDATE", (token_sha256,))
            used = check_password_reset(None if row is None else _reset(row),
                                        None if status is None else status[0], at=at)
            await conn.execute("UPDATE password_resets SET used_at = %s WHERE "
                               "token_sha256 = %s", (at, token_sha256))
            await conn.execute("UPDATE users SET password_hash = %s WHERE user_id = %s",
                               (password_hash, used.user_id))
            return used.user_id

        return await self._change("use_password_reset", audit, fn)
