"""Demand-response routes: the utility webhook, events by API key, events and their reports.

The webhook is public at the token layer: a utility's systems authenticate it with an HMAC
signature over the body (``api/signatures.py``), checked here before the body is parsed.

A facility takes one event at a time: a new event whose ``[event_start, event_end)`` overlaps
one of the same facility that is scheduled, active or completed is refused (409
``event_overlaps``), as the first one's release would undo the second one's shed. A webhook
notification is refused whole when any of its facilities overlaps, so nothing is half-made
and the utility can correct and resend it. A replay of a notification already received answers
as a replay (200, ``replayed: true``) before any of these checks, even once the event is over.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from agents.dr_baseline import NoBaseline
from api.app import DEPS, PRINCIPAL, ApiDeps, json_response, limit_rate
from api.dr_deps import DrApi
from api.endpoints import EVERY_ROLE, FACILITY_ID, Endpoint, Param
from api.errors import ApiError, not_found
from api.principal import Role
from api.routes import facility_or_404
from api.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    UTILITY_HEADER,
    SignatureError,
    verify,
)
from schemas.dr import (
    BmsCommandRecord,
    DrEvent,
    DrEventRequest,
    DrNotification,
    DrStatus,
    webhook_event_uuid,
)
from streams.logs import trace_id_var
from tables.ports import DrStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
UTILITY_OR_ADMIN = frozenset({Role.UTILITY, Role.ADMIN})
OVERLAPPING_STATUSES: tuple[DrStatus, ...] = ("scheduled", "active", "completed")
"""A failed event is not among them: it sheds nothing any more, and the utility may ask again."""


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    facility_id: str
    status: str
    replayed: bool


class WebhookAccepted(BaseModel):
    """The notification is stored; each facility's event is planned asynchronously."""

    model_config = ConfigDict(extra="forbid")
    accepted: bool
    event_id: str
    events: list[WebhookEvent]


class DrEventDetail(DrEvent):
    """An event with its BMS command audit trail."""

    commands: list[BmsCommandRecord]


class DrEventList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facility_id: str
    events: list[DrEvent]


def _dr(deps: ApiDeps) -> DrApi:
    if deps.dr is None:
        raise ApiError(503, "dr_unavailable", "demand response is not running in this process")
    return deps.dr


def _parse(request: web.Request, body: bytes, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json",
                       {"content_type": request.content_type})
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", "the body is not a valid " + model.__name__,
                       exc.errors(include_url=False, include_context=False,
                                  include_input=False)) from None


