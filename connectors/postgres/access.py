"""Utilities and their API keys in PostgreSQL (``AccessStore``); schema in migration 0002."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import TupleRow

from connectors.postgres.db import PostgresDb
from schemas.access import ApiKeyRecord, Utility

_UTILITY_COLUMNS = "utility_id, name, facility_ids, webhook_secret"
_KEY_COLUMNS = "key_id, utility_id, key_sha256, created_at, revoked_at"


def _utility(row: TupleRow) -> Utility:
    return Utility(utility_id=row[0], name=row[1], facility_ids=tuple(row[2]),
                   webhook_secret=row[3])


class PostgresAccess:
    """``AccessStore`` through the store's pool (``PostgresDb``)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    async def upsert_utility(self, utility: Utility) -> None:
        async with self._db.transaction("upsert_utility") as conn:
            await conn.execute(
                f"INSERT INTO utilities ({_UTILITY_COLUMNS}) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (utility_id) DO UPDATE SET name = excluded.name, "
                "facility_ids = excluded.facility_ids, webhook_secret = excluded.webhook_secret",
                (utility.utility_id, utility.name, list(utility.facility_ids),
                 utility.webhook_secret.get_secret_value()))
        self._db.written("utilities", 1)

    async def utilities(self) -> list[Utility]:
        rows = await self._db.read(
            "utilities", f"SELECT {_UTILITY_COLUMNS} FROM utilities ORDER BY utility_id")
        return [_utility(r) for r in rows]

    async def utility(self, utility_id: str) -> Utility | None:
        rows = await self._db.read(
            "utility", f"SELECT {_UTILITY_COLUMNS} FROM utilities "
            "WHERE utility_id = %s", (utility_id,))
        return _utility(rows[0]) if rows else None

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        async with self._db.transaction("add_api_key") as conn:
            await conn.execute(
                f"INSERT INTO utility_api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                (record.key_id, record.utility_id, record.key_sha256, record.created_at,
                 record.revoked_at))
        self._db.written("utility_api_keys", 1)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        rows = await self._db.read(
            "api_key", f"SELECT {_KEY_COLUMNS} FROM utility_api_keys "
            "WHERE key_id = %s", (key_id,))
        if not rows:
            return None
        r = rows[0]
        return ApiKeyRecord(key_id=r[0], utility_id=r[1], key_sha256=r[2], created_at=r[3],
                            revoked_at=r[4])

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        async with self._db.transaction("revoke_api_key") as conn:
            cursor = await conn.execute(
                "UPDATE utility_api_keys SET revoked_at = %s "
                "WHERE key_id = %s AND revoked_at IS NULL", (at, key_id))
            return cursor.rowcount > 0
