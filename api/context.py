"""What a handler needs, shared by the route modules and ``api/app.py``: the dependencies and
the request's principal under their keys, the JSON answer, the rate limit, the facility of the
path and the query parsers. Route modules import this, never the app."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import bounds
from api.auth import Authenticator
from api.dr_deps import DrApi
from api.errors import ApiError, bad_parameter, not_found
from api.metadata_cache import MetadataCache
from api.params import INTEGER
from api.people import People
from api.principal import Principal
from api.ratelimit import RateLimiter
from core.metrics import Metrics
from schemas.metadata import Facility
from tables.ports.cache import Cache
from tables.ports.forecasts import ForecastStore
from tables.ports.metadata import MetadataStore
from tables.ports.timeseries import TimeSeriesStore

HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class ApiDeps:
    timeseries: TimeSeriesStore
    metadata: MetadataStore
    metrics: Metrics
    auth: Authenticator
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    cache: Cache | None = None
    """Where ``/current`` keeps each facility's latest readings for ``current_ttl_s``."""
    current_ttl_s: float = 10.0
    metadata_ttl_s: float = 5.0
    """How long ``/api/facilities`` lists the registry from memory (``api/metadata_cache.py``)."""
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(50.0, 200))
    """Per credential (``Principal.rate_key``), after authentication."""
    client_rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(200.0, 400))
    """Per client address, before authentication (every route but ``/healthz``)."""
    jwks: dict[str, Any] | None = None
    """The local issuer's public keys, served at /.well-known/jwks.json (None: an external
    identity provider publishes its own)."""
    max_body_bytes: int = 64 * 1024
    forecasts: ForecastStore | None = None
    dr: DrApi | None = None
    """Demand response (``api/dr_routes.py``); None: those routes answer 503."""
    people: People | None = None
    """Sign-in and the people routes (``api/people.py``); None: sign-in answers 503 and
    session cookies are not read."""


DEPS = web.AppKey("deps", ApiDeps)
REGISTRY = web.AppKey("registry", MetadataCache)
"""The facilities and meters as ``/api/facilities`` lists them, refreshed every
``metadata_ttl_s``."""
PRINCIPAL = web.RequestKey("principal", Principal)
"""Who is calling, set by the middleware on every authenticated route."""


M = TypeVar("M", bound=BaseModel)


def parse_body(request: web.Request, body: bytes, model: type[M]) -> M:
    """A JSON body by its model (strict models: unknown fields refused), or 415/400 naming
    what is wrong (never the values sent: they may be passwords)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json",
                       {"content_type": request.content_type})
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", "the body is not a valid " + model.__name__,
                       exc.errors(include_url=False, include_context=False,
                                  include_input=False)) from None


def people_of(deps: ApiDeps) -> People:
    if deps.people is None:
        raise ApiError(503, "sign_in_unavailable", "sign-in is not configured in this process")
    return deps.people


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def raw_json_response(body: bytes) -> web.Response:
    """An answer serialized beforehand (``api/metadata_cache.py``)."""
    return web.Response(body=body, content_type="application/json")


def limit_rate(deps: ApiDeps, key: str, credential: str) -> None:
    """One request off ``key``'s bucket, or 429 with when to come back."""
    wait_s = deps.rate_limiter.take(key, time.monotonic())
    if wait_s > 0:
        deps.metrics.api_rate_limited.labels(credential).inc()
        raise ApiError(429, "rate_limited", "too many requests; slow down",
                       {"retry_after_s": math.ceil(wait_s)},
                       headers={"Retry-After": str(math.ceil(wait_s))})


async def facility_or_404(request: web.Request) -> Facility:
    """The facility the path names (the middleware has checked the caller may see it)."""
    facility_id = request.match_info["facility_id"]
    facility = await request.app[DEPS].metadata.facility(facility_id)
    if facility is None:
        raise not_found("facility", facility_id)
    return facility


def parse_time(request: web.Request, name: str) -> datetime | None:
    """A time query parameter by the exact grammar and range of ``api/bounds.py``."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return bounds.parse_time(name, raw)


def parse_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if INTEGER.fullmatch(raw) is None:  # int() takes " 7", "+7", "7_0" and Unicode digits
        raise bad_parameter(name, f"{name} must be an integer",
                            value=raw[:bounds.MAX_ECHO_CHARS])
    value = int(raw)
    if not low <= value <= high:
        raise bad_parameter(name, f"{name} must be between {low} and {high}", value=value)
    return value
