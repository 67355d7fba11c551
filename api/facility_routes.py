"""Dashboard routes of the facilities: the list, live status, rollups."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from api import models
from api.context import (
    DEPS,
    PRINCIPAL,
    REGISTRY,
    ApiDeps,
    facility_or_404,
    json_response,
    parse_int,
    parse_time,
    raw_json_response,
)
from api.endpoints import EVERY_ROLE, FACILITY_ID, Endpoint, Param
from api.errors import bad_parameter, not_found
from schemas.metadata import Facility, MeterType
from schemas.reading import SensorReading
from schemas.rollup import Scope, WindowName
from tables.ports.cache import CacheUnavailable

log = logging.getLogger(__name__)

DEFAULT_SPAN: dict[WindowName, timedelta] = {
    WindowName.MIN_1: timedelta(hours=2),
    WindowName.MIN_15: timedelta(days=1),
    WindowName.HOUR_1: timedelta(days=7),
}
MAX_POINTS = 10_000


Inflight = dict[str, "asyncio.Future[list[SensorReading]]"]
INFLIGHT = web.AppKey("current-inflight", dict)
"""Store queries of ``/current`` under way, by facility: concurrent misses share one."""


def setup(app: web.Application) -> None:
    """This module's state in a new app."""
    app[INFLIGHT] = {}


async def list_facilities(request: web.Request) -> web.Response:
    """The facilities the caller may see, each with its meters: the store answers a ping
    first, so that an unavailable store is a 503 here as on every route that reads it; the
    list itself comes from the registry in memory (``api/metadata_cache.py``)."""
    await request.app[DEPS].metadata.ping()
    registry = await request.app[REGISTRY].registry()
    scope = request[PRINCIPAL].facility_ids
    if scope is None:
        return raw_json_response(registry.listing_body)
    return json_response({"facilities": [entry for facility_id, entry in registry.listing
                                         if facility_id in scope]})


CURRENT_KEY = "current:v2:"
"""The cache key's prefix; ``v2``: the snapshot below (``current:`` held a reading list)."""


