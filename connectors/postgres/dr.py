"""Demand-response events and the BMS command audit trail in PostgreSQL (``DrStore``); schema
in migrations 0001, 0004 and 0006. ``failures`` is appended in SQL and never written by
``update_dr_event``, so concurrent writers of one event do not lose each other's changes.

``create_dr_events`` relies on PostgreSQL for its two rules: the primary key (an id is
created once) and the exclusion constraint of migration 0006 (one event at a time per
facility). An insert that meets a concurrent transaction's row waits for it to end and then
fails (unique violation 23505, exclusion violation 23P01); the insert is undone to its
savepoint and the outcome read again, now that the other one is committed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import errors
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from connectors.postgres.db import Conn, PostgresDb
from schemas.dr import BmsCommandRecord, DrEvent, DrStatus
from tables.ports.dr import OVERLAPPING_STATUSES, DrCreation, DrEventOrder, DrEventOverlaps
from tables.ports.store import StoreUnavailable

_EVENT_COLUMNS = (
    "id, event_id, utility_id, facility_id, source, event_start, event_end, "
    "target_reduction_kw, target_reduction_percentage, status, baseline_kw, plan, report, "
    "achieved_reduction_kw, failures, release_stages_sent, trace_id, created_at, updated_at")
_EVENT_NAMES = [c.strip() for c in _EVENT_COLUMNS.split(",")]
_COMMAND_COLUMNS = (
    "command_id, dr_event_id, facility_id, kind, target_id, value, phase, release_stage, why, "
    "trace_id, requested_at, sent_at, result, applied_at, failure, fault_code, error, "
    "replayed, released_at, restore_value")
_COMMAND_NAMES = [c.strip() for c in _COMMAND_COLUMNS.split(",")]
_ORDER: dict[str, str] = {"start_desc": "event_start DESC", "start_asc": "event_start",
                          "end_desc": "event_end DESC"}
_MUTABLE = ("target_reduction_kw", "status", "baseline_kw", "plan", "report",
            "achieved_reduction_kw", "release_stages_sent", "updated_at")


_INSERT_EVENT = (f"INSERT INTO dr_events ({_EVENT_COLUMNS}) VALUES "
                 f"({', '.join('%(' + n + ')s' for n in _EVENT_NAMES)})")
_OVERLAPS = (f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE facility_id = %s "
             "AND status = ANY(%s) AND event_start < %s AND event_end > %s")
_ATTEMPTS = 5
"""Each retry follows a change another transaction made meanwhile (one of the ids stored, a
deadlock, the conflicting event failed); five in a row means the table keeps changing under
us, and the caller gets ``StoreUnavailable``."""
_FACILITY_LOCK_CLASS = 0x5D2E
"""The first key of the facility intake locks: an intake takes
``pg_advisory_xact_lock(_FACILITY_LOCK_CLASS, hashtext(facility_id))`` for each facility of its
events, in facility order, held until its transaction ends. Two-key locks are a key space
apart from the migrations' one-key ``MIGRATION_LOCK_KEY``, so the two never meet."""


def _overlap(a: DrEvent, b: DrEvent) -> bool:
    return (a.facility_id == b.facility_id and a.event_start < b.event_end
            and b.event_start < a.event_end)


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def _event_row(e: DrEvent) -> dict[str, Any]:
    return {"id": uuid.UUID(e.id), "event_id": e.event_id, "utility_id": e.utility_id,
            "facility_id": e.facility_id, "source": e.source, "event_start": e.event_start,
            "event_end": e.event_end, "target_reduction_kw": e.target_reduction_kw,
            "target_reduction_percentage": e.target_reduction_percentage, "status": e.status,
            "baseline_kw": _json(e.baseline), "plan": _json(e.plan),
            "report": _json(e.report), "achieved_reduction_kw": e.achieved_reduction_kw,
            "failures": Jsonb(list(e.failures)), "release_stages_sent": e.release_stages_sent,
            "trace_id": e.trace_id, "created_at": e.created_at, "updated_at": e.updated_at}


