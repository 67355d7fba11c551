"""Demand-response events and the BMS command audit trail in the embedded store (``DrStore``).

Each row keeps the record as JSON next to the columns it is looked up by. ``failures`` is
appended inside SQLite (``json_insert``) and kept by ``update_dr_event``, so the command agent
and the DR agent can write one event concurrently without losing each other's changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from schemas.dr import BmsCommandRecord, DrEvent, DrStatus


def _ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


class SqliteDr:
    """Mixed into ``SqliteStore``: the same connections, threads and error handling."""

    if TYPE_CHECKING:
        async def _read(self, sql: str,
                        params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], None], *, op: str) -> None: ...

    async def insert_dr_event(self, event: DrEvent) -> bool:
        inserted = False

        def write(conn: sqlite3.Connection) -> None:
            nonlocal inserted
            inserted = conn.execute(
                "INSERT INTO dr_events (id, utility_id, event_id, facility_id, status, "
                "event_start_ms, record) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (event.id, event.utility_id, event.event_id, event.facility_id, event.status,
                 _ms(event.event_start), event.model_dump_json())).rowcount > 0

        await self._write(write, op="insert_dr_event")
        return inserted

    async def update_dr_event(self, event: DrEvent) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE dr_events SET status = ?, "
                "record = json_set(?, '$.failures', json(record -> '$.failures')) "
                "WHERE id = ?", (event.status, event.model_dump_json(), event.id))

        await self._write(write, op="update_dr_event")

    async def add_dr_event_failure(self, id: str, reason: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE dr_events SET record = json_insert(record, '$.failures[#]', ?) "
                         "WHERE id = ?", (reason, id))

        await self._write(write, op="add_dr_event_failure")

    async def dr_event(self, id: str) -> DrEvent | None:
        rows = await self._read("SELECT record FROM dr_events WHERE id = ?", (id,))
        return DrEvent.model_validate_json(rows[0][0]) if rows else None

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000) -> list[DrEvent]:
        where, params = ["1"], []
        if facility_id is not None:
            where.append("facility_id = ?")
            params.append(facility_id)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        rows = await self._read(
            f"SELECT record FROM dr_events WHERE {' AND '.join(where)} "
            "ORDER BY event_start_ms DESC, id LIMIT ?", (*params, limit))
        return [DrEvent.model_validate_json(r[0]) for r in rows]

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        inserted = False

        def write(conn: sqlite3.Connection) -> None:
            nonlocal inserted
            inserted = conn.execute(
                "INSERT INTO bms_commands (command_id, dr_event_id, requested_at_ms, record) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (command_id) DO NOTHING",
                (record.command_id, record.dr_event_id, _ms(record.requested_at),
                 record.model_dump_json())).rowcount > 0

        await self._write(write, op="record_bms_command")
        return inserted

    async def update_bms_command(self, record: BmsCommandRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE bms_commands SET record = ? WHERE command_id = ?",
                         (record.model_dump_json(), record.command_id))

        await self._write(write, op="update_bms_command")

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None:
        rows = await self._read("SELECT record FROM bms_commands WHERE command_id = ?",
                                (command_id,))
        return BmsCommandRecord.model_validate_json(rows[0][0]) if rows else None

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        rows = await self._read("SELECT record FROM bms_commands WHERE dr_event_id = ? "
                                "ORDER BY requested_at_ms, command_id", (dr_event_id,))
        return [BmsCommandRecord.model_validate_json(r[0]) for r in rows]
