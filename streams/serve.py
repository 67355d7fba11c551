"""The long-running commands, ``sems run``, ``sems worker`` and ``sems ingest``: a process the
composition root builds (``streams/compose.py``), started under ``streams.shutdown`` and
stopped within the grace."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.looplag import freeze_startup_heap, probe_loop_lag
from core.metrics import Metrics
from streams.settings import DEFAULT_DATA_DIR, Settings
from streams.shutdown import Shutdown, exit_abandoned

if TYPE_CHECKING:
    from aiohttp import web

    from api.context import ApiDeps, HealthCheck
    from api.dr_deps import DrApi
    from streams.demo_people import DemoUser
    from streams.runtime import Runtime
    from streams.security import Security
    from tables.ports.cache import Cache
    from tables.ports.identity import SessionStore
    from tables.ports.store import Store

API_SHUTDOWN_S = 2.0
"""How long in-flight API requests may finish at the stop."""


async def _stopping(settings: Settings, work: Callable[[Shutdown], Coroutine[Any, Any, bool]]
                    ) -> int:
    """Run a long-running command: ``work`` starts it, registering its stop steps as it goes,
    and returns whether it is up; then it runs until SIGTERM/SIGINT and stops within
    ``shutdown_grace_s`` (``streams.shutdown``). A start-up that fails still runs the stop
    steps registered so far, then raises."""
    shutdown = Shutdown(grace_s=settings.shutdown_grace_s)
    shutdown.install()
    try:
        if await shutdown.until_requested(work(shutdown)):
            await shutdown.requested.wait()
    finally:
        print("stopping...", flush=True)
        abandoned = await shutdown.stop()
        if abandoned:
            exit_abandoned(shutdown.exit_code(abandoned=True))
    return shutdown.exit_code(abandoned=False)


def _lag_probe(shutdown: Shutdown, metrics: Metrics) -> None:
    """The event-loop lag probe, from the start-up on (it is what start-up stalls show in)."""
    probe = asyncio.create_task(probe_loop_lag(metrics.event_loop_lag), name="loop-lag probe")

    async def cancel() -> None:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe

    shutdown.on_stop("loop-lag probe", cancel)


async def worker(settings: Settings, *, ingest: bool = False) -> int:
    """A kafka-runtime worker (takes a share of the partitions), or with ``ingest`` the ingest
    service alone (MQTT -> Kafka); no API."""
    from streams import compose

    async def start(shutdown: Shutdown) -> bool:
        runtime = compose.kafka(settings)
        shutdown.metrics = runtime.metrics
        _lag_probe(shutdown, runtime.metrics)
        shutdown.on_stop_steps(runtime.stop_steps)
        await runtime.open()
        await runtime.start(ingest=ingest, worker=not ingest)
        if not ingest:
            shutdown.stop_when(runtime.vital, runtime.until_failed())
        freeze_startup_heap()
        what = (f"ingest from {settings.mqtt_url}" if ingest
                else f"worker (group {settings.kafka_app_id})")
        print(f"SEMS {what} running on Kafka {settings.kafka_bootstrap}. Press Ctrl+C to "
              "stop.", flush=True)
        return True

    return await _stopping(settings, start)


async def run(settings: Settings) -> int:
    return await _stopping(settings, lambda shutdown: _start_run(settings, shutdown))


async def _start_run(settings: Settings, shutdown: Shutdown) -> bool:
    """``sems run``: the runtime, the API, and the demo fleet's simulator."""
    from api import create_app
    from connectors.mqtt import BrokerAddress, MqttPublisher
    from schemas.raw import RawMessage
    from simulators.fleet import build_fleet
    from simulators.publish import Simulation
    from streams import compose

    fleet = build_fleet(facilities=settings.simulate_facilities,
                        meters_per_facility=settings.simulate_meters, seed=settings.simulate_seed)
    # The in-process BMS commands the buildings the simulator reads.
    runtime = compose.runtime(settings, bms_models=fleet.models if settings.simulate else None)
    shutdown.metrics = runtime.metrics
    _lag_probe(shutdown, runtime.metrics)
    shutdown.on_stop_steps(runtime.stop_steps)
    await runtime.open()
    demo_users: list[DemoUser] = []
    if settings.demo_fleet:
        await runtime.store.upsert_facilities(list(fleet.facilities))
        await runtime.store.upsert_meters(list(fleet.meters))
        await runtime.reload_registry()
        demo_users = await _demo_people(settings, runtime.store,
                                        [f.facility_id for f in fleet.facilities])
    await runtime.start()
    shutdown.stop_when(runtime.vital, runtime.until_failed())

    async def health_mqtt() -> tuple[bool, str]:
        if runtime.mqtt is None:
            return True, "not used (in-process simulator)"
        ok = runtime.mqtt.connected.is_set()
        return ok, "connected" if ok else "disconnected"

    guard = await _security(settings, runtime.store, shutdown)
    app = create_app(api_deps(settings, guard, store=runtime.store, metrics=runtime.metrics,
                              cache=runtime.cache, clock=runtime.clock,
                              health_checks={"mqtt": health_mqtt}, dr=runtime.dr.api,
                              sessions=_sessions(settings, runtime.store, shutdown)))
    await listen(settings, shutdown, app)
    _banner(settings, runtime, first=fleet.facilities[0].facility_id if fleet.facilities
            else "FACILITY")
    if demo_users:
        from streams.demo_people import demo_block

        print(demo_block(demo_users, base_url=f"http://{settings.api_host}:{settings.api_port}"),
              flush=True)

    if settings.simulate:
        if settings.mqtt_url:
            publisher = await MqttPublisher(BrokerAddress.parse(settings.mqtt_url),
                                            client_id="sems-simulator").__aenter__()
            shutdown.on_stop("simulator's MQTT publisher flush",
                             lambda: publisher.__aexit__(None, None, None),
                             within_s=min(API_SHUTDOWN_S, settings.shutdown_grace_s / 4))
            publish = publisher.publish
        else:
            async def publish(topic: str, payload: bytes) -> None:
                await runtime.raw.send(RawMessage(topic, payload, runtime.clock()))

        sim = Simulation(fleet, publish, seed=settings.simulate_seed)

        async def simulate() -> None:
            now = runtime.clock()
            next_step = await sim.run_range(
                now - timedelta(seconds=settings.simulate_backfill_s), now)
            await sim.run_live(runtime.clock, next_step=next_step)

        sim_task = asyncio.create_task(simulate(), name="simulator")

        async def stop_simulator() -> None:
            sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim_task

        shutdown.on_stop("simulator stop", stop_simulator)
    return True


