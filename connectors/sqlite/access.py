"""Utilities and their API keys in the embedded store (``AccessStore``)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.sqlite.db import SqliteDb
from schemas.access import ApiKeyRecord, Utility


def _ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _utility(row: tuple[Any, ...]) -> Utility:
    return Utility(utility_id=row[0], name=row[1], facility_ids=tuple(orjson.loads(row[2])),
                   webhook_secret=row[3])


class SqliteAccess:
    """``AccessStore`` through the file's connection object, shared with the other areas."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def upsert_utility(self, utility: Utility) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO utilities (utility_id, name, facility_ids, webhook_secret) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (utility_id) DO UPDATE SET name = excluded.name,"
                " facility_ids = excluded.facility_ids, webhook_secret = excluded.webhook_secret",
                (utility.utility_id, utility.name, orjson.dumps(list(utility.facility_ids)),
                 utility.webhook_secret.get_secret_value()),
            )

        await self._db.write(write, op="upsert_utility")

    async def utilities(self) -> list[Utility]:
        rows = await self._db.read("SELECT utility_id, name, facility_ids, webhook_secret "
                                   "FROM utilities ORDER BY utility_id")
        return [_utility(r) for r in rows]

    async def utility(self, utility_id: str) -> Utility | None:
        rows = await self._db.read("SELECT utility_id, name, facility_ids, webhook_secret "
                                   "FROM utilities WHERE utility_id = ?", (utility_id,))
        return _utility(rows[0]) if rows else None

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO utility_api_keys (key_id, utility_id, key_sha256, created_at_ms, "
                "revoked_at_ms) VALUES (?, ?, ?, ?, ?)",
                (record.key_id, record.utility_id, record.key_sha256, _ms(record.created_at),
                 None if record.revoked_at is None else _ms(record.revoked_at)),
            )

        await self._db.write(write, op="add_api_key")

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        rows = await self._db.read(
            "SELECT key_id, utility_id, key_sha256, created_at_ms, revoked_at_ms "
            "FROM utility_api_keys WHERE key_id = ?", (key_id,))
        if not rows:
            return None
        r = rows[0]
        return ApiKeyRecord(key_id=r[0], utility_id=r[1], key_sha256=r[2],
                            created_at=_dt(r[3]), revoked_at=_dt(r[4]))

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        revoked = False

        def write(conn: sqlite3.Connection) -> None:
            nonlocal revoked
            revoked = conn.execute(
                "UPDATE utility_api_keys SET revoked_at_ms = ? "
                "WHERE key_id = ? AND revoked_at_ms IS NULL", (_ms(at), key_id)).rowcount > 0

        await self._db.write(write, op="revoke_api_key")
        return revoked
