"""The embedded store tells one request's bad data from an unavailable store: the first is
raised as it is, so the agents fail that item alone; only the second is ``StoreUnavailable``,
which ends a DR pass and is waited out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from tables.ports.store import StoreUnavailable

pytestmark = pytest.mark.integration


async def test_a_constraint_or_a_bad_value_is_the_request_s_not_an_outage(tmp_path: Path) -> None:
    metrics = Metrics()
    store = SqliteStore(tmp_path / "sems.db", metrics=metrics)
    await store.open()
    try:
        def null_id(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO dr_events (id) VALUES (NULL)")

        with pytest.raises(sqlite3.IntegrityError):
            await store.db.write(null_id, op="test")
        with pytest.raises((sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            await store.db.read("SELECT ?", ({"not": "bindable"},))
        assert metrics.registry.get_sample_value(
            "sems_store_errors_total", {"store": "sqlite", "operation": "test"}) is None
        assert await store.dr_events() == []  # the store works on
    finally:
        await store.close()


async def test_a_store_that_cannot_be_used_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()  # a path SQLite cannot open as a database
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    try:
        with pytest.raises(StoreUnavailable):
            await store.db.read(f"ATTACH DATABASE '{tmp_path / 'dir.db'}' AS other")
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable):
        await store.dr_events()