async def _security(settings: Settings, store: Store, shutdown: Shutdown) -> Security:
    """Authentication and the rate limits, closed at the stop."""
    from streams.security import security

    guarding = security(settings, store, lambda: datetime.now(UTC))
    guard = await guarding.__aenter__()
    shutdown.on_stop("security close", lambda: guarding.__aexit__(None, None, None))
    return guard


async def _demo_people(settings: Settings, store: Store,
                       facility_ids: list[str]) -> list[DemoUser]:
    """The demo organisation and its users, the new ones with their passwords
    (``streams/demo_people.py``)."""
    from streams.demo_people import provision
    from streams.security import hasher

    return await provision(store, hasher(settings), facility_ids, at=datetime.now(UTC))


def _sessions(settings: Settings, store: Store, shutdown: Shutdown) -> SessionStore | None:
    """The session store (None: production without Redis, no sign-in), its Redis client
    closed at the stop."""
    from streams.stores import build_sessions

    sessions = build_sessions(settings, store)
    close = getattr(sessions, "close", None)
    if close is not None:  # the embedded store's sessions close with the store
        shutdown.on_stop("sessions close", close)
    return sessions


def api_deps(settings: Settings, guard: Security, *, store: Store, metrics: Metrics,
             cache: Cache | None, clock: Callable[[], datetime],
             health_checks: dict[str, HealthCheck], dr: DrApi | None,
             sessions: SessionStore | None = None) -> ApiDeps:
    from api import ApiDeps
    from streams.security import people

    return ApiDeps(people=None if sessions is None else people(settings, store, sessions),
                   timeseries=store, metadata=store, metrics=metrics, clock=clock,
                   health_checks=health_checks, cache=cache,
                   current_ttl_s=settings.current_cache_ttl_s,
                   metadata_ttl_s=settings.api_metadata_ttl_s, auth=guard.auth,
                   rate_limiter=guard.rate_limiter,
                   client_rate_limiter=guard.client_rate_limiter, jwks=guard.jwks,
                   max_body_bytes=settings.api_max_body_bytes, forecasts=store, dr=dr)


