"""The demand-response port: events, their BMS commands and the audit trail. Adapters: SQLite,
PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from schemas.dr import BmsCommandRecord, DrEvent, DrStatus

OVERLAPPING_STATUSES: tuple[DrStatus, ...] = ("scheduled", "active", "completed")


"""The events a new one of the same facility must not overlap. A failed event is not among
them: it sheds nothing any more, and the utility may ask again."""


@dataclass(frozen=True, slots=True)
class DrCreation:
    """What ``DrStore.create_dr_events`` did: either every new event was stored, or (when
    ``conflicts`` is not empty) nothing was.

    ``events``: the events asked for, in order, as stored (a replayed one as it was first
    stored, with its current status); ``replayed``: the ids that existed already;
    ``conflicts``: the stored events that the new ones overlap, newest start first."""

    events: tuple[DrEvent, ...] = ()
    replayed: frozenset[str] = frozenset()
    conflicts: tuple[DrEvent, ...] = ()

    @property
    def inserted(self) -> tuple[DrEvent, ...]:
        return () if self.conflicts else tuple(e for e in self.events
                                                if e.id not in self.replayed)


DrEventOrder = Literal["start_desc", "start_asc", "end_desc"]


class DrEventOverlaps(RuntimeError):
    """``insert_dr_event`` of an event that overlaps one of the same facility."""

    def __init__(self, conflicts: tuple[DrEvent, ...]) -> None:
        super().__init__("overlaps " + ", ".join(e.id for e in conflicts))
        self.conflicts = conflicts


class DrStore(Protocol):
    """``dr_events`` and the ``bms_commands`` audit trail (``schemas/dr.py``).

    The store enforces the two intake rules atomically (not the callers, by a read and then a
    write, which concurrent requests interleave): an event id is created once, and a facility
    has at most one event in ``OVERLAPPING_STATUSES`` over any instant (``[event_start,
    event_end)`` windows; back to back do not overlap). An event that fails later leaves the
    rule's scope."""

    async def create_dr_events(self, events: Sequence[DrEvent]) -> DrCreation:
        """In one transaction: the events whose id exists are replays (nothing changes for
        them); the others are all stored, unless one overlaps an event of its facility in
        ``OVERLAPPING_STATUSES`` (or another new one of the same facility): then none is, and
        ``conflicts`` says with what. A new event that is ``failed`` already is not checked."""
        ...

    async def insert_dr_event(self, event: DrEvent) -> bool:
        """``create_dr_events([event])``: ``False`` (and nothing changed) when its id exists
        already; raises ``DrEventOverlaps`` when it overlaps."""
        ...

    async def update_dr_event(self, event: DrEvent) -> None:
        """Writes everything but ``failures``, which only ``add_dr_event_failure`` appends
        (the command agent and the DR agent write the same event concurrently)."""
        ...

    async def add_dr_event_failure(self, id: str, reason: str) -> None: ...

    async def dr_event(self, id: str) -> DrEvent | None: ...

    async def dr_events(self, *, facility_id: str | None = None,
                        statuses: tuple[DrStatus, ...] = (), limit: int = 1000,
                        order: DrEventOrder = "start_desc",
                        ended_before: datetime | None = None) -> list[DrEvent]:
        """``order``: newest start first (what people list), oldest start first (what is
        due soonest: a full page never hides an active event behind future ones), or latest
        end first (with ``ended_before``: the events most recently over)."""
        ...

    async def record_bms_command(self, record: BmsCommandRecord) -> bool:
        """Inserts the audit entry; ``False`` when the command id is there already."""
        ...

    async def update_bms_command(self, record: BmsCommandRecord) -> None: ...

    async def bms_command(self, command_id: str) -> BmsCommandRecord | None: ...

    async def bms_commands(self, dr_event_id: str) -> list[BmsCommandRecord]:
        """In the order they were requested."""
        ...
