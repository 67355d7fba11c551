"""Signed-in sessions in the embedded store (``SessionStore``; table ``sessions`` of
migration 0002). A lookup is a write (it moves ``last_seen_at``), on the writer connection
with its check, so that a revocation and a lookup cannot interleave.

``revoke_all`` revokes the user's rows in one transaction; there is no separate index to
lose (unlike Redis), so no "revoked before" mark is kept: a session created after
``revoke_all`` with an earlier ``created_at`` (which sign-in never does) stays live here."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from connectors.epoch import dt, us
from connectors.identity_input import checked_inputs
from connectors.sqlite.db import SqliteDb
from schemas.identity import SessionRecord
from tables.ports.identity import Conflict

_COLUMNS = ("session_sha256, user_id, organisation_id, created_at_us, last_seen_at_us, "
            "idle_timeout_s, absolute_expires_at_us, client_address, user_agent, revoked_at_us")
_LIVE = ("revoked_at_us IS NULL AND absolute_expires_at_us > :now "
         "AND last_seen_at_us + CAST(round(idle_timeout_s * 1000000) AS INTEGER) > :now")
"""The SQL of ``SessionRecord.live`` (idle_timeout_s rounded to whole microseconds, as ``timedelta``
does)."""


def _session(r: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(session_sha256=r[0], user_id=r[1], organisation_id=r[2],
                         created_at=dt(r[3]), last_seen_at=dt(r[4]), idle_timeout_s=r[5],
                         absolute_expires_at=dt(r[6]), client_address=r[7], user_agent=r[8],
                         revoked_at=None if r[9] is None else dt(r[9]))


@checked_inputs
class SqliteSessions:
    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def create(self, session: SessionRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM sessions WHERE session_sha256 = ?",
                            (session.session_sha256,)).fetchone() is not None:
                raise Conflict("a session with that id exists")
            conn.execute(f"INSERT INTO sessions ({_COLUMNS}) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                             session.session_sha256, session.user_id, session.organisation_id,
                             us(session.created_at), us(session.last_seen_at),
                             session.idle_timeout_s, us(session.absolute_expires_at),
                             session.client_address, session.user_agent,
                             None if session.revoked_at is None else us(session.revoked_at)))

        await self._db.write(write, op="create_session")

    async def get(self, session_sha256: str, *, now: datetime) -> SessionRecord | None:
        found: list[SessionRecord] = []

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"UPDATE sessions SET last_seen_at_us = max(last_seen_at_us, :now) WHERE "
                f"session_sha256 = :digest AND {_LIVE} RETURNING {_COLUMNS}",
                {"now": us(now), "digest": session_sha256}).fetchone()
            if row is not None:
                found.append(_session(row))

        await self._db.write(write, op="get_session")
        return found[0] if found else None

    async def revoke(self, session_sha256: str, *, at: datetime) -> bool:
        revoked: list[int] = []

        def write(conn: sqlite3.Connection) -> None:
            revoked.append(conn.execute(
                f"UPDATE sessions SET revoked_at_us = :now WHERE session_sha256 = :digest "
                f"AND {_LIVE}", {"now": us(at), "digest": session_sha256}).rowcount)

        await self._db.write(write, op="revoke_session")
        return revoked[0] > 0

    async def revoke_all(self, user_id: str, *, at: datetime,
                         keep_sha256: str | None = None) -> int:
        revoked: list[int] = []

        def write(conn: sqlite3.Connection) -> None:
            revoked.append(conn.execute(
                f"UPDATE sessions SET revoked_at_us = :now WHERE user_id = :user AND {_LIVE} "
                "AND session_sha256 IS NOT :keep",
                {"now": us(at), "user": user_id, "keep": keep_sha256}).rowcount)

        await self._db.write(write, op="revoke_sessions")
        return revoked[0]

    async def sessions_of(self, user_id: str, *, now: datetime) -> list[SessionRecord]:
        rows = await self._db.read(
            f"SELECT {_COLUMNS} FROM sessions WHERE user_id = :user AND {_LIVE} "
            "ORDER BY created_at_us DESC, session_sha256", {"user": user_id, "now": us(now)})
        return [_session(r) for r in rows]

    async def all_sessions(self, *, now: datetime,
                           organisation_id: str | None = None) -> list[SessionRecord]:
        rows = await self._db.read(
            f"SELECT {_COLUMNS} FROM sessions WHERE {_LIVE} AND (:org IS NULL OR "
            "organisation_id = :org) ORDER BY created_at_us DESC, session_sha256",
            {"now": us(now), "org": organisation_id})
        return [_session(r) for r in rows]

    async def expire(self, *, now: datetime) -> int:
        deleted: list[int] = []

        def write(conn: sqlite3.Connection) -> None:
            deleted.append(conn.execute(f"DELETE FROM sessions WHERE NOT ({_LIVE})",
                                        {"now": us(now)}).rowcount)

        await self._db.write(write, op="expire_sessions")
        return deleted[0]
