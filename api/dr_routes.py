"""Demand-response routes: the utility webhook, events by API key, events and their reports.

The webhook is public at the token layer: a utility's systems authenticate it with an HMAC
signature over the body (``api/signatures.py``), checked here before the body is parsed. An
unknown ``X-SEMS-Utility`` is answered as a known one with a wrong signature (utility ids
cannot be enumerated).

The rules below are the intake's (``agents/dr_intake.py``), enforced atomically by the store;
these handlers parse, authenticate, call it and map its refusals to the API's errors.

A facility takes one event at a time: a new event whose ``[event_start, event_end)`` overlaps
one of the same facility that is scheduled, active or completed is refused (409
``event_overlaps``), as the first one's release would undo the second one's shed. A webhook
notification is refused whole when any of its facilities overlaps, so nothing is half-made
and the utility can correct and resend it. A replay of a notification already received answers
as a replay (200, ``replayed: true``) before any of these checks, even once the event is over.
Concurrent requests get the same answers as one at a time: one event is created, the others
are refused or replays.

An event starts at most ``DrApi.max_lead_s`` ahead (``SEMS_DR_MAX_LEAD_S``, default 7 days)
and at most the clock tolerance (300 s) ago, and ends in the future; otherwise 400
``invalid_body`` naming the field in ``details``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from agents.dr_intake import (
    BaselineUnavailable,
    DrIntake,
    EventOverlaps,
    FacilitiesForbidden,
    FacilitiesNotFound,
    FacilityNotFound,
    IntakeError,
    TimeOutOfBounds,
)
from api.context import (
    DEPS,
    PRINCIPAL,
    ApiDeps,
    facility_or_404,
    json_response,
    limit_rate,
    parse_body,
)
from api.dr_deps import DrApi
from api.endpoints import EVERY_ROLE, FACILITY_ID, Endpoint, Param, Source
from api.errors import ApiError, not_found
from api.principal import Role
from api.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    UTILITY_HEADER,
    SignatureError,
    verify,
)
from core.logs import trace_id_var
from schemas.access import Utility
from schemas.dr import BmsCommandRecord, DrEvent, DrEventRequest, DrNotification

log = logging.getLogger(__name__)

UTILITY_OR_ADMIN = frozenset({Role.UTILITY, Role.ADMIN})


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


INTAKE = web.AppKey("dr-intake", DrIntake)
"""The app's intake, built by ``setup`` when demand response runs in this process."""


def setup(app: web.Application) -> None:
    """This module's state in a new app: the intake, over the API's metadata and metrics."""
    deps = app[DEPS]
    if deps.dr is not None:
        app[INTAKE] = deps.dr.intake(metadata=deps.metadata, metrics=deps.metrics)


def _unavailable() -> ApiError:
    return ApiError(503, "dr_unavailable", "demand response is not running in this process")


def _dr(deps: ApiDeps) -> DrApi:
    if deps.dr is None:
        raise _unavailable()
    return deps.dr


def _intake(request: web.Request) -> DrIntake:
    intake = request.app.get(INTAKE)
    if intake is None:
        raise _unavailable()
    return intake


