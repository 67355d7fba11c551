"""aiohttp application factory: everything it needs arrives in ``ApiDeps``."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.errors import ApiError, error_response
from streams.logs import trace_id_from, trace_id_var
from streams.metrics import Metrics
from tables.ports import Cache, MetadataStore, StoreUnavailable, TimeSeriesStore

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class ApiDeps:
    timeseries: TimeSeriesStore
    metadata: MetadataStore
    metrics: Metrics
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    cache: Cache | None = None
    """Where ``/current`` keeps each facility's latest readings for ``current_ttl_s``."""
    current_ttl_s: float = 10.0


DEPS = web.AppKey("deps", ApiDeps)


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The error body for every failure, the request metrics, and the request's trace id: the
    caller's (``traceparent``, else ``X-Request-ID``) or a new one, on every log record made
    while serving it and in the ``X-Trace-Id`` response header."""
    metrics = request.app[DEPS].metrics
    route = route_name(request)
    trace_id = trace_id_from(request.headers.get("traceparent"),
                             request.headers.get("X-Request-ID"))
    token = trace_id_var.set(trace_id)
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.error_code, exc.message, exc.details)
        except StoreUnavailable:
            log.exception("store unavailable while serving %s", route)
            response = error_response(503, "store_unavailable",
                                      "the data store is unavailable; retry shortly")
        except web.HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            response = error_response(exc.status, code, exc.reason, {"path": request.path})
        except Exception:
            log.exception("unhandled error serving %s", route)
            response = error_response(500, "internal_error", "internal error")
        response.headers["X-Trace-Id"] = trace_id
    finally:
        trace_id_var.reset(token)
    metrics.api_requests.labels(route, request.method, str(response.status)).inc()
    metrics.api_latency.labels(route).observe(time.perf_counter() - started)
    return response


def create_app(deps: ApiDeps) -> web.Application:
    from api import routes

    app = web.Application(middlewares=[errors_and_metrics], client_max_size=64 * 1024)
    app[DEPS] = deps
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    routes.setup(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    checks: dict[str, dict[str, Any]] = {}
    try:
        await deps.metadata.ping()
        checks["store"] = {"ok": True}
    except StoreUnavailable as exc:
        checks["store"] = {"ok": False, "detail": str(exc)}
    for name, check in deps.health_checks.items():
        ok, detail = await check()
        checks[name] = {"ok": ok, "detail": detail}
    healthy = all(c["ok"] for c in checks.values())
    return json_response({"status": "ok" if healthy else "degraded", "checks": checks},
                         status=200 if healthy else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[DEPS].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
