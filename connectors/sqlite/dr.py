"""Demand-response events and the BMS command audit trail in the embedded store (``DrStore``).

Each row keeps the record as JSON next to the columns it is looked up by. ``failures`` is
appended inside SQLite (``json_insert``) and kept by ``update_dr_event``, so the command agent
and the DR agent can write one event concurrently without losing each other's changes.

``create_dr_events`` checks for replays and overlaps and inserts in one ``BEGIN IMMEDIATE``
transaction of the one writer connection: no other write, from this process or another one
on the same file, comes between the check and the insert.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from connectors.sqlite.db import SqliteDb
from schemas.dr import BmsCommandRecord, DrEvent, DrStatus
from tables.ports.dr import OVERLAPPING_STATUSES, DrCreation, DrEventOrder, DrEventOverlaps

_ORDER: dict[str, str] = {"start_desc": "event_start_ms DESC", "start_asc": "event_start_ms",
                          "end_desc": "event_end_ms DESC"}


def _ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


_OVERLAPS = (
    "SELECT record FROM dr_events WHERE facility_id = ? AND event_end_ms > ? "
    f"AND event_start_ms < ? AND status IN ({', '.join('?' * len(OVERLAPPING_STATUSES))}) "
    "ORDER BY event_start_ms DESC, id")


def _overlap(a: DrEvent, b: DrEvent) -> bool:
    return (a.facility_id == b.facility_id and a.event_start < b.event_end
            and b.event_start < a.event_end)


def _create(conn: sqlite3.Connection, events: Sequence[DrEvent]) -> DrCreation:
    """``create_dr_events`` inside the writer's transaction."""
    stored: list[DrEvent] = []
    fresh: list[DrEvent] = []
    replayed: set[str] = set()
    for event in events:
        row = conn.execute("SELECT record FROM dr_events WHERE id = ?", (event.id,)).fetchone()
        if row is None:
            stored.append(event)
            fresh.append(event)
        else:
            stored.append(DrEvent.model_validate_json(row[0]))
            replayed.add(event.id)
    conflicts: dict[str, DrEvent] = {}
    checked = [e for e in fresh if e.status in OVERLAPPING_STATUSES]
    for i, event in enumerate(checked):
        for (record,) in conn.execute(_OVERLAPS, (event.facility_id, _ms(event.event_start),
                                                  _ms(event.event_end), *OVERLAPPING_STATUSES)):
            found = DrEvent.model_validate_json(record)
            conflicts.setdefault(found.id, found)
        for other in checked[:i]:
            if _overlap(event, other):
                conflicts.setdefault(other.id, other)
    if conflicts:
        ordered = sorted(conflicts.values(), key=lambda e: e.id)
        ordered.sort(key=lambda e: e.event_start, reverse=True)
        return DrCreation(events=tuple(stored), replayed=frozenset(replayed),
                          conflicts=tuple(ordered))
    conn.executemany(
        "INSERT INTO dr_events (id, utility_id, event_id, facility_id, status, "
        "event_start_ms, event_end_ms, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.id, e.utility_id, e.event_id, e.facility_id, e.status, _ms(e.event_start),
          _ms(e.event_end), e.model_dump_json()) for e in fresh])
    return DrCreation(events=tuple(stored), replayed=frozenset(replayed))


class SqliteDr:
    """``DrStore`` through the file's connection object, shared with the other areas."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def create_dr_events(self, events: Sequence[DrEvent]) -> DrCreation:
        created = DrCreation()

        def write(conn: sqlite3.Connection) -> None:
            nonlocal created
            created = _create(conn, events)

        await self._db.write(write, op="create_dr_events")
        return created

    async def insert_dr_event(self, event: DrEvent) -> bool:
        created = await self.create_dr_events([event])
        if created.conflicts:
            raise DrEventOverlaps(created.conflicts)
        return not created.replayed

    async def update_dr_event(self, event: DrEvent) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE dr_events SET status = ?, "
                "record = json_set(?, '$.failures', json(record -> '$.failures')) "
                "WHERE id = ?", (event.status, event.model_dump_json(), event.id))

        await self._db.write(write, op="update_dr_event")

    async def add_dr_event_failure(self, id: str, reason: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE dr_events SET record = json_insert(record, '$.failures[#]', ?) "
                         "WHERE id = ?", (reason, id))

        await self._db.write(write, op="add_dr_event_failure")

    async def dr_event(self, id: str) -> DrEvent | None:
        rows = await self._db.read("SELECT record FROM dr_events WHERE id = ?", (id,))
        return DrEvent.model_validate_json(rows[0][0]) if rows else None

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000,
                        order: DrEventOrder = "start_desc",
                        ended_before: datetime | None = None) -> list[DrEvent]:
        where: list[str] = ["1"]
        params: list[str | int] = []
        if ended_before is not None:
            where.append("event_end_ms <= ?")
            params.append(_ms(ended_before))
        if facility_id is not None:
            where.append("facility_id = ?")
            params.append(facility_id)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        rows = await self._db.read(
            f"SELECT record FROM dr_events WHERE {' AND '.join(where)} "
            f"ORDER BY {_ORDER[order]}, id LIMIT ?", (*params, limit))
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

        await self._db.write(write, op="record_bms_command")
        return inserted

    async def update_bms_command(self, record: BmsCommandRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE bms_commands SET record = ? WHERE command_id = ?",
                         (record.model_dump_json(), record.command_id))

        await self._db.write(write, op="update_bms_command")

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None:
        rows = await self._db.read("SELECT record FROM bms_commands WHERE command_id = ?",
                                   (command_id,))
        return BmsCommandRecord.model_validate_json(rows[0][0]) if rows else None

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        rows = await self._db.read("SELECT record FROM bms_commands WHERE dr_event_id = ? "
                                   "ORDER BY requested_at_ms, command_id", (dr_event_id,))
        return [BmsCommandRecord.model_validate_json(r[0]) for r in rows]
