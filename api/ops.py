"""Operational routes: health, Prometheus metrics, the OpenAPI document, the issuer's keys."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import models
from api.app import DEPS, json_response
from api.endpoints import ADMIN, Endpoint
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


def endpoints(*, local_issuer: bool) -> list[Endpoint]:
    out = [
        Endpoint("GET", "/healthz", healthz, "Liveness and dependencies", "operations",
                 roles=None, response=models.Health, ok_statuses=(200, 503)),
        Endpoint("GET", "/metrics", metrics, "Prometheus metrics", "operations", roles=ADMIN,
                 response_type="text/plain",
                 description="Prometheus text format. Scrape with an admin token "
                             "(`authorization: {credentials_file: ...}` in the scrape config)."),
        Endpoint("GET", "/api/openapi.json", openapi, "This document", "operations", roles=None,
                 response_type="application/json", cacheable=True),
    ]
    if local_issuer:
        out.append(Endpoint("GET", "/.well-known/jwks.json", jwks,
                            "Public keys of the local token issuer", "operations", roles=None,
                            response=models.Jwks, cacheable=True))
    return out
