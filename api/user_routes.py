"""People management (issue 16): ``/api/users`` (admins; energy managers within their
organisation, never granting above their own role), ``/api/sessions`` (one's own; an
admin: everyone's in the organisation) and ``/api/audit`` (admins). Signed-in people only
(``people_only``): every change is within the caller's organisation, whose id comes from
the session, never from the request. The rules are ``agents/accounts.py``'s."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict

from agents.accounts import assign_facilities, create_member, update_member
from api.context import DEPS, json_response, parse_body, parse_int, people_of
from api.endpoints import ADMIN, PEOPLE, USER_MANAGERS, Endpoint, Param
from api.errors import ApiError
from api.people import SESSION, clear_session_cookies
from api.people_context import USER_ID
from api.people_context import caller as _caller
from api.people_context import domain_errors as _domain_errors
from api.people_models import Assignment, Member, Members, UserCreate, UserUpdate, UserView
from schemas.identity import AuditAction, AuditRecord, PersonRole, SessionRecord, User

SESSION_ID = Param("session_id", "path", {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
                   "a session's id as listed (the SHA-256 of its secret)", required=True)


class SessionView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str
    user_id: str
    created_at: AwareDatetime
    last_seen_at: AwareDatetime
    expires_at: AwareDatetime
    client_address: str | None
    user_agent: str | None
    current: bool


class Sessions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sessions: list[SessionView]


class Revoked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revoked: int


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    audit_id: int | None
    at: AwareDatetime
    actor_id: str | None
    action: str
    target: str | None
    client_address: str | None
    details: dict[str, Any]


class AuditLog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organisation_id: str
    records: list[AuditEntry]


async def _member(request: web.Request, organisation_id: str, user_id: str) -> Member:
    identity = people_of(request.app[DEPS]).identity
    membership = await identity.membership(user_id, organisation_id)
    user = await identity.user(user_id)
    if membership is None or user is None:
        raise ApiError(404, "user_not_found", f"user {user_id} is not a member of this "
                       "organisation", {"user_id": user_id})
    return Member(user=UserView.of(user), role=membership.role,
                  facility_ids=list(membership.facility_ids))


async def list_users(request: web.Request) -> web.Response:
    org, _, _, _ = _caller(request)
    identity = people_of(request.app[DEPS]).identity
    users = {u.user_id: u for u in await identity.users(organisation_id=org)}
    members = [Member(user=UserView.of(users[m.user_id]), role=m.role,
                      facility_ids=list(m.facility_ids))
               for m in await identity.memberships(organisation_id=org) if m.user_id in users]
    return json_response(Members(organisation_id=org, users=members).model_dump(mode="json"))


async def create_user(request: web.Request) -> web.Response:
    org, actor_id, actor, address = _caller(request)
    deps = request.app[DEPS]
    people = people_of(deps)
    body = parse_body(request, await request.read(), UserCreate)
    now = deps.clock()
    user = User(user_id=f"u-{uuid.uuid4().hex[:16]}", email=body.email,
                display_name=body.display_name, created_at=now)
    with _domain_errors():
        await create_member(people.identity, people.hasher, actor=actor, organisation_id=org,
                            user=user, role=body.role, password=body.password,
                            facility_ids=body.facility_ids, actor_id=actor_id, at=now,
                            client_address=address)
    member = await _member(request, org, user.user_id)
    return json_response(member.model_dump(mode="json"), status=201)


async def update_user(request: web.Request) -> web.Response:
    org, actor_id, actor, address = _caller(request)
    deps = request.app[DEPS]
    people = people_of(deps)
    body = parse_body(request, await request.read(), UserUpdate)
    user_id = request.match_info["user_id"]
    with _domain_errors():
        await update_member(people.identity, people.sessions, actor=actor,
                            organisation_id=org, user_id=user_id,
                            display_name=body.display_name, role=body.role,
                            status=body.status, actor_id=actor_id, at=deps.clock(),
                            client_address=address)
    return json_response((await _member(request, org, user_id)).model_dump(mode="json"))


async def set_facilities(request: web.Request) -> web.Response:
    org, actor_id, actor, address = _caller(request)
    deps = request.app[DEPS]
    body = parse_body(request, await request.read(), Assignment)
    user_id = request.match_info["user_id"]
    with _domain_errors():
        await assign_facilities(people_of(deps).identity, actor=actor, organisation_id=org,
                                user_id=user_id, facility_ids=body.facility_ids,
                                actor_id=actor_id, at=deps.clock(), client_address=address)
    return json_response((await _member(request, org, user_id)).model_dump(mode="json"))


async def _visible_sessions(request: web.Request) -> list[SessionRecord]:
    """The caller's own sessions; an admin's: every one of the organisation."""
    org, actor_id, actor, _ = _caller(request)
    deps = request.app[DEPS]
    sessions = people_of(deps).sessions
    if actor is PersonRole.ADMIN:
        return await sessions.all_sessions(now=deps.clock(), organisation_id=org)
    return await sessions.sessions_of(actor_id, now=deps.clock())


async def list_sessions(request: web.Request) -> web.Response:
    current = request[SESSION].session.session_sha256
    views = [SessionView(session_id=s.session_sha256, user_id=s.user_id,
                         created_at=s.created_at, last_seen_at=s.last_seen_at,
                         expires_at=min(s.idle_expires_at, s.absolute_expires_at),
                         client_address=s.client_address, user_agent=s.user_agent,
                         current=s.session_sha256 == current)
             for s in await _visible_sessions(request)]
    return json_response(Sessions(sessions=views).model_dump(mode="json"))


async def sign_out_everywhere(request: web.Request) -> web.Response:
    """Every session of the caller's, this one too."""
    org, actor_id, _, address = _caller(request)
    deps = request.app[DEPS]
    people = people_of(deps)
    now = deps.clock()
    revoked = await people.sessions.revoke_all(actor_id, at=now)
    await people.identity.append_audit(AuditRecord(
        at=now, actor_id=actor_id, action=AuditAction.SESSIONS_REVOKED_ALL,
        organisation_id=org, target=f"user:{actor_id}", client_address=address,
        details={"sessions": revoked}))
    response = json_response(Revoked(revoked=revoked).model_dump(mode="json"))
    clear_session_cookies(response, people)
    return response