def _event_json(event: DrEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _refused(exc: IntakeError) -> ApiError:
    """The intake's refusal as the API answers it."""
    match exc:
        case FacilitiesForbidden():
            return ApiError(403, "facility_forbidden", str(exc),
                            {"facility_ids": exc.facility_ids})
        case FacilitiesNotFound():
            return ApiError(404, "facility_not_found", str(exc),
                            {"facility_ids": exc.facility_ids})
        case FacilityNotFound():
            return not_found("facility", exc.facility_id)
        case TimeOutOfBounds():
            return ApiError(400, "invalid_body", str(exc),
                            [{"loc": [exc.field], "msg": exc.rule}])
        case EventOverlaps():
            return ApiError(409, "event_overlaps", str(exc), {"conflicts": [
                {"facility_id": e.facility_id, "dr_event_id": e.id,
                 **e.model_dump(mode="json",
                                include={"event_id", "status", "event_start", "event_end"})}
                for e in exc.conflicts]})
        case BaselineUnavailable():
            return ApiError(422, "baseline_unavailable", str(exc),
                            {"facility_id": exc.facility_id})
    return ApiError(400, "invalid_body", str(exc))


_UNKNOWN_UTILITY_SECRET = secrets.token_hex(32)
"""What an unknown ``X-SEMS-Utility`` is verified against: its answer is a known utility's
with a wrong signature, byte for byte, after the same work (utility ids cannot be told)."""


async def _verified_utility(request: web.Request, body: bytes) -> Utility:
    deps = request.app[DEPS]
    dr = _dr(deps)
    utility_id = request.headers.get(UTILITY_HEADER, "")
    utility = await dr.access.utility(utility_id) if utility_id else None
    secret = (_UNKNOWN_UTILITY_SECRET if utility is None
              else utility.webhook_secret.get_secret_value())
    try:
        verify(secret, timestamp=request.headers.get(TIMESTAMP_HEADER),
               signature=request.headers.get(SIGNATURE_HEADER), body=body, now=deps.clock(),
               tolerance_s=dr.signature_tolerance_s)
        if utility is None:  # a signature made with our random dummy secret: not possible
            raise SignatureError("the signature does not match the body")
    except SignatureError as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from None
    return utility


async def dr_notification(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    intake = _intake(request)
    body = await request.read()
    utility = await _verified_utility(request, body)
    # Counted once the signature holds: forged calls cannot spend a utility's budget.
    limit_rate(deps, f"webhook:{utility.utility_id}", "webhook")
    note = parse_body(request, body, DrNotification)
    try:
        created = await intake.receive_notification(utility, note, now=deps.clock(),
                                                    trace_id=trace_id_var.get())
    except IntakeError as exc:
        raise _refused(exc) from None
    out = [{"id": e.id, "facility_id": e.facility_id, "status": e.status,
            "replayed": e.id in created.replayed} for e in created.events]
    log.info("DR notification %s from %s: %d facilities (%d new)", note.event_id,
             utility.utility_id, len(out), len(created.inserted))
    return json_response({"accepted": True, "event_id": note.event_id, "events": out})


async def create_dr_event(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    intake = _intake(request)
    principal = request[PRINCIPAL]
    req = parse_body(request, await request.read(), DrEventRequest)
    if not principal.may_access(req.facility_id):
        raise ApiError(403, "facility_forbidden",
                       f"this caller may not see facility {req.facility_id!r}",
                       {"facility_id": req.facility_id})
    try:
        event = await intake.create_event(req, utility_id=principal.utility_id,
                                          now=deps.clock(), trace_id=trace_id_var.get())
    except IntakeError as exc:
        raise _refused(exc) from None
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
                    "SEMS's id of the event", required=True, sources=(
                        Source("POST", "/api/dr-events", 201, "/id"),
                        Source("POST", "/webhooks/utility/dr-notification", 200,
                               "/events/0/id"),
                        Source("GET", "/api/facilities/{facility_id}/dr-events", 200,
                               "/events/0/id"),
                    ))

_TIME_RULES = ("The event starts at most SEMS_DR_MAX_LEAD_S (default 7 days) ahead and at "
               "most the clock tolerance (300 s) ago, and ends in the future, after it starts "
               "and at most 24 h later, both in whole minutes (400 invalid_body naming the "
               "field otherwise; the schema cannot say these, as they depend on the time of "
               "the request or on both fields). Times are answered in UTC.")

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
                         "a listed facility that is scheduled, active or completed. "
                         + _TIME_RULES),
    Endpoint("POST", "/api/dr-events", create_dr_event,
             "Create a DR event for one facility; answers its baseline", "demand-response",
             roles=UTILITY_OR_ADMIN, body=DrEventRequest, response=DrEvent, ok_statuses=(201,),
             errors=(404, 409, 422),
             description="A utility's API key (X-API-Key) for an enrolled facility, or an "
                         "admin. 409 event_overlaps when the event overlaps one of the facility "
                         "that is scheduled, active or completed; 422 baseline_unavailable when "
                         "no baseline method has the data it needs. " + _TIME_RULES),
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
