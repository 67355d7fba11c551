"""Signed-in people in the API (issue 16): the session cookie, its CSRF check, and the
``Principal`` a session becomes.

The cookie is ``__Host-sems_session`` (``Secure``, ``Path=/``, no ``Domain``: only this host
over TLS may set or read it) when the API is served over TLS (``secure_cookies``, e.g.
behind a TLS proxy), otherwise ``sems_session``; always ``HttpOnly`` and ``SameSite=Lax``.
Its value is the session id; the stores keep only its SHA-256.

CSRF: a cookie-authenticated ``POST``/``PUT``/``PATCH``/``DELETE`` must send
``X-CSRF-Token`` equal to the session's token (derived from the session id, handed out by
sign-in and ``GET /api/me``, and set as the readable cookie ``sems_csrf`` for the dashboard to
copy: a double submit), and, when it carries an ``Origin``, one of this host. Another site
can make a browser send the cookie, but can neither read the token nor forge the header.
Bearer tokens and API keys are not sent by browsers on their own and need neither.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web

from agents.identity.passwords import PasswordHasher
from agents.sign_in import Resolved, SignInPolicy, csrf_token, resolve
from api.errors import ApiError
from api.principal import Principal, Role
from api.ratelimit import RateLimiter
from tables.ports.identity import IdentityStore, SessionStore

SECURE_COOKIE = "__Host-sems_session"
PLAIN_COOKIE = "sems_session"
CSRF_COOKIE = "sems_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

SESSION = web.RequestKey("session", Resolved)
"""The request's session, resolved once by the middleware (``/api/me`` reads it)."""


@dataclass(frozen=True)
class People:
    """What sign-in and the people routes need: the stores, the hasher and the policies."""

    identity: IdentityStore
    sessions: SessionStore
    hasher: PasswordHasher = field(default_factory=PasswordHasher)
    policy: SignInPolicy = field(default_factory=SignInPolicy)
    secure_cookies: bool = False
    account_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(10 / 60, 10))
    """Sign-in attempts per account (normalised email), whatever the address."""
    address_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(30 / 60, 30))
    """Sign-in attempts per client address, whatever the account."""

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.secure_cookies else PLAIN_COOKIE


def has_credentials(request: web.Request) -> bool:
    """A bearer token or API key is present: it takes precedence over a session cookie."""
    return "Authorization" in request.headers or "X-API-Key" in request.headers


def session_id_of(request: web.Request, people: People) -> str | None:
    value = request.cookies.get(people.cookie_name)
    return value or None


async def session_principal(request: web.Request, people: People, session_id: str, *,
                       now: datetime) -> Principal:
    """The principal of the session cookie (and the session under ``SESSION``), or 401."""
    resolved = await resolve(people.identity, people.sessions, session_id, now=now)
    if resolved is None:
        raise ApiError(401, "unauthenticated", "the session has expired or was signed out; "
                       "sign in again", headers={"WWW-Authenticate": 'Bearer realm="sems"'})
    request[SESSION] = resolved
    user = resolved.user
    return Principal(subject=user.user_id, role=Role(resolved.membership.role.value),
                     facility_ids=resolved.grants.facility_ids, via="session",
                     user_id=user.user_id, organisation_id=resolved.session.organisation_id)


def check_csrf(request: web.Request, session_id: str) -> None:
    """403 ``csrf_failed`` unless an unsafe cookie-authenticated request proves it comes from
    this site (the module's docstring)."""
    if request.method not in UNSAFE_METHODS:
        return
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), csrf_token(session_id).encode()):
        raise ApiError(403, "csrf_failed", f"a signed-in {request.method} needs the "
                       f"{CSRF_HEADER} header with the session's CSRF token (GET /api/me)",
                       {"header": CSRF_HEADER})


def check_origin(request: web.Request) -> None:
    """An ``Origin`` header, when sent, must name this host (browsers send it on every
    cross-site POST); none is fine (non-browser clients, older same-origin requests)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower():
        raise ApiError(403, "csrf_failed", "the request comes from another site",
                       {"origin": origin[:200]})


def set_session_cookies(response: web.StreamResponse, people: People, session_id: str) -> None:
    max_age = round(people.policy.lifetime_s)
    secure = people.secure_cookies
    response.set_cookie(people.cookie_name, session_id, max_age=max_age, path="/",
                        secure=secure, httponly=True, samesite="Lax")
    response.set_cookie(CSRF_COOKIE, csrf_token(session_id), max_age=max_age, path="/",
                        secure=secure, httponly=False, samesite="Lax")


def clear_session_cookies(response: web.StreamResponse, people: People) -> None:
    secure = people.secure_cookies
    response.del_cookie(people.cookie_name, path="/", secure=secure, httponly=True,
                        samesite="Lax")
    response.del_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="Lax")
