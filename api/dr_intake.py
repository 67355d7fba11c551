"""DR intake, the use case behind the webhook and ``POST /api/dr-events``: who may ask for an
event, the times an event may have, and its creation (once per id, one event at a time per
facility, a notification all or nothing).

The handlers parse and authenticate, call one function here, and map its ``IntakeError`` to
an ``ApiError``. The two creation rules are the store's (``DrStore.create_dr_events``, one
transaction): a check here followed by an insert would let concurrent requests through
between the two.

Times are bounded before anything is computed with them: an event starts at most
``DrApi.max_lead_s`` ahead (default 7 days) and no longer ago than the clock tolerance
(``DrApi.signature_tolerance_s``, 300 s: the skew allowed between a utility's clock and ours,
as for signatures), since the baseline, the plan and the apply lead all need the event ahead;
both times are within the API's supported range (``api/bounds.py``). An event lasts at most
24 h, in whole minutes (``schemas/dr.py``). A replay of a notification already received is
answered before these checks, even once its event is over.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from agents import offload
from agents.dr_baseline_source import NoBaseline
from api.bounds import MAX_TIME, MIN_TIME, in_range
from api.dr_deps import DrApi
from core.metrics import Metrics
from schemas.access import Utility
from schemas.dr import DrEvent, DrEventRequest, DrNotification, webhook_event_uuid
from schemas.metadata import Facility
from tables.ports.dr import DrCreation
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


def check_times(event_start: datetime, event_end: datetime, *, now: datetime,
                max_lead_s: float, tolerance_s: float) -> None:
    """The bounds of a new event's window (module docstring); ``TimeOutOfBounds`` names the
    field."""
    for name, ts in (("event_start", event_start), ("event_end", event_end)):
        if not in_range(ts):
            raise TimeOutOfBounds(name, f"{name} is outside the supported range",
                                  f"must be from {MIN_TIME.isoformat()} and before "
                                  f"{MAX_TIME.isoformat()}")
    if event_start > now + timedelta(seconds=max_lead_s):
        raise TimeOutOfBounds("event_start", "the event starts too far ahead",
                              f"must be at most {max_lead_s:g} s ahead")
    if event_start < now - timedelta(seconds=tolerance_s):
        raise TimeOutOfBounds("event_start", "the event started already",
                              f"must be at most {tolerance_s:g} s ago (the clock tolerance)")
    if event_end <= now:
        raise TimeOutOfBounds("event_end", "the event is over already", "must be in the future")


async def receive_notification(dr: DrApi, metadata: MetadataStore, metrics: Metrics,
                               utility: Utility, note: DrNotification, *, now: datetime,
                               trace_id: str | None) -> DrCreation:
    """One event per facility of a verified notification: all stored, or none (409)."""
    refused = [f for f in note.facility_ids if f not in utility.facility_ids]
    if refused:
        raise FacilitiesForbidden(f"utility {utility.utility_id!r} has no enrolled facility "
                                  "among " + ", ".join(refused), refused)
    known = {f.facility_id for f in await metadata.facilities()}
    missing = [f for f in note.facility_ids if f not in known]
    if missing:
        raise FacilitiesNotFound(missing)
    events = [DrEvent(id=webhook_event_uuid(utility.utility_id, note.event_id, facility_id),
                      event_id=note.event_id, utility_id=utility.utility_id,
                      facility_id=facility_id, source="webhook", event_start=note.event_start,
                      event_end=note.event_end,
                      target_reduction_percentage=note.target_reduction_percentage,
                      trace_id=trace_id, created_at=now, updated_at=now)
              for facility_id in note.facility_ids]
    # Only to decide whether the times are checked: a replay is answered even once over. The
    # store decides what is a replay (a concurrent delivery may store the events meanwhile).
    if any([await dr.store.dr_event(e.id) is None for e in events]):
        check_times(note.event_start, note.event_end, now=now, max_lead_s=dr.max_lead_s,
                    tolerance_s=dr.signature_tolerance_s)
    return await _create(dr, metrics, events)


async def create_event(dr: DrApi, metrics: Metrics, facility: Facility, req: DrEventRequest, *,
                       utility_id: str | None, now: datetime,
                       trace_id: str | None) -> DrEvent:
    """An event asked by API key or an admin, with its baseline; the caller has checked that
    it may see the facility."""
    check_times(req.event_start, req.event_end, now=now, max_lead_s=dr.max_lead_s,
                tolerance_s=dr.signature_tolerance_s)
    offload.LANE.set("request")  # this handler's task only: never behind the agent's solves
    try:
        baseline = await dr.baselines.baseline(facility, event_start=req.event_start,
                                               event_end=req.event_end, now=now)
    except NoBaseline as exc:
        raise BaselineUnavailable(facility.facility_id, exc) from None
    event = DrEvent(id=str(uuid.uuid4()), utility_id=utility_id,
                    facility_id=facility.facility_id, source="api",
                    event_start=req.event_start, event_end=req.event_end,
                    target_reduction_kw=req.target_reduction_kw, baseline=baseline.to_dict(),
                    trace_id=trace_id, created_at=now, updated_at=now)
    [created] = (await _create(dr, metrics, [event])).events
    return created


async def _create(dr: DrApi, metrics: Metrics, events: list[DrEvent]) -> DrCreation:
    created = await dr.store.create_dr_events(events)
    if created.conflicts:
        raise EventOverlaps(created.conflicts)
    for event in created.inserted:
        metrics.dr_events.labels("scheduled").inc()
        await dr.submit(event)
    return created
