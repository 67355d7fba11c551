"""aiohttp application factory: everything it needs arrives in ``ApiDeps``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from api import openapi, params, route_table
from api.context import DEPS, PRINCIPAL, REGISTRY, ApiDeps, limit_rate
from api.endpoints import UNLIMITED_PATHS, Endpoint
from api.errors import ApiError, error_response
from api.metadata_cache import MetadataCache
from api.ops import SPEC
from api.people import check_csrf, has_credentials, session_id_of, session_principal
from api.principal import Principal
from core.logs import trace_id_from, trace_id_var
from tables.ports.store import StoreUnavailable

log = logging.getLogger(__name__)

ENDPOINTS = web.AppKey("endpoints", dict)
"""(method, path) -> Endpoint, for the middleware."""
ENDPOINT = web.RequestKey("endpoint", Endpoint)
"""The request's route, looked up once by the middleware (``security_headers`` reads it)."""


def route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


async def admit(request: web.Request, endpoint: Endpoint) -> None:
    """Authenticate the caller, then check role, facility scope and rate, in that order: a
    caller learns nothing about a facility outside its scope, not even whether it exists."""
    deps = request.app[DEPS]
    principal = await authenticate(request, deps)
    roles = endpoint.roles or frozenset()
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"the {principal.role.value} role may not call this "
                       "route", {"role": principal.role.value,
                                 "allowed_roles": sorted(r.value for r in roles)})
    if endpoint.people_only and principal.via != "session":
        raise ApiError(403, "forbidden", "this route acts within a signed-in person's "
                       "organisation: sign in (POST /api/auth/login); tokens and API keys "
                       "have no organisation (use the sems CLI)", {"via": principal.via})
    if endpoint.every_facility and principal.facility_ids is not None:
        raise ApiError(403, "forbidden", "this route spans every facility: it needs a "
                       "credential that sees every facility (an admin token)",
                       {"role": principal.role.value})
    if endpoint.scoped:
        facility_id = request.match_info["facility_id"]
        if not principal.may_access(facility_id):
            raise ApiError(403, "facility_forbidden",
                           f"this caller may not see facility {facility_id!r}",
                           {"facility_id": facility_id})
    limit_rate(deps, principal.rate_key, principal.via)
    request[PRINCIPAL] = principal


async def authenticate(request: web.Request, deps: ApiDeps) -> Principal:
    """A bearer token or API key when one is sent (they take precedence), else the session
    cookie, whose unsafe requests must pass the CSRF check (``api/people.py``)."""
    people = deps.people
    if people is not None and not has_credentials(request):
        session_id = session_id_of(request, people)
        if session_id is not None:
            principal = await session_principal(request, people, session_id,
                                                now=deps.clock())
            check_csrf(request, session_id)
            return principal
    return await deps.auth.authenticate(request.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
FAILED_AUTH_COST = 10.0
"""What a 401 costs its address's budget, in requests: at the default 400 burst and 200/s,
about 40 refused credentials at once, then 20 a second."""


def client_address(request: web.Request) -> str:
    """The peer's address (not ``X-Forwarded-For``: anyone can write that header)."""
    return request.remote or "unknown"


def limit_client(deps: ApiDeps, request: web.Request) -> None:
    """One request off the client address's bucket, before anything else is looked at: a
    flood of garbage tokens or forged webhooks from one address gets 429s."""
    wait_s = deps.client_rate_limiter.take(client_address(request), time.monotonic())
    if wait_s > 0:
        deps.metrics.api_rate_limited.labels("address").inc()
        raise ApiError(429, "rate_limited", "too many requests from this address; slow down",
                       {"retry_after_s": math.ceil(wait_s)},
                       headers={"Retry-After": str(math.ceil(wait_s))})


@web.middleware
async def errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Admission (``admit``), the error body for every failure, the request metrics, and the
    request's trace id: the caller's (``traceparent``, else ``X-Request-ID``) or a new one, on
    every log record made while serving it and in the ``X-Trace-Id`` response header."""
    deps = request.app[DEPS]
    metrics = deps.metrics
    route = route_name(request)
    trace_id = trace_id_from(request.headers.get("traceparent"),
                             request.headers.get("X-Request-ID"))
    token = trace_id_var.set(trace_id)
    started = time.perf_counter()
    try:
        try:
            if request.path not in UNLIMITED_PATHS:
                limit_client(deps, request)
            endpoint = request.app[ENDPOINTS].get((request.method, route))
            if endpoint is not None:
                request[ENDPOINT] = endpoint
                if endpoint.roles is not None:
                    await admit(request, endpoint)
                params.check(endpoint.params, request.query, request.match_info)
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.error_code, exc.message, exc.details)
            response.headers.update(exc.headers)
        except StoreUnavailable:
            log.exception("store unavailable while serving %s", route)
            response = error_response(503, "store_unavailable",
                                      "the data store is unavailable; retry shortly")
        except web.HTTPException as exc:
            code = _HTTP_CODES.get(exc.status, "http_error")
            response = error_response(exc.status, code, exc.reason, {"path": request.path})
            if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods that are allowed
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled error serving %s", route)
            response = error_response(500, "internal_error", "internal error")
        response.headers["X-Trace-Id"] = trace_id
        if response.status == 401 and request.path not in UNLIMITED_PATHS:
            deps.client_rate_limiter.charge(client_address(request), time.monotonic(),
                                            FAILED_AUTH_COST - 1)
    finally:
        trace_id_var.reset(token)
    metrics.api_requests.labels(route, request.method, str(response.status)).inc()
    metrics.api_latency.labels(route).observe(time.perf_counter() - started)
    return response


VERSION = "0.1.0"
SECURITY_HEADERS = {"Server": "sems", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
"""On every response the app makes (``api/aiohttp_protocol_errors.py`` sets them on
aiohttp's own error answers): no server version to fingerprint, no content sniffing, no
referrer leak."""


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs for every prepared response, whatever made it.
    ``Cache-Control: no-store`` on all but the cacheable public documents: what an
    authenticated route answers (data or an error) must not stay in a shared cache."""
    response.headers.update(SECURITY_HEADERS)
    endpoint = request.get(ENDPOINT)
    if endpoint is None or not endpoint.cacheable:
        response.headers["Cache-Control"] = "no-store"


def create_app(deps: ApiDeps) -> web.Application:
    app = web.Application(middlewares=[errors_and_metrics], client_max_size=deps.max_body_bytes)
    app[DEPS] = deps
    app[REGISTRY] = MetadataCache(deps.metadata, ttl_s=deps.metadata_ttl_s)
    route_table.setup(app)
    endpoints = route_table.endpoints(local_issuer=deps.jwks is not None)
    for e in endpoints:
        app.router.add_route(e.method, e.path, e.handler)
    params.check_declared(p for e in endpoints for p in e.params)
    app[ENDPOINTS] = {(e.method, e.path): e for e in endpoints}
    app.on_response_prepare.append(security_headers)
    app[SPEC] = orjson.dumps(openapi.build(endpoints, title="SEMS API", version=VERSION))
    return app