async def listen(settings: Settings, shutdown: Shutdown, app: web.Application, *,
                 reuse_port: bool = False) -> None:
    """Serve ``app`` on the API address; with ``reuse_port`` beside the other processes of a
    ``sems api --workers N`` group (SO_REUSEPORT: the kernel spreads the connections)."""
    from aiohttp import web

    from api.aiohttp_protocol_errors import api_runner

    # In-flight requests get a moment at the stop, not aiohttp's default minute.
    web_runner = api_runner(app, access_log=None,
                            shutdown_timeout=min(API_SHUTDOWN_S, settings.shutdown_grace_s / 4))
    await web_runner.setup()
    shutdown.on_stop("API server stop", web_runner.cleanup)
    site = web.TCPSite(web_runner, settings.api_host, settings.api_port,
                       reuse_port=reuse_port or None)
    freeze_startup_heap()
    await site.start()


async def api(settings: Settings, *, reuse_port: bool = False) -> int:
    """``sems api``: one process serving the API alone against the configured stores (no
    pipeline, no simulator). The DR intake needs the pipeline's ``dr-events`` stream, so its
    routes answer 503 ``dr_unavailable`` here; ``sems run`` serves them."""
    return await _stopping(settings, lambda sd: _start_api(settings, sd, reuse_port=reuse_port))


async def _start_api(settings: Settings, shutdown: Shutdown, *, reuse_port: bool) -> bool:
    from api import create_app
    from streams.stores import build_cache, build_store

    metrics = Metrics()
    shutdown.metrics = metrics
    _lag_probe(shutdown, metrics)
    store = build_store(settings, metrics)
    cache = build_cache(settings)
    await store.open()
    shutdown.on_stop("store close", store.close)
    if cache is not None and hasattr(cache, "close"):
        shutdown.on_stop("cache close", cache.close)
    guard = await _security(settings, store, shutdown)
    app = create_app(api_deps(settings, guard, store=store, metrics=metrics, cache=cache,
                              clock=lambda: datetime.now(UTC), health_checks={}, dr=None,
                              sessions=_sessions(settings, store, shutdown)))
    await listen(settings, shutdown, app, reuse_port=reuse_port)
    if reuse_port:
        shutdown.stop_when("sems api group", _orphaned())
    print(f"SEMS API ({settings.profile} stores) on http://{settings.api_host}:"
          f"{settings.api_port}, process {os.getpid()}. Press Ctrl+C to stop.", flush=True)
    return True


async def _orphaned() -> str:
    """Returns once the ``sems api`` group's supervisor is gone (a process of a group must not
    outlive it and keep the port)."""
    parent = os.getppid()
    while True:  # a poll: nothing signals a parent's death to its child here
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            return "the sems api supervisor is gone"


def _banner(settings: Settings, runtime: Runtime, *, first: str) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    bms_server = runtime.dr.bms_server
    bms_url = settings.bms_url or (bms_server.wsdl_url if bms_server else "none (SEMS_BMS_URL)")
    stores = (f"store {settings.database_path}" if settings.profile == "embedded" else
              f"InfluxDB {settings.influx_url}, PostgreSQL, Redis "
              f"{settings.redis_url or '(no cache)'}")
    data_dir = f" --data-dir {settings.data_dir}" if settings.data_dir != DEFAULT_DATA_DIR else ""
    how = ("tokens from your identity provider" if settings.auth_jwks_url else
           f'TOKEN=$(sems token create --role admin{data_dir}); '
           f'curl -H "Authorization: Bearer $TOKEN" {base}/api/facilities')
    print(f"SEMS is running ({settings.runtime} runtime, {stores})\n"
          f"  every route but health needs a bearer token: {how}\n"
          f"  API spec:    {base}/api/openapi.json\n"
          f"  facilities:  {base}/api/facilities\n"
          f"  live:        {base}/api/facilities/{first}/current\n"
          f"  rollups:     {base}/api/facilities/{first}/rollups?window=1m\n"
          f"  health:      {base}/healthz\n"
          f"  metrics:     {base}/metrics\n"
          f"  DR webhook:  {base}/webhooks/utility/dr-notification (docs/demand-response.md)\n"
          f"  BMS:         {bms_url}\n"
          "Press Ctrl+C to stop.", flush=True)
