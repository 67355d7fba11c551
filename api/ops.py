"""Operational routes: health, Prometheus metrics, the OpenAPI document, the issuer's keys,
the dead letters."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import models
from api.context import DEPS, json_response, parse_int
from api.endpoints import ADMIN, Endpoint, Param
from tables.ports.store import StoreUnavailable

log = logging.getLogger(__name__)

SPEC = web.AppKey("openapi", bytes)
"""The OpenAPI document, serialized once by ``create_app``."""


async def healthz(request: web.Request) -> web.Response:
    """Public, for load balancers: whether each dependency is up, without the details (they go
    to the log)."""
    deps = request.app[DEPS]
    checks: dict[str, dict[str, Any]] = {}
    try:
        await deps.metadata.ping()
        checks["store"] = {"ok": True}
    except StoreUnavailable as exc:
        log.warning("health: store: %s", exc)
        checks["store"] = {"ok": False}
    for name, check in deps.health_checks.items():
        ok, detail = await check()
        if not ok:
            log.warning("health: %s: %s", name, detail)
        checks[name] = {"ok": ok}
    healthy = all(c["ok"] for c in checks.values())
    return json_response({"status": "ok" if healthy else "degraded", "checks": checks},
                         status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[DEPS].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SPEC], content_type="application/json")


async def jwks(request: web.Request) -> web.Response:
    keys = request.app[DEPS].jwks
    if keys is None:
        raise web.HTTPNotFound(reason="this SEMS uses an external identity provider")
    return json_response(keys)


async def dead_letters(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    limit = parse_int(request, "limit", default=100, low=1, high=1000)
    rows = await deps.timeseries.dead_letters(limit=limit)
    return json_response({"dead_letters": [d.model_dump(mode="json") for d in rows]})


def endpoints(*, local_issuer: bool) -> list[Endpoint]:
    out = [
        Endpoint("GET", "/healthz", healthz, "Liveness and dependencies", "operations",
                 roles=None, response=models.Health, ok_statuses=(200, 503)),
        Endpoint("GET", "/metrics", metrics, "Prometheus metrics", "operations", roles=ADMIN,
                 every_facility=True, response_type="text/plain",
                 description="Prometheus text format. Scrape with an admin token "
                             "(`authorization: {credentials_file: ...}` in the scrape config)."),
        Endpoint("GET", "/api/openapi.json", openapi, "This document", "operations", roles=None,
                 response_type="application/json", cacheable=True),
        Endpoint("GET", "/api/dead-letters", dead_letters, "Rejected readings, newest first",
                 "operations", roles=ADMIN, every_facility=True, response=models.DeadLetters,
                 params=(
                     Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                           "most dead letters returned"),
                 )),
    ]
    if local_issuer:
        out.append(Endpoint("GET", "/.well-known/jwks.json", jwks,
                            "Public keys of the local token issuer", "operations", roles=None,
                            response=models.Jwks, cacheable=True))
    return out
