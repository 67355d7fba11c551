"""The long-running commands, ``sems run``, ``sems worker`` and ``sems ingest``: a process the
composition root builds (``streams/compose.py``), started under ``streams.shutdown`` and
stopped within the grace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.looplag import freeze_startup_heap, probe_loop_lag
from core.metrics import Metrics
from streams.settings import DEFAULT_DATA_DIR, Settings
from streams.shutdown import Shutdown, exit_abandoned

if TYPE_CHECKING:
    from streams.runtime import Runtime

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
    from aiohttp import web

    from api import ApiDeps, create_app
    from api.aiohttp_protocol_errors import api_runner
    from connectors.mqtt import BrokerAddress, MqttPublisher
    from schemas.raw import RawMessage
    from simulators.fleet import build_fleet
    from simulators.publish import Simulation
    from streams import compose
    from streams.security import security

    fleet = build_fleet(facilities=settings.simulate_facilities,
                        meters_per_facility=settings.simulate_meters, seed=settings.simulate_seed)
    # The in-process BMS commands the buildings the simulator reads.
    runtime = compose.runtime(settings, bms_models=fleet.models if settings.simulate else None)
    shutdown.metrics = runtime.metrics
    _lag_probe(shutdown, runtime.metrics)
    shutdown.on_stop_steps(runtime.stop_steps)
    await runtime.open()
    if settings.demo_fleet:
        await runtime.store.upsert_facilities(list(fleet.facilities))
        await runtime.store.upsert_meters(list(fleet.meters))
        await runtime.reload_registry()
    await runtime.start()
    shutdown.stop_when(runtime.vital, runtime.until_failed())

    async def health_mqtt() -> tuple[bool, str]:
        if runtime.mqtt is None:
            return True, "not used (in-process simulator)"
        ok = runtime.mqtt.connected.is_set()
        return ok, "connected" if ok else "disconnected"

    guarding = security(settings, runtime.store, lambda: datetime.now(UTC))
    guard = await guarding.__aenter__()
    shutdown.on_stop("security close", lambda: guarding.__aexit__(None, None, None))
    app = create_app(ApiDeps(timeseries=runtime.store, metadata=runtime.store,
                             metrics=runtime.metrics, clock=runtime.clock,
                             health_checks={"mqtt": health_mqtt}, cache=runtime.cache,
                             current_ttl_s=settings.current_cache_ttl_s, auth=guard.auth,
                             rate_limiter=guard.rate_limiter,
                             client_rate_limiter=guard.client_rate_limiter, jwks=guard.jwks,
                             max_body_bytes=settings.api_max_body_bytes,
                             forecasts=runtime.store, dr=runtime.dr.api))
    # In-flight requests get a moment at the stop, not aiohttp's default minute.
    web_runner = api_runner(app, access_log=None,
                            shutdown_timeout=min(API_SHUTDOWN_S, settings.shutdown_grace_s / 4))
    await web_runner.setup()
    shutdown.on_stop("API server stop", web_runner.cleanup)
    site = web.TCPSite(web_runner, settings.api_host, settings.api_port)
    freeze_startup_heap()
    await site.start()
    _banner(settings, runtime, first=fleet.facilities[0].facility_id if fleet.facilities
            else "FACILITY")

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