def _event(row: TupleRow) -> DrEvent:
    values = dict(zip(_EVENT_NAMES, row, strict=True))
    values["id"] = str(values["id"])
    values["baseline"] = values.pop("baseline_kw")
    return DrEvent.model_validate(values)


def _command(row: TupleRow) -> BmsCommandRecord:
    values = dict(zip(_COMMAND_NAMES, row, strict=True))
    values["command_id"] = str(values["command_id"])
    values["dr_event_id"] = str(values["dr_event_id"])
    return BmsCommandRecord.model_validate(values)


def _command_row(r: BmsCommandRecord) -> dict[str, Any]:
    row = r.model_dump()
    row["command_id"] = uuid.UUID(r.command_id)
    row["dr_event_id"] = uuid.UUID(r.dr_event_id)
    return row


async def _try_create(conn: Conn, events: Sequence[DrEvent]) -> DrCreation | None:
    """One attempt of ``create_dr_events``; ``None`` when a concurrent intake got in between
    (try again)."""
    # Concurrent conflicting inserts under an exclusion constraint wait for each other and
    # deadlock (measured: 3 of 20 simultaneous notifications for two facilities, 503 after
    # the 1 s deadlock timeout). Intakes of one facility take its lock first, in facility order;
    # the constraint still decides, and a deadlock left anyway is tried again.
    for facility_id in sorted({e.facility_id for e in events}):
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                           (_FACILITY_LOCK_CLASS, facility_id))
    cursor = await conn.execute(f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE id = ANY(%s)",
                                ([uuid.UUID(e.id) for e in events],))
    found = {e.id: e for e in map(_event, await cursor.fetchall())}
    # The utility's key too: an event stored under another id (not by this intake, whose ids
    # are derived from the key) is a replay as well, not a unique violation to answer 500.
    for e in events:
        if e.id not in found and e.event_id is not None:
            cursor = await conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE utility_id IS NOT DISTINCT FROM "
                "%s AND event_id = %s AND facility_id = %s",
                (e.utility_id, e.event_id, e.facility_id))
            if (row := await cursor.fetchone()) is not None:
                found[e.id] = _event(row)
    stored = tuple(found.get(e.id, e) for e in events)
    replayed = frozenset(f.id for f in found.values())
    fresh = [e for e in events if e.id not in found]
    checked = [e for e in fresh if e.status in OVERLAPPING_STATUSES]
    among = [other for i, e in enumerate(checked) for other in checked[:i] if _overlap(e, other)]
    if among:
        return DrCreation(events=stored, replayed=replayed, conflicts=tuple(among))
    try:
        async with conn.transaction():  # a savepoint: a violation undoes only these inserts
            for event in fresh:
                await conn.execute(_INSERT_EVENT, _event_row(event))
    except errors.UniqueViolation:
        return None  # a concurrent delivery stored one of these ids or keys: a replay now
    except errors.DeadlockDetected:
        return None
    except errors.ExclusionViolation:
        conflicts: dict[str, DrEvent] = {}
        for event in checked:
            cursor = await conn.execute(_OVERLAPS, (event.facility_id, list(OVERLAPPING_STATUSES),
                                                    event.event_end, event.event_start))
            conflicts.update((e.id, e) for e in map(_event, await cursor.fetchall()))
        if not conflicts:
            return None  # the one it met failed meanwhile: the window may be free now
        ordered = sorted(conflicts.values(), key=lambda e: e.id)
        ordered.sort(key=lambda e: e.event_start, reverse=True)
        return DrCreation(events=stored, replayed=replayed, conflicts=tuple(ordered))
    return DrCreation(events=stored, replayed=replayed)


