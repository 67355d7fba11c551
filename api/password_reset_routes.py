"""Password resets (issue 16): ``POST /api/users/{user_id}/password-reset`` (admins; energy
managers within their organisation, for members not above them) issues a one-time token,
shown once; ``POST /api/auth/password-reset`` (public, limited per client address with the
sign-ins) sets a new password with it and revokes the user's sessions. The rules are
``agents/password_reset.py``'s."""

from __future__ import annotations

from aiohttp import web
from pydantic import AwareDatetime, Field

from agents.identity.passwords import MAX_LENGTH as PASSWORD_MAX_LENGTH
from agents.password_reset import UserDisabled, issue_password_reset, reset_password
from api.context import DEPS, json_response, parse_body, people_of
from api.endpoints import USER_MANAGERS, Endpoint
from api.errors import ApiError
from api.people import check_origin
from api.people_context import USER_ID, caller, client_address, domain_errors, limit_sign_in
from api.people_models import Strict
from tables.ports.identity import ResetTokenRefused


class PasswordResetIssued(Strict):
    user_id: str
    token: str
    """Shown once: hand it to the user (it sets their password once, before ``expires_at``)."""
    expires_at: AwareDatetime


class PasswordResetRequest(Strict):
    token: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    new_password: str = Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)


class PasswordResetDone(Strict):
    password_set: bool
    sessions_revoked: int
    """The user's sessions signed out by the reset (every one they had)."""


async def issue_password_reset_token(request: web.Request) -> web.Response:
    org, actor_id, actor, address = caller(request)
    deps = request.app[DEPS]
    people = people_of(deps)
    user_id = request.match_info["user_id"]
    try:
        with domain_errors():
            issued = await issue_password_reset(
                people.identity, user_id=user_id, actor=actor, organisation_id=org,
                actor_id=actor_id, at=deps.clock(), ttl_s=people.policy.password_reset_ttl_s,
                client_address=address)
    except UserDisabled as exc:
        raise ApiError(409, "user_disabled", str(exc), {"user_id": user_id}) from None
    answer = PasswordResetIssued(user_id=user_id, token=issued.token,
                                 expires_at=issued.reset.expires_at)
    return json_response(answer.model_dump(mode="json"), status=201)


async def reset_password_with_token(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    people = people_of(deps)
    check_origin(request)
    address = client_address(request)
    limit_sign_in(people.address_limiter, address, "from this address")
    body = parse_body(request, await request.read(), PasswordResetRequest)
    try:
        with domain_errors():
            done = await reset_password(people.identity, people.sessions, people.hasher,
                                        token=body.token, new_password=body.new_password,
                                        at=deps.clock(), client_address=address)
    except ResetTokenRefused as exc:
        raise ApiError(400, "invalid_reset_token", str(exc), {"reason": exc.reason}) from None
    answer = PasswordResetDone(password_set=True, sessions_revoked=done.sessions_revoked)
    return json_response(answer.model_dump(mode="json"))


ENDPOINTS = [
    Endpoint("POST", "/api/users/{user_id}/password-reset", issue_password_reset_token,
             "Issue a one-time password-reset token for a member", "people",
             roles=USER_MANAGERS, people_only=True, params=(USER_ID,),
             response=PasswordResetIssued, ok_statuses=(201,), errors=(404, 409),
             description="The token is shown once and stored as its SHA-256; it works once, "
                         "for `SEMS_PASSWORD_RESET_TTL_S` (30 min), and replaces the member's "
                         "earlier ones. A disabled member gets none (409 `user_disabled`)."),
    Endpoint("POST", "/api/auth/password-reset", reset_password_with_token,
             "Set a new password with a one-time reset token", "people", roles=None,
             body=PasswordResetRequest, response=PasswordResetDone, errors=(400, 403, 503),
             description="Public: the token is the credential. The new password must meet "
                         "the policy (400 `weak_password`; the token stays usable); a token "
                         "that is unknown, used, expired or of a disabled account is 400 "
                         "`invalid_reset_token`. Signs the user out everywhere and lifts a "
                         "lock-out. Limited per client address with the sign-ins (429 "
                         "`sign_in_rate_limited`)."),
]