async def revoke_session(request: web.Request) -> web.Response:
    org, actor_id, _, address = _caller(request)
    deps = request.app[DEPS]
    people = people_of(deps)
    digest = request.match_info["session_id"]
    target = next((s for s in await _visible_sessions(request)
                   if s.session_sha256 == digest), None)
    if target is None:
        raise ApiError(404, "session_not_found", "no live session of that id that this "
                       "caller may see", {"session_id": digest})
    now = deps.clock()
    revoked = await people.sessions.revoke(digest, at=now)
    if revoked:
        await people.identity.append_audit(AuditRecord(
            at=now, actor_id=actor_id, action=AuditAction.SESSION_REVOKED,
            organisation_id=org, target=f"user:{target.user_id}", client_address=address,
            details={"session": digest[:12]}))
    return json_response(Revoked(revoked=int(revoked)).model_dump(mode="json"))


async def audit_log(request: web.Request) -> web.Response:
    org, _, _, _ = _caller(request)
    limit = parse_int(request, "limit", default=100, low=1, high=1000)
    before = request.query.get("before_id")
    before_id = None if before is None else parse_int(request, "before_id", default=0,
                                                      low=1, high=2**62)
    records = await people_of(request.app[DEPS]).identity.audit(
        organisation_id=org, before_id=before_id, limit=limit)
    entries = [AuditEntry(audit_id=r.audit_id, at=r.at, actor_id=r.actor_id,
                          action=r.action.value, target=r.target,
                          client_address=r.client_address, details=dict(r.details))
               for r in records]
    return json_response(AuditLog(organisation_id=org, records=entries).model_dump(mode="json"))


_ERRORS = (400, 404, 409)
ENDPOINTS = [
    Endpoint("GET", "/api/users", list_users, "Members of the caller's organisation", "people",
             roles=USER_MANAGERS, people_only=True, response=Members),
    Endpoint("POST", "/api/users", create_user, "Add a member (at most the caller's role)",
             "people", roles=USER_MANAGERS, people_only=True, body=UserCreate,
             response=Member, ok_statuses=(201,), errors=(409,)),
    Endpoint("PATCH", "/api/users/{user_id}", update_user,
             "Rename, change the role of, disable or re-enable a member", "people",
             roles=USER_MANAGERS, people_only=True, params=(USER_ID,), body=UserUpdate,
             response=Member, errors=_ERRORS,
             description="Disabling revokes the member's sessions at once; the last active "
                         "admin cannot be demoted or disabled (409 `last_admin`)."),
    Endpoint("PUT", "/api/users/{user_id}/facilities", set_facilities,
             "Replace a member's assigned facilities (the organisation's)", "people",
             roles=USER_MANAGERS, people_only=True, params=(USER_ID,), body=Assignment,
             response=Member, errors=_ERRORS),
    Endpoint("GET", "/api/sessions", list_sessions,
             "Live sessions: the caller's own (an admin: the organisation's)", "people",
             roles=PEOPLE, people_only=True, response=Sessions),
    Endpoint("DELETE", "/api/sessions", sign_out_everywhere,
             "Sign out everywhere (every session of the caller's)", "people", roles=PEOPLE,
             people_only=True, response=Revoked),
    Endpoint("DELETE", "/api/sessions/{session_id}", revoke_session, "Revoke one session",
             "people", roles=PEOPLE, people_only=True, params=(SESSION_ID,),
             response=Revoked, errors=(404,)),
    Endpoint("GET", "/api/audit", audit_log, "The organisation's audit log, newest first",
             "people", roles=ADMIN, people_only=True, response=AuditLog, params=(
                 Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                       "most records returned"),
                 Param("before_id", "query", {"type": "integer", "minimum": 1},
                       "records older than this one (paging)"),
             )),
]
