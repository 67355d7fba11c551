"""Sign-in, sign-out and who-am-I (issue 16): ``POST /api/auth/login``, ``POST
/api/auth/logout``, ``GET /api/me``. The rules are ``agents/sign_in.py``'s; this module
translates HTTP, cookies and the sign-in rate limits (per account and per client address,
on top of the API's per-address limit)."""

from __future__ import annotations

import math

from aiohttp import web

from agents.sign_in import (
    SignInRefused,
    account_of,
    csrf_token,
    member_grants,
    sign_in,
    sign_out,
)
from api.context import DEPS, PRINCIPAL, json_response, parse_body, people_of
from api.endpoints import EVERY_ROLE, Endpoint
from api.errors import ApiError
from api.people import (
    SESSION,
    check_origin,
    clear_session_cookies,
    session_id_of,
    set_session_cookies,
)
from api.people_context import client_address, limit_sign_in
from api.people_models import LoginRequest, Me, OrganisationView, SignedOut, UserView

INVALID = "the email address or the password is wrong"
"""One message for an unknown account, a disabled one and a wrong password."""


async def login(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    people = people_of(deps)
    check_origin(request)  # no signing a victim's browser in to an attacker's account
    address = client_address(request)
    limit_sign_in(people.address_limiter, address, "from this address")
    body = parse_body(request, await request.read(), LoginRequest)
    limit_sign_in(people.account_limiter, account_of(body.email), "for this account")
    try:
        signed = await sign_in(people.identity, people.sessions, people.hasher,
                               email=body.email, password=body.password, at=deps.clock(),
                               policy=people.policy, organisation_id=body.organisation_id,
                               client_address=address,
                               user_agent=request.headers.get("User-Agent"))
    except SignInRefused as exc:
        raise _refusal(exc) from None
    membership = signed.membership
    organisation = await people.identity.organisation(membership.organisation_id)
    g = await member_grants(people.identity, membership)
    me = Me(via="session", role=membership.role.value, facility_ids=sorted(g.facility_ids),
            user=UserView.of(signed.user),
            organisation=None if organisation is None else OrganisationView(
                organisation_id=organisation.organisation_id, name=organisation.name),
            csrf_token=csrf_token(signed.session_id),
            session_expires_at=signed.session.absolute_expires_at)
    response = json_response(me.model_dump(mode="json"))
    set_session_cookies(response, people, signed.session_id)
    return response


def _refusal(exc: SignInRefused) -> ApiError:
    if exc.reason == "locked":
        retry = max(1, math.ceil(exc.retry_after_s))
        return ApiError(429, "sign_in_locked", "too many failed sign-ins for this account; "
                        "retry later, or ask an admin to lift the lock-out",
                        {"retry_after_s": retry}, headers={"Retry-After": str(retry)})
    if exc.reason == "no_organisation":
        return ApiError(403, "no_organisation", "this account belongs to no organisation "
                        "(or not to the one asked for)")
    return ApiError(401, "sign_in_failed", INVALID)


async def logout(request: web.Request) -> web.Response:
    """Revokes the caller's session (a token or key has none: nothing to do)."""
    deps = request.app[DEPS]
    resolved = request.get(SESSION)
    revoked = False
    people = deps.people
    if resolved is not None and people is not None:
        revoked = await sign_out(people.identity, people.sessions, resolved.session,
                                 at=deps.clock(), client_address=client_address(request))
    response = json_response(SignedOut(signed_out=revoked).model_dump(mode="json"))
    if people is not None and session_id_of(request, people) is not None:
        clear_session_cookies(response, people)
    return response


async def me(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    facilities = None if principal.facility_ids is None else sorted(principal.facility_ids)
    resolved = request.get(SESSION)
    if resolved is None:
        answer = Me(via=principal.via, role=principal.role.value, facility_ids=facilities)
        return json_response(answer.model_dump(mode="json"))
    people = people_of(request.app[DEPS])
    organisation = await people.identity.organisation(resolved.session.organisation_id)
    session_id = session_id_of(request, people) or ""
    answer = Me(via="session", role=principal.role.value, facility_ids=facilities,
                user=UserView.of(resolved.user),
                organisation=None if organisation is None else OrganisationView(
                    organisation_id=organisation.organisation_id, name=organisation.name),
                csrf_token=csrf_token(session_id),
                session_expires_at=resolved.session.absolute_expires_at)
    return json_response(answer.model_dump(mode="json"))


ENDPOINTS = [
    Endpoint("POST", "/api/auth/login", login, "Sign in with an email and a password",
             "people", roles=None, body=LoginRequest, response=Me, errors=(401, 403, 503),
             description="Sets the session cookie (`__Host-sems_session` over TLS, else "
                         "`sems_session`; HttpOnly, SameSite=Lax) and the readable "
                         "`sems_csrf` cookie. One answer (401 `sign_in_failed`) for an "
                         "unknown account and a wrong password; 429 `sign_in_locked` after "
                         "repeated failures, `sign_in_rate_limited` per account or address."),
    Endpoint("POST", "/api/auth/logout", logout, "Sign out (revoke this session)", "people",
             roles=EVERY_ROLE, response=SignedOut,
             description="With a session cookie, needs `X-CSRF-Token`."),
    Endpoint("GET", "/api/me", me, "Who is calling: user, organisation, role, facilities",
             "people", roles=EVERY_ROLE, response=Me),
]
