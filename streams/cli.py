"""``sems`` command line: run the pipeline, simulate meters, export schemas."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.sqlite.migrations import SchemaTooNew
from core.logs import configure_logging
from core.metrics import Metrics
from streams import admin_cli, forecast_cli, people_cli, serve
from streams.settings import Settings, SettingsError, load_settings


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

    api = sub.add_parser("api", help="the API alone against the configured stores, in "
                                     "--workers processes on one port")
    api.add_argument("--profile", choices=["embedded", "production"])
    api.add_argument("--data-dir", type=Path)
    api.add_argument("--host", dest="api_host")
    api.add_argument("--port", dest="api_port", type=int)
    api.add_argument("--workers", dest="api_workers", type=int,
                     help="processes serving the port (SEMS_API_WORKERS, default 1)")
    api.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

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
    people_cli.add_parsers(sub)
    forecast_cli.add_parser(sub)
    return p


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """The long-running commands (streams/serve.py)."""
    if args.command == "run":
        return await serve.run(settings)
    if args.command == "api":
        if settings.api_workers > 1:
            from streams.api_workers import run_group

            return await run_group(settings)
        return await serve.api(settings, reuse_port=args.reuse_port)
    return await serve.worker(settings, ingest=args.command == "ingest")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "forecast":
        return forecast_cli.run(args)
    if args.command == "export-schemas":
        from schemas.export import main as export

        return export()
    overrides: dict[str, Any] = {}
    if args.command in ("facilities", "utility", "org", "user"):
        overrides = {"data_dir": args.data_dir, "profile": args.profile}
    if args.command == "token":
        overrides = {"data_dir": args.data_dir}
    if args.command == "worker":
        overrides = {"data_dir": args.data_dir, "kafka_bootstrap": args.kafka_bootstrap,
                     "runtime": "kafka", "profile": args.profile}
    if args.command == "ingest":
        overrides = {"data_dir": args.data_dir, "kafka_bootstrap": args.kafka_bootstrap,
                     "mqtt_url": args.mqtt_url, "runtime": "kafka", "profile": args.profile}
    if args.command == "api":
        overrides = {k: getattr(args, k) for k in (
            "profile", "data_dir", "api_host", "api_port", "api_workers")}
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
    if args.command == "ingest" and not settings.mqtt_url:
        print("sems: ingest needs a broker: --mqtt URL or SEMS_MQTT_URL", file=sys.stderr)
        return 2
    if args.command in ("run", "api", "worker", "ingest"):
        try:
            return asyncio.run(_serve(settings, args))
        except SchemaTooNew as exc:
            print(f"sems: {exc}", file=sys.stderr)
            return 2
    if args.command == "db":
        return _db(settings, args.action)
    if args.command == "token":
        return admin_cli.create_token(settings, args)
    if args.command == "utility":
        return asyncio.run(admin_cli.utility(settings, args))
    if args.command in ("org", "user"):
        return asyncio.run(people_cli.run(settings, args))
    if args.command == "facilities":
        try:
            content = args.file.read_bytes()
        except OSError as exc:
            print(f"sems: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_import_facilities(settings, content, args.file))
    return asyncio.run(_simulate(args))


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