async def current(request: web.Request) -> web.Response:
    """Latest state of a facility: the sum of its main meters' latest readings against the
    contracted demand, every meter's latest reading, and how old the data is. A cached
    snapshot is answered without the store: only the ages are worked out per request."""
    deps = request.app[DEPS]
    snapshot = await current_snapshot(request)
    now = deps.clock()
    now_us = (now - EPOCH) // ONE_US
    data_us = snapshot["data_us"]
    return json_response({
        "facility_id": snapshot["facility_id"],
        "as_of": now.isoformat(),
        "total_power_kw": snapshot["total_power_kw"],
        "contract_demand_kw": snapshot["contract_demand_kw"],
        "contract_utilization_pct": snapshot["contract_utilization_pct"],
        "data_timestamp": snapshot["data_timestamp"],
        "data_age_s": None if data_us is None else round((now_us - data_us) / 1e6, 3),
        "meters": [{**m, "age_s": round((now_us - at_us) / 1e6, 3)}
                   for m, at_us in zip(snapshot["meters"], snapshot["meter_us"], strict=True)],
    })


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def snapshot_of(facility: Facility, latest: list[SensorReading]) -> dict[str, Any]:
    """What ``/current`` says of a facility apart from the ages, as JSON values: times as
    integer microseconds since the epoch, so that an age is exact to the microsecond."""
    mains = [r for r in latest if r.meter_type is MeterType.MAIN]
    total_kw = sum(r.active_power_kw for r in mains) if mains else None
    oldest_main = min((r.timestamp for r in mains), default=None)
    return {
        "facility_id": facility.facility_id,
        "total_power_kw": total_kw,
        "contract_demand_kw": facility.contract_demand_kw,
        "contract_utilization_pct": (
            None if total_kw is None else round(100 * total_kw / facility.contract_demand_kw, 2)
        ),
        "data_timestamp": oldest_main.isoformat() if oldest_main else None,
        "data_us": None if oldest_main is None else (oldest_main - EPOCH) // ONE_US,
        "meters": [r.model_dump(mode="json", exclude={"facility_id"}) for r in latest],
        "meter_us": [(r.timestamp - EPOCH) // ONE_US for r in latest],
    }


async def current_snapshot(request: web.Request) -> dict[str, Any]:
    """The facility's snapshot, through the cache when there is one: a dashboard polled by
    many screens costs one store query per facility per TTL. Requests that miss while that
    query is under way wait for it instead of querying too, and each entry lives a random
    80-100 % of the TTL, so that entries set together do not all expire together. When the
    cache fails, the store answers (uncached) and the failure is counted. A facility that does
    not exist is a 404 and never cached."""
    deps = request.app[DEPS]
    facility_id = request.match_info["facility_id"]
    cache = deps.cache
    counter = deps.metrics.cache_requests
    key = CURRENT_KEY + facility_id
    usable = cache is not None
    if cache is not None:
        try:
            cached = await cache.get(key)
        except CacheUnavailable as exc:
            log.debug("cache: %s", exc)
            counter.labels("current", "error").inc()
            cached, usable = None, False
        if cached is not None:
            counter.labels("current", "hit").inc()
            snapshot: dict[str, Any] = orjson.loads(cached)
            return snapshot
        if usable:
            counter.labels("current", "miss").inc()
    facility = await facility_or_404(request)
    latest = await _query_once(deps, facility_id, request.app[INFLIGHT])
    snapshot = snapshot_of(facility, latest)
    if cache is not None and usable:
        try:
            await cache.set(key, orjson.dumps(snapshot),
                            ttl_s=deps.current_ttl_s * random.uniform(0.8, 1.0))
        except CacheUnavailable as exc:
            log.debug("cache: %s", exc)
            counter.labels("current", "error").inc()
    return snapshot


async def _query_once(deps: ApiDeps, facility_id: str,
                      inflight: Inflight) -> list[SensorReading]:
    pending = inflight.get(facility_id)
    if pending is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if not pending.cancelled():
                raise  # this request was cancelled, not the query it waited for
    future: asyncio.Future[list[SensorReading]] = asyncio.get_running_loop().create_future()
    inflight[facility_id] = future
    try:
        latest = await deps.timeseries.latest_readings(facility_id)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: waiters, if any, get it too
        raise
    else:
        future.set_result(latest)
        return latest
    finally:
        if inflight.get(facility_id) is future:
            del inflight[facility_id]


async def rollups(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    facility = await facility_or_404(request)
    raw_window = request.query.get("window", WindowName.MIN_15.value)
    try:
        window = WindowName(raw_window)
    except ValueError:
        raise bad_parameter("window", "window must be one of 1m, 15m, 1h",
                            value=raw_window) from None
    meter_id = request.query.get("meter_id")
    scope = Scope.FACILITY
    scope_id = facility.facility_id
    if meter_id is not None:
        known = {m.meter_id for m in await deps.metadata.meters()
                 if m.facility_id == facility.facility_id}
        if meter_id not in known:
            raise not_found("meter", meter_id)
        scope, scope_id = Scope.METER, meter_id
    end = parse_time(request, "end") or deps.clock()
    # end >= 1970 (MIN_TIME), so subtracting a default span of days cannot overflow
    start = parse_time(request, "start") or end - DEFAULT_SPAN[window]
    if start >= end:
        raise bad_parameter("start", "start must be before end",
                            start=start.isoformat(), end=end.isoformat())
    limit = parse_int(request, "limit", default=MAX_POINTS, low=1, high=MAX_POINTS)
    rows = await deps.timeseries.rollups(scope=scope, scope_id=scope_id, window=window,
                                         start=start, end=end, limit=limit + 1)
    truncated = len(rows) > limit
    return json_response({
        "facility_id": facility.facility_id,
        "scope": scope.value,
        "meter_id": meter_id,
        "window": window.value,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "truncated": truncated,
        "rollups": [r.model_dump(mode="json") for r in rows[:limit]],
    })


_TIME = {"type": "string", "format": "date-time"}
ENDPOINTS = [
    Endpoint("GET", "/api/facilities", list_facilities, "Facilities the caller may see",
             "facilities", roles=EVERY_ROLE, response=models.Facilities),
    Endpoint("GET", "/api/facilities/{facility_id}/current", current,
             "Live load of a facility", "facilities", roles=EVERY_ROLE,
             response=models.Current, params=(FACILITY_ID,), errors=(404,),
             description="Sum of the main meters' latest readings against the contracted "
                         "demand, each meter's latest reading and how old the data is; cached "
                         "for at most SEMS_CURRENT_CACHE_TTL_S."),
    Endpoint("GET", "/api/facilities/{facility_id}/rollups", rollups,
             "Energy rollups of a facility or one of its meters", "facilities",
             roles=EVERY_ROLE, response=models.Rollups, errors=(404,), params=(
                 FACILITY_ID,
                 Param("window", "query", {"type": "string", "enum": ["1m", "15m", "1h"],
                                           "default": "15m"}, "rollup window"),
                 Param("meter_id", "query", {"type": "string", "maxLength": 64},
                       "a meter of the facility instead of the facility total"),
                 Param("start", "query", _TIME, "first window start (default: end - span)"),
                 Param("end", "query", _TIME, "end of the range, exclusive (default: now)"),
                 Param("limit", "query", {"type": "integer", "minimum": 1,
                                          "maximum": MAX_POINTS}, "most rollups returned"),
             )),
]