class PostgresDr:
    """``DrStore`` through the store's pool (``PostgresDb``)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    async def create_dr_events(self, events: Sequence[DrEvent]) -> DrCreation:
        for _ in range(_ATTEMPTS):
            async with self._db.transaction("create_dr_events") as conn:
                created = await _try_create(conn, events)
            if created is not None:
                self._db.written("dr_events", len(created.inserted))
                return created
        raise StoreUnavailable(f"{self._db.where}: dr_events kept changing during "
                               f"{_ATTEMPTS} attempts to create an event")

    async def insert_dr_event(self, event: DrEvent) -> bool:
        created = await self.create_dr_events([event])
        if created.conflicts:
            raise DrEventOverlaps(created.conflicts)
        return not created.replayed

    async def update_dr_event(self, event: DrEvent) -> None:
        row = _event_row(event)
        async with self._db.transaction("update_dr_event") as conn:
            await conn.execute(
                f"UPDATE dr_events SET {', '.join(f'{n} = %({n})s' for n in _MUTABLE)} "
                "WHERE id = %(id)s", row)
        self._db.written("dr_events", 1)

    async def add_dr_event_failure(self, id: str, reason: str) -> None:
        async with self._db.transaction("add_dr_event_failure") as conn:
            await conn.execute("UPDATE dr_events SET failures = failures || %s WHERE id = %s",
                               (Jsonb([reason]), uuid.UUID(id)))
        self._db.written("dr_events", 1)

    async def dr_event(self, id: str) -> DrEvent | None:
        try:
            key = uuid.UUID(id)
        except ValueError:
            return None
        rows = await self._db.read(
            "dr_event", f"SELECT {_EVENT_COLUMNS} FROM dr_events "
            "WHERE id = %s", (key,))
        return _event(rows[0]) if rows else None

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000,
                        order: DrEventOrder = "start_desc",
                        ended_before: datetime | None = None) -> list[DrEvent]:
        where: list[str] = ["true"]
        params: list[Any] = []
        if ended_before is not None:
            where.append("event_end <= %s")
            params.append(ended_before)
        if facility_id is not None:
            where.append("facility_id = %s")
            params.append(facility_id)
        if statuses:
            where.append("status = ANY(%s)")
            params.append(list(statuses))
        rows = await self._db.read(
            "dr_events", f"SELECT {_EVENT_COLUMNS} FROM dr_events WHERE {' AND '.join(where)} "
            f"ORDER BY {_ORDER[order]}, id LIMIT %s", (*params, limit))
        return [_event(r) for r in rows]

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        async with self._db.transaction("record_bms_command") as conn:
            cursor = await conn.execute(
                f"INSERT INTO bms_commands ({_COMMAND_COLUMNS}) VALUES "
                f"({', '.join('%(' + n + ')s' for n in _COMMAND_NAMES)}) "
                "ON CONFLICT (command_id) DO NOTHING", _command_row(record))
            inserted = cursor.rowcount > 0
        self._db.written("bms_commands", int(inserted))
        return inserted

    async def update_bms_command(self, record: BmsCommandRecord) -> None:
        names = [n for n in _COMMAND_NAMES if n != "command_id"]
        async with self._db.transaction("update_bms_command") as conn:
            await conn.execute(
                f"UPDATE bms_commands SET {', '.join(f'{n} = %({n})s' for n in names)} "
                "WHERE command_id = %(command_id)s", _command_row(record))
        self._db.written("bms_commands", 1)

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None:
        try:
            key = uuid.UUID(command_id)
        except ValueError:
            return None
        rows = await self._db.read(
            "bms_command", f"SELECT {_COMMAND_COLUMNS} FROM bms_commands "
            "WHERE command_id = %s", (key,))
        return _command(rows[0]) if rows else None

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        try:
            key = uuid.UUID(dr_event_id)
        except ValueError:
            return []
        rows = await self._db.read(
            "bms_commands", f"SELECT {_COMMAND_COLUMNS} FROM bms_commands "
            "WHERE dr_event_id = %s "
            "ORDER BY requested_at, command_id", (key,))
        return [_command(r) for r in rows]

