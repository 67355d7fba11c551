"""DR intake, the use case behind the webhook and ``POST /api/dr-events``: who may ask for an
event, the times an event may have, and its creation (once per id, one event at a time per
facility, a notification all or nothing).

The API's handlers parse and authenticate, call one method of ``DrIntake``, and map its
``IntakeError`` to an HTTP answer (``api/dr_routes.py``). The two creation rules are the
store's (``DrStore.create_dr_events``, one transaction): a check here followed by an insert
would let concurrent requests through between the two.

Times are bounded before anything is computed with them: an event starts at most
``IntakeLimits.max_lead_s`` ahead (default 7 days) and no longer ago than the clock tolerance
(``IntakeLimits.clock_tolerance_s``, 300 s: the skew allowed between a utility's clock and
ours, as for signatures), since the baseline, the plan and the apply lead all need the event
ahead; both times are within the supported range (``schemas/common.py``). An event lasts at
most 24 h, in whole minutes (``schemas/dr.py``). A replay of a notification already received
is answered before these checks, even once its event is over.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agents import offload
from agents.dr_baseline_source import BaselineSource, NoBaseline
from core.metrics import Metrics
from schemas.access import Utility
from schemas.common import MAX_TIME, MIN_TIME, in_supported_range
from schemas.dr import DrEvent, DrEventRequest, DrNotification, webhook_event_uuid
from tables.ports.dr import DrCreation, DrStore
from tables.ports.metadata import MetadataStore


class IntakeError(Exception):
    """A request the intake refuses; the message is safe to show to the caller."""


class FacilitiesForbidden(IntakeError):
    def __init__(self, message: str, facility_ids: list[str]) -> None:
        super().__init__(message)
        self.facility_ids = facility_ids


class FacilitiesNotFound(IntakeError):
    def __init__(self, facility_ids: list[str]) -> None:
        super().__init__("unknown facilities: " + ", ".join(facility_ids))
        self.facility_ids = facility_ids


class FacilityNotFound(IntakeError):
    def __init__(self, facility_id: str) -> None:
        super().__init__(f"no facility {facility_id!r}")
        self.facility_id = facility_id


class TimeOutOfBounds(IntakeError):
    def __init__(self, field: str, message: str, rule: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class EventOverlaps(IntakeError):
    def __init__(self, conflicts: tuple[DrEvent, ...]) -> None:
        super().__init__("a facility takes one DR event at a time; this one overlaps "
                         + ", ".join(f"{e.id} of {e.facility_id}" for e in conflicts))
        self.conflicts = conflicts


class BaselineUnavailable(IntakeError):
    def __init__(self, facility_id: str, why: NoBaseline) -> None:
        super().__init__(f"no baseline for this event: {why}")
        self.facility_id = facility_id


@dataclass(frozen=True)
class IntakeLimits:
    max_lead_s: float = 7 * 86400.0
    """How far ahead an event may start (``SEMS_DR_MAX_LEAD_S``)."""
    clock_tolerance_s: float = 300.0
    """How long ago an event may have started: the clock skew allowed between a utility's
    systems and ours (the webhook's signature tolerance)."""


def check_times(event_start: datetime, event_end: datetime, *, now: datetime,
                limits: IntakeLimits) -> None:
    """The bounds of a new event's window (module docstring); ``TimeOutOfBounds`` names the
    field."""
    for name, ts in (("event_start", event_start), ("event_end", event_end)):
        if not in_supported_range(ts):
            raise TimeOutOfBounds(name, f"{name} is outside the supported range",
                                  f"must be from {MIN_TIME.isoformat()} and before "
                                  f"{MAX_TIME.isoformat()}")
    max_lead_s, tolerance_s = limits.max_lead_s, limits.clock_tolerance_s
    if event_start > now + timedelta(seconds=max_lead_s):
        raise TimeOutOfBounds("event_start", "the event starts too far ahead",
                              f"must be at most {max_lead_s:g} s ahead")
    if event_start < now - timedelta(seconds=tolerance_s):
        raise TimeOutOfBounds("event_start", "the event started already",
                              f"must be at most {tolerance_s:g} s ago (the clock tolerance)")
    if event_end <= now:
        raise TimeOutOfBounds("event_end", "the event is over already", "must be in the future")


class DrIntake:
    """New DR events, from a utility's notification or one facility's request: checked,
    stored, counted and handed to the DR agent (``submit``)."""

    def __init__(self, *, events: DrStore, metadata: MetadataStore, baselines: BaselineSource,
                 submit: Callable[[DrEvent], Awaitable[None]], metrics: Metrics,
                 limits: IntakeLimits) -> None:
        self._events = events
        self._metadata = metadata
        self._baselines = baselines
        self._submit = submit  # onto the ``dr-events`` stream, to the DR agent
        self._metrics = metrics
        self.limits = limits

    async def receive_notification(self, utility: Utility, note: DrNotification, *,
                                   now: datetime, trace_id: str | None) -> DrCreation:
        """One event per facility of a verified notification: all stored, or none."""
        refused = [f for f in note.facility_ids if f not in utility.facility_ids]
        if refused:
            raise FacilitiesForbidden(f"utility {utility.utility_id!r} has no enrolled "
                                      "facility among " + ", ".join(refused), refused)
        missing = [f for f in note.facility_ids if await self._metadata.facility(f) is None]
        if missing:
            raise FacilitiesNotFound(missing)
        events = [DrEvent(id=webhook_event_uuid(utility.utility_id, note.event_id, facility_id),
                          event_id=note.event_id, utility_id=utility.utility_id,
                          facility_id=facility_id, source="webhook",
                          event_start=note.event_start, event_end=note.event_end,
                          target_reduction_percentage=note.target_reduction_percentage,
                          trace_id=trace_id, created_at=now, updated_at=now)
                  for facility_id in note.facility_ids]
        # Only to decide whether the times are checked: a replay is answered even once over.
        # The store decides what is a replay (a concurrent delivery may store them meanwhile).
        if any([await self._events.dr_event(e.id) is None for e in events]):
            check_times(note.event_start, note.event_end, now=now, limits=self.limits)
        return await self._create(events)

    async def create_event(self, req: DrEventRequest, *, utility_id: str | None,
                           now: datetime, trace_id: str | None) -> DrEvent:
        """An event asked by API key or an admin, with its baseline; the caller has checked
        that it may see the facility."""
        facility = await self._metadata.facility(req.facility_id)
        if facility is None:
            raise FacilityNotFound(req.facility_id)
        check_times(req.event_start, req.event_end, now=now, limits=self.limits)
        offload.LANE.set("request")  # the caller's task only: never behind the agent's solves
        try:
            baseline = await self._baselines.baseline(facility, event_start=req.event_start,
                                                      event_end=req.event_end, now=now)
        except NoBaseline as exc:
            raise BaselineUnavailable(facility.facility_id, exc) from None
        event = DrEvent(id=str(uuid.uuid4()), utility_id=utility_id,
                        facility_id=facility.facility_id, source="api",
                        event_start=req.event_start, event_end=req.event_end,
                        target_reduction_kw=req.target_reduction_kw,
                        baseline=baseline.to_dict(), trace_id=trace_id, created_at=now,
                        updated_at=now)
        [created] = (await self._create([event])).events
        return created

    async def _create(self, events: list[DrEvent]) -> DrCreation:
        created = await self._events.create_dr_events(events)
        if created.conflicts:
            raise EventOverlaps(created.conflicts)
        for event in created.inserted:
            self._metrics.dr_events.labels("scheduled").inc()
            await self._submit(event)
        return created