def _event_json(event: DrEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _not_over(event_end: datetime, now: datetime) -> None:
    if event_end <= now:
        raise ApiError(400, "invalid_body", "the event is over already",
                       [{"loc": ["event_end"], "msg": "must be in the future"}])


async def _refuse_overlaps(store: DrStore, facility_ids: Collection[str], *,
                           event_start: datetime, event_end: datetime,
                           own_ids: Collection[str] = ()) -> None:
    """409 when an event of one of the facilities overlaps ``[event_start, event_end)``.

    ``own_ids`` are the new events' own ids (a concurrent delivery of the same notification
    may have stored them already). The store has no query by time: its listing (newest start
    first, at most 1000) is filtered here, so a facility with 1000 events starting after this
    one's end could hide an overlap.
    """
    conflicts = [
        {"facility_id": facility_id, "dr_event_id": e.id,
         **e.model_dump(mode="json", include={"event_id", "status", "event_start", "event_end"})}
        for facility_id in facility_ids
        for e in await store.dr_events(facility_id=facility_id, statuses=OVERLAPPING_STATUSES)
        if e.id not in own_ids and e.event_start < event_end and event_start < e.event_end]
    if conflicts:
        raise ApiError(409, "event_overlaps", "a facility takes one DR event at a time; this one "
                       "overlaps " + ", ".join(f"{c['dr_event_id']} of {c['facility_id']}"
                                               for c in conflicts),
                       {"conflicts": conflicts})


async def dr_notification(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    dr = _dr(deps)
    body = await request.read()
    utility_id = request.headers.get(UTILITY_HEADER, "")
    utility = await dr.access.utility(utility_id) if utility_id else None
    if utility is None:
        raise ApiError(401, "invalid_signature", f"{UTILITY_HEADER} must name a registered "
                       "utility", {"header": UTILITY_HEADER})
    try:
        verify(utility.webhook_secret.get_secret_value(),
               timestamp=request.headers.get(TIMESTAMP_HEADER),
               signature=request.headers.get(SIGNATURE_HEADER), body=body, now=deps.clock(),
               tolerance_s=dr.signature_tolerance_s)
    except SignatureError as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from None
    # Counted once the signature holds: forged calls cannot spend a utility's budget.
    limit_rate(deps, f"webhook:{utility.utility_id}", "webhook")
    note = _parse(request, body, DrNotification)
    refused = [f for f in note.facility_ids if f not in utility.facility_ids]
    if refused:
        raise ApiError(403, "facility_forbidden", f"utility {utility.utility_id!r} has no "
                       "enrolled facility among " + ", ".join(refused), {"facility_ids": refused})
    known = {f.facility_id for f in await deps.metadata.facilities()}
    missing = [f for f in note.facility_ids if f not in known]
    if missing:
        raise ApiError(404, "facility_not_found", "unknown facilities: " + ", ".join(missing),
                       {"facility_ids": missing})
    ids = {f: webhook_event_uuid(utility.utility_id, note.event_id, f)
           for f in note.facility_ids}
    received = {f: e for f, dr_event_id in ids.items()
                if (e := await dr.store.dr_event(dr_event_id)) is not None}
    new = [f for f in note.facility_ids if f not in received]
    now = deps.clock()
    if new:
        _not_over(note.event_end, now)
        await _refuse_overlaps(dr.store, new, event_start=note.event_start,
                               event_end=note.event_end, own_ids=ids.values())
    out = []
    for facility_id in note.facility_ids:
        event = received.get(facility_id)
        inserted = False
        if event is None:
            event = DrEvent(
                id=ids[facility_id], event_id=note.event_id, utility_id=utility.utility_id,
                facility_id=facility_id, source="webhook", event_start=note.event_start,
                event_end=note.event_end,
                target_reduction_percentage=note.target_reduction_percentage,
                trace_id=trace_id_var.get(), created_at=now, updated_at=now)
            inserted = await dr.store.insert_dr_event(event)
            if inserted:
                deps.metrics.dr_events.labels("scheduled").inc()
                await dr.submit(event)
            else:  # a concurrent delivery of the same notification stored it first
                event = await dr.store.dr_event(event.id) or event
        out.append({"id": event.id, "facility_id": facility_id, "status": event.status,
                    "replayed": not inserted})
    log.info("DR notification %s from %s: %d facilities (%d new)", note.event_id,
             utility.utility_id, len(out), sum(not e["replayed"] for e in out))
    return json_response({"accepted": True, "event_id": note.event_id, "events": out})


async def create_dr_event(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    dr = _dr(deps)
    principal = request[PRINCIPAL]
    req = _parse(request, await request.read(), DrEventRequest)
    if not principal.may_access(req.facility_id):
        raise ApiError(403, "facility_forbidden",
                       f"this caller may not see facility {req.facility_id!r}",
                       {"facility_id": req.facility_id})
    facility = next((f for f in await deps.metadata.facilities()
                     if f.facility_id == req.facility_id), None)
    if facility is None:
        raise not_found("facility", req.facility_id)
    now = deps.clock()
    _not_over(req.event_end, now)
    await _refuse_overlaps(dr.store, [req.facility_id], event_start=req.event_start,
                           event_end=req.event_end)
    try:
        baseline = await dr.baselines.baseline(facility, event_start=req.event_start,
                                               event_end=req.event_end, now=now)
    except NoBaseline as exc:
        raise ApiError(422, "baseline_unavailable", f"no baseline for this event: {exc}",
                       {"facility_id": req.facility_id}) from None
    event = DrEvent(id=str(uuid.uuid4()), utility_id=principal.utility_id,
                    facility_id=req.facility_id, source="api", event_start=req.event_start,
                    event_end=req.event_end, target_reduction_kw=req.target_reduction_kw,
                    baseline=baseline.to_dict(), trace_id=trace_id_var.get(), created_at=now,
                    updated_at=now)
    await dr.store.insert_dr_event(event)
    deps.metrics.dr_events.labels("scheduled").inc()
    await dr.submit(event)
    return json_response(_event_json(event), status=201)


async def get_dr_event(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    dr = _dr(deps)
    event = await dr.store.dr_event(request.match_info["dr_event_id"])
    if event is None:
        raise not_found("dr_event", request.match_info["dr_event_id"])
    if not request[PRINCIPAL].may_access(event.facility_id):
        raise ApiError(403, "facility_forbidden",
                       f"this caller may not see facility {event.facility_id!r}",
                       {"facility_id": event.facility_id})
    commands = await dr.store.bms_commands(event.id)
    return json_response({**_event_json(event),
                          "commands": [c.model_dump(mode="json") for c in commands]})


async def list_dr_events(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    dr = _dr(deps)
    facility = await facility_or_404(request)
    events = await dr.store.dr_events(facility_id=facility.facility_id, limit=500)
    return json_response({"facility_id": facility.facility_id,
                          "events": [_event_json(e) for e in events]})


DR_EVENT_ID = Param("dr_event_id", "path", {"type": "string", "maxLength": 64},
                    "SEMS's id of the event", required=True)

ENDPOINTS = [
    Endpoint("POST", "/webhooks/utility/dr-notification", dr_notification,
             "A utility's DR notification (HMAC-signed webhook)", "demand-response",
             roles=None, body=DrNotification, response=WebhookAccepted,
             errors=(401, 403, 404, 409),
             description="Public at the token layer: authenticated by the utility's HMAC "
                         "signature instead (X-SEMS-Utility, X-SEMS-Timestamp within 300 s, "
                         "X-SEMS-Signature: v1=hex HMAC-SHA256(secret, timestamp + '.' + "
                         "body)); 401 invalid_signature otherwise. Every facility must be "
                         "enrolled with the utility (403). Answers at once; each facility's "
                         "event is planned asynchronously. A replay of an event_id creates "
                         "nothing new (replayed: true), even once the event is over. 409 "
                         "event_overlaps, and nothing created, when the event overlaps one of "
                         "a listed facility that is scheduled, active or completed. Times are "
                         "answered in UTC."),
    Endpoint("POST", "/api/dr-events", create_dr_event,
             "Create a DR event for one facility; answers its baseline", "demand-response",
             roles=UTILITY_OR_ADMIN, body=DrEventRequest, response=DrEvent, ok_statuses=(201,),
             errors=(404, 409, 422),
             description="A utility's API key (X-API-Key) for an enrolled facility, or an "
                         "admin. 409 event_overlaps when the event overlaps one of the facility "
                         "that is scheduled, active or completed; 422 baseline_unavailable when "
                         "no baseline method has the data it needs. Times are answered in UTC."),
    Endpoint("GET", "/api/dr-events/{dr_event_id}", get_dr_event,
             "A DR event: status, baseline, plan, performance report, BMS command audit",
             "demand-response", roles=EVERY_ROLE, response=DrEventDetail, errors=(404,),
             params=(DR_EVENT_ID,),
             description="403 facility_forbidden when the event's facility is outside the "
                         "caller's scope."),
    Endpoint("GET", "/api/facilities/{facility_id}/dr-events", list_dr_events,
             "DR events of a facility, newest first", "demand-response", roles=EVERY_ROLE,
             response=DrEventList, errors=(404,), params=(FACILITY_ID,)),
]
