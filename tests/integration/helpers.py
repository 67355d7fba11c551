"""Shared helpers for tests that run the local runtime in-process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from simulators.fleet import Fleet
from streams import compose
from streams.kafka import KafkaRuntime
from streams.local import LocalRuntime
from streams.settings import Settings
from tests.servers import INFLUX_ORG, INFLUX_TOKEN, InfluxDB


async def eventually(condition: Callable[[], Awaitable[bool]], *, timeout_s: float,
                     what: str, poll_s: float = 0.05) -> None:
    """Wait until ``condition`` holds: a deadline, not a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(poll_s)


def production_settings(tmp_path: Path, influx: InfluxDB, dsn: str,
                        **overrides: Any) -> Settings:
    """The production profile on the test's servers, with buckets of the test's own."""
    return Settings.model_validate({
        "profile": "production", "data_dir": tmp_path / "data",
        "influx_url": influx.url, "influx_token": INFLUX_TOKEN, "influx_org": INFLUX_ORG,
        "influx_bucket_prefix": f"t{uuid.uuid4().hex[:10]}", "postgres_dsn": dsn, **overrides,
    })


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "simulate": False,
        "demo_fleet": False,
        "api_port": 0,
        **overrides,
    }
    return Settings.model_validate(values)


R = TypeVar("R", LocalRuntime, KafkaRuntime)


async def provision(runtime: R, fleet: Fleet) -> R:
    """Open either runtime, register the fleet, start it."""
    await runtime.open()
    await runtime.store.upsert_facilities(list(fleet.facilities))
    await runtime.store.upsert_meters(list(fleet.meters))
    await runtime.reload_registry()
    await runtime.start()
    return runtime


async def start_runtime(cfg: Settings, fleet: Fleet) -> LocalRuntime:
    return await provision(compose.local(cfg), fleet)


def count(runtime: LocalRuntime, sql: str) -> int:
    """Query the store's SQLite file with a connection of our own, as an analyst would."""
    with sqlite3.connect(runtime.settings.database_path) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def count_is(runtime: LocalRuntime, sql: str, expected: int) -> bool:
    return count(runtime, sql) == expected
