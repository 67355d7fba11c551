"""``sems`` command line: run the pipeline, simulate meters, export schemas."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.logs import configure_logging
from core.looplag import freeze_startup_heap, probe_loop_lag
from core.metrics import Metrics
from streams import admin_cli, forecast_cli
from streams.settings import DEFAULT_DATA_DIR, Settings, SettingsError, load_settings
from streams.shutdown import Shutdown, exit_abandoned

if TYPE_CHECKING:
    from streams.runtime import Runtime

API_SHUTDOWN_S = 2.0
"""How long in-flight API requests may finish at the stop."""


def _iso(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a UTC offset (e.g. ...Z)")
    return ts.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sems", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline and the API")
    run.add_argument("--profile", choices=["embedded", "production"],
                     help="stores: embedded SQLite (default) or InfluxDB + PostgreSQL + Redis")
    run.add_argument("--runtime", choices=["local", "kafka"])
    run.add_argument("--kafka", dest="kafka_bootstrap", metavar="HOST:PORT",
                     help="Kafka bootstrap server for --runtime kafka (default 127.0.0.1:9092)")
    run.add_argument("--mqtt", dest="mqtt_url", metavar="URL",
                     help="consume meters from this broker, e.g. mqtt://127.0.0.1:1883")
    run.add_argument("--data-dir", type=Path)
    run.add_argument("--host", dest="api_host")
    run.add_argument("--port", dest="api_port", type=int)
    run.add_argument("--simulate", dest="simulate", action=argparse.BooleanOptionalAction,
                     default=None, help="publish the demo fleet's readings (default: on)")
    run.add_argument("--demo-fleet", dest="demo_fleet", action=argparse.BooleanOptionalAction,
                     default=None, help="register the demo fleet's facilities (default: on)")
    run.add_argument("--facilities", dest="simulate_facilities", type=int)
    run.add_argument("--meters", dest="simulate_meters", type=int)
    run.add_argument("--seed", dest="simulate_seed", type=int)
    run.add_argument("--backfill-s", dest="simulate_backfill_s", type=float)

    worker = sub.add_parser("worker", help="an extra kafka-runtime worker (scale out)")
    worker.add_argument("--profile", choices=["embedded", "production"])
    worker.add_argument("--kafka", dest="kafka_bootstrap", metavar="HOST:PORT")
    worker.add_argument("--data-dir", type=Path)

    ingest = sub.add_parser("ingest", help="the kafka runtime's ingest service alone: MQTT -> "
                                           "validation -> Kafka (scale workers separately)")
    ingest.add_argument("--profile", choices=["embedded", "production"])
    ingest.add_argument("--kafka", dest="kafka_bootstrap", metavar="HOST:PORT")
    ingest.add_argument("--mqtt", dest="mqtt_url", metavar="URL")
    ingest.add_argument("--data-dir", type=Path)

    sim = sub.add_parser("simulate", help="publish simulated meter readings over MQTT")
    sim.add_argument("--mqtt", dest="mqtt_url", required=True, metavar="URL")
    sim.add_argument("--facilities", type=int, default=3)
    sim.add_argument("--meters", type=int, default=4)
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--start", type=_iso, help="first timestamp (default: now - duration)")
    sim.add_argument("--duration-s", type=float, default=3600.0)
    sim.add_argument("--live", action="store_true", help="then keep publishing in real time")
    sim.add_argument("--duplicate-rate", type=float, default=0.0)
    sim.add_argument("--delay-rate", type=float, default=0.0)
    sim.add_argument("--late", type=int, default=0)
    sim.add_argument("--malformed", type=int, default=0)
    sim.add_argument("--log", type=Path, help="append every published message to this JSONL")

    fac = sub.add_parser("facilities", help="manage the facility and meter registry")
    fac_sub = fac.add_subparsers(dest="action", required=True)
    imp = fac_sub.add_parser("import", help="upsert facilities and meters from a JSON file")
    imp.add_argument("file", type=Path,
                     help='{"facilities": [Facility...], "meters": [Meter...]} (schemas/json)')
    imp.add_argument("--data-dir", type=Path)
    imp.add_argument("--profile", choices=["embedded", "production"])

    db = sub.add_parser("db", help="the production PostgreSQL schema")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("upgrade", help="apply every pending migration (Alembic)")
    db_sub.add_parser("current", help="print the schema revision the database is at")

    sub.add_parser("export-schemas", help="write JSON Schemas of the topic contracts")
    admin_cli.add_parsers(sub)
    forecast_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "forecast":
        return forecast_cli.run(args)
    if args.command == "export-schemas":
        from schemas.export import main as export

        return export()
    overrides: dict[str, Any] = {}
    if args.command in ("facilities", "utility"):
        overrides = {"data_dir": args.data_dir, "profile": args.profile}
    if args.command == "token":
        overrides = {"data_dir": args.data_dir}
    if args.command == "worker":
        overrides = {"data_dir": args.data_dir, "kafka_bootstrap": args.kafka_bootstrap,
                     "runtime": "kafka", "profile": args.profile}
    if args.command == "ingest":
        overrides = {"data_dir": args.data_dir, "kafka_bootstrap": args.kafka_bootstrap,
                     "mqtt_url": args.mqtt_url, "runtime": "kafka", "profile": args.profile}
    if args.command == "run":
        overrides = {k: getattr(args, k) for k in (
            "profile", "runtime", "kafka_bootstrap", "mqtt_url", "data_dir", "api_host", "api_port",
            "simulate", "demo_fleet",
            "simulate_facilities", "simulate_meters", "simulate_seed", "simulate_backfill_s")}
    try:
        settings = load_settings(os.environ, **overrides)
    except SettingsError as exc:
        print(f"sems: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "run":
        return asyncio.run(_run(settings))
    if args.command == "worker":
        return asyncio.run(_worker(settings))
    if args.command == "ingest":
        if not settings.mqtt_url:
            print("sems: ingest needs a broker: --mqtt URL or SEMS_MQTT_URL", file=sys.stderr)
            return 2
        return asyncio.run(_worker(settings, ingest=True))
    if args.command == "db":
        return _db(settings, args.action)
    if args.command == "token":
        return admin_cli.create_token(settings, args)
    if args.command == "utility":
        return asyncio.run(admin_cli.utility(settings, args))
    if args.command == "facilities":
        try:
            content = args.file.read_bytes()
        except OSError as exc:
            print(f"sems: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_import_facilities(settings, content, args.file))
    return asyncio.run(_simulate(args))


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


async def _worker(settings: Settings, *, ingest: bool = False) -> int:
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


async def _run(settings: Settings) -> int:
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


def _db(settings: Settings, action: str) -> int:
    """``sems db upgrade|current`` against SEMS_POSTGRES_DSN (the production profile's
    metadata store; the embedded SQLite store creates its schema itself)."""
    from connectors.postgres.migrate import current_revision, upgrade

    dsn = settings.postgres_dsn.get_secret_value()
    try:
        if action == "upgrade":
            upgrade(dsn)
        print(f"schema revision: {current_revision(dsn) or 'none'}")
    except Exception as exc:  # the CLI's boundary: a message, not a traceback
        print(f"sems: database {action} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _import_facilities(settings: Settings, content: bytes, path: Path) -> int:
    import orjson
    from pydantic import ValidationError

    from core.metrics import Metrics
    from schemas.metadata import Facility, Meter, Registry
    from streams.stores import build_store

    try:
        doc = orjson.loads(content)
        facilities = [Facility.model_validate(f) for f in doc.get("facilities", [])]
        meters = [Meter.model_validate(m) for m in doc.get("meters", [])]
    except (orjson.JSONDecodeError, ValidationError, AttributeError) as exc:
        print(f"sems: cannot import {path}: {exc}", file=sys.stderr)
        return 2
    store = build_store(settings, Metrics())
    await store.open()
    try:
        try:
            Registry.build([*await store.facilities(), *facilities], meters)
        except ValueError as exc:
            print(f"sems: cannot import {path}: {exc}", file=sys.stderr)
            return 2
        await store.upsert_facilities(facilities)
        await store.upsert_meters(meters)
    finally:
        await store.close()
    where = settings.database_path if settings.profile == "embedded" else "PostgreSQL"
    print(f"imported {len(facilities)} facilities and {len(meters)} meters into {where}")
    return 0


async def _simulate(args: argparse.Namespace) -> int:
    from connectors.mqtt import BrokerAddress, MqttPublisher
    from simulators.fleet import build_fleet
    from simulators.publish import Faults, Simulation, open_log

    fleet = build_fleet(facilities=args.facilities, meters_per_facility=args.meters,
                        seed=args.seed)
    faults = Faults(duplicate_rate=args.duplicate_rate, delay_rate=args.delay_rate,
                    late_count=args.late, malformed_count=args.malformed)
    start = args.start or datetime.now(UTC) - timedelta(seconds=args.duration_s)
    end = start + timedelta(seconds=args.duration_s)
    log = open_log(args.log)
    try:
        async with MqttPublisher(BrokerAddress.parse(args.mqtt_url),
                                 client_id=f"sems-simulator-{os.getpid()}") as pub:
            sim = Simulation(fleet, pub.publish, faults=faults, seed=args.seed, log=log)
            inject_at = start + (end - start) / 2
            next_step = await sim.run_range(start, end, inject_at=inject_at)
            print(f"published {sim.published} messages for {len(fleet.meters)} meters "
                  f"from {start.isoformat()} to {end.isoformat()}", flush=True)
            if args.live:
                await sim.run_live(lambda: datetime.now(UTC), next_step=next_step)
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
