"""One event at a time per facility, and an event id created once, under concurrent requests:
the real app on each real store (SQLite; InfluxDB + PostgreSQL), requests sent at the same
moment. Also the stores made before these rules were the store's: an old SQLite file, and
PostgreSQL rows that overlap when migration 0006 runs."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from api import ApiDeps, apikeys, create_app
from api.dr_deps import DrApi
from api.ratelimit import RateLimiter
from connectors.postgres.migrate import upgrade
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.access import Utility
from schemas.dr import DrEvent, DrStatus, webhook_event_uuid
from schemas.metadata import Facility, Meter, MeterType
from streams.stores import build_store
from tables.ports.store import Store
from tests.auth_helpers import authenticator, issuer
from tests.integration.helpers import production_settings
from tests.integration.test_api_auth import FixedBaseline
from tests.integration.test_dr_intake import (
    PATH,
    START,
    event_request,
    notification,
    signed,
)
from tests.servers import InfluxDB, Postgres

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
A, B = "plant-a", "plant-b"
HOUR = timedelta(hours=1)
N = 20


@pytest.fixture(params=["sqlite", "influxdb+postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    else:
        influx: InfluxDB = request.getfixturevalue("influxdb")
        dsn: str = request.getfixturevalue("pg_database")
        s = build_store(production_settings(tmp_path, influx, dsn), Metrics())
    await s.open()
    await s.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=100)
                               for f in (A, B)])
    await s.upsert_meters([Meter(meter_id=f"{f}-main", facility_id=f, meter_type=MeterType.MAIN)
                           for f in (A, B)])
    await s.upsert_utility(Utility(utility_id="gridco", name="GridCo", facility_ids=(A, B),
                                   webhook_secret=SecretStr("whsec")))
    yield s
    await s.close()


@pytest.fixture
def submitted() -> list[DrEvent]:
    """What the routes put on the ``dr-events`` stream, to the DR agent."""
    return []


@pytest.fixture
async def client(store: Store, submitted: list[DrEvent]) -> AsyncIterator[Client]:
    async def submit(event: DrEvent) -> None:
        submitted.append(event)

    app = create_app(ApiDeps(
        timeseries=store, metadata=store, metrics=Metrics(), auth=authenticator(store),
        jwks=issuer().jwks(), rate_limiter=RateLimiter(1000, 1000), forecasts=store,
        dr=DrApi(store=store, access=store, baselines=FixedBaseline(store, store),
                 submit=submit)))
    async with TestClient(TestServer(app)) as c:
        yield c


async def _at_once(client: Client, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    async def post(body: bytes) -> tuple[int, dict[str, Any]]:
        async with client.post(PATH, data=body, headers=signed(body)) as resp:
            return resp.status, await resp.json()

    return await asyncio.gather(*(post(b) for b in bodies))


async def test_simultaneous_notifications_for_one_window_make_one_event(
        client: Client, store: Store, submitted: list[DrEvent]) -> None:
    answers = await _at_once(client, [notification(event_id=f"GRID-{i}") for i in range(N)])
    accepted = [body for status, body in answers if status == 200]
    assert len(accepted) == 1, [s for s, _ in answers]
    [winner] = accepted[0]["events"]
    assert winner["replayed"] is False
    refused = [body for status, body in answers if status != 200]
    assert {(s, b["error_code"]) for s, b in answers if s != 200} == {(409, "event_overlaps")}
    assert all([c["dr_event_id"] for c in b["details"]["conflicts"]] == [winner["id"]]
               for b in refused)
    assert [e.id for e in await store.dr_events(facility_id=A)] == [winner["id"]]
    assert [e.id for e in submitted] == [winner["id"]]  # planned once


async def test_simultaneous_deliveries_of_one_notification_are_replays(
        client: Client, store: Store, submitted: list[DrEvent]) -> None:
    answers = await _at_once(client, [notification(event_id="GRID-1")] * 10)
    assert [s for s, _ in answers] == [200] * 10
    events = [b["events"][0] for _, b in answers]
    assert [e["replayed"] for e in events].count(False) == 1
    assert {e["id"] for e in events} == {webhook_event_uuid("gridco", "GRID-1", A)}
    assert len(await store.dr_events(facility_id=A)) == 1
    assert len(submitted) == 1


async def test_simultaneous_api_calls_make_one_event(client: Client, store: Store) -> None:
    issued = apikeys.issue("gridco", now=datetime.now(UTC))
    await store.add_api_key(issued.record)
    headers = {"X-API-Key": issued.key, "Content-Type": "application/json"}

    async def post() -> tuple[int, dict[str, Any]]:
        async with client.post("/api/dr-events", data=event_request(), headers=headers) as r:
            return r.status, await r.json()

    answers = await asyncio.gather(*(post() for _ in range(10)))
    assert sorted(s for s, _ in answers) == [201] + [409] * 9, answers
    [created] = [b for s, b in answers if s == 201]
    assert [e.id for e in await store.dr_events(facility_id=A)] == [created["id"]]
    # one at a time afterwards, the next window is free: API events do not collide by id
    later = event_request(event_start=(START + HOUR).isoformat(),
                          event_end=(START + 2 * HOUR).isoformat())
    resp = await client.post("/api/dr-events", data=later, headers=headers)
    assert resp.status == 201, await resp.text()
    assert len(await store.dr_events(facility_id=A)) == 2


async def test_a_notification_is_never_half_made(client: Client, store: Store) -> None:
    """Notifications for plant-a and plant-b race ones for plant-b alone: whoever wins, plant-a
    has an event exactly when plant-b has the same notification's."""
    both = [notification(event_id=f"BOTH-{i}", facility_ids=[A, B]) for i in range(N // 2)]
    alone = [notification(event_id=f"B-{i}", facility_ids=[B]) for i in range(N // 2)]
    answers = await _at_once(client, [b for pair in zip(both, alone, strict=True) for b in pair])
    assert sorted(s for s, _ in answers) == [200] + [409] * (N - 1), answers
    at_a = [e.event_id for e in await store.dr_events(facility_id=A)]
    at_b = [e.event_id for e in await store.dr_events(facility_id=B)]
    assert len(at_b) == 1
    assert at_a == (at_b if str(at_b[0]).startswith("BOTH-") else [])


# -- stores from before -----------------------------------------------------------------------

OLD_DR_EVENTS = """CREATE TABLE dr_events (id TEXT PRIMARY KEY, utility_id TEXT, event_id TEXT,
    facility_id TEXT NOT NULL, status TEXT NOT NULL, event_start_ms INTEGER NOT NULL,
    record TEXT NOT NULL)"""


async def test_an_sqlite_file_from_before_checks_its_old_events(tmp_path: Path) -> None:
    """``make run`` users have a ``sems.db`` without ``event_end_ms``: opening it adds the
    column from each record, and its events hold their windows."""
    path = tmp_path / "sems.db"
    old = DrEvent(id=str(uuid.uuid4()), facility_id=A, source="api", event_start=START,
                  event_end=START + HOUR, created_at=START, updated_at=START)
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_DR_EVENTS)
        conn.execute("INSERT INTO dr_events VALUES (?, NULL, NULL, ?, 'scheduled', ?, ?)",
                     (old.id, A, int(START.timestamp() * 1000), old.model_dump_json()))
    conn.close()
    s = SqliteStore(path, metrics=Metrics())
    await s.open()
    try:
        rival = old.model_copy(update={"id": str(uuid.uuid4()),
                                       "event_start": START + timedelta(minutes=59)})
        assert (await s.create_dr_events([rival])).conflicts == (old,)
        after = old.model_copy(update={"id": str(uuid.uuid4()), "event_start": START + HOUR,
                                       "event_end": START + 2 * HOUR})
        assert (await s.create_dr_events([after])).inserted == (after,)
    finally:
        await s.close()


def test_migration_0006_fails_the_overlapping_events_it_finds(postgres: Postgres) -> None:
    """Rows stored while the check was a read then a write may overlap: the active one is kept
    (it may have loads shed), then the earliest created; the others fail with the reason."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(dsn, "0005")
        ids = [uuid.uuid4() for _ in range(4)]
        rows = [  # id, facility, start (hours from START), status, created (minutes)
            (ids[0], A, 0, "scheduled", 0),  # the first created, but plant-a's 1 is active
            (ids[1], A, 0, "active", 1),  # kept: active
            (ids[2], A, 1, "scheduled", 2),  # back to back with 1: kept
            (ids[3], B, 0, "scheduled", 3),  # another facility: kept
        ]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for f in (A, B):
                conn.execute("INSERT INTO facilities (facility_id, name, timezone, "
                             "contract_demand_kw) VALUES (%s, %s, 'UTC', 100)", (f, f))
            for id_, facility, hours, status, minutes in rows:
                start = START + hours * HOUR
                conn.execute(
                    "INSERT INTO dr_events (id, event_id, facility_id, event_start, event_end, "
                    "status, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (id_, str(id_), facility, start, start + HOUR, status,
                     START + timedelta(minutes=minutes), START))
        upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            got = {r[0]: (r[1], r[2]) for r in conn.execute(
                "SELECT id, status, failures FROM dr_events").fetchall()}
            assert got[ids[0]] == ("failed", [
                f"failed by migration 0006: overlaps event {ids[1]} of the same facility "
                "(a facility takes one DR event at a time)"])
            assert [got[i] for i in ids[1:]] == [("active", []), ("scheduled", []),
                                                 ("scheduled", [])]
            with pytest.raises(psycopg.errors.ExclusionViolation):
                conn.execute("UPDATE dr_events SET status = 'scheduled' WHERE id = %s",
                             (ids[0],))
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# -- the store's rule against a model, on generated sequences ---------------------------------

SLOT = timedelta(minutes=15)
Op = tuple[str, int, int, DrStatus]  # facility, start slot, length in slots, status
STATUSES: list[DrStatus] = ["scheduled", "active", "completed", "failed"]


@settings(derandomize=True, max_examples=40, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 12), st.integers(1, 4),
                          st.sampled_from(STATUSES)),
                min_size=1, max_size=12))
def test_creations_follow_the_model(tmp_path_factory: pytest.TempPathFactory,
                                    ops: list[Op]) -> None:
    """Each creation is stored exactly when no stored event of its facility that is not
    failed overlaps it (and a failed one always is); what is stored never overlaps."""
    async def run() -> None:
        s = SqliteStore(tmp_path_factory.mktemp("model") / "sems.db", metrics=Metrics())
        await s.open()
        kept: list[DrEvent] = []
        try:
            await s.upsert_facilities([Facility(facility_id=f, name=f, contract_demand_kw=1)
                                       for f in (A, B)])
            for facility_id, slot, slots, status in ops:
                start = START + slot * SLOT
                event = DrEvent(id=str(uuid.uuid4()), facility_id=facility_id, source="api",
                                event_start=start, event_end=start + slots * SLOT,
                                status=status, created_at=START, updated_at=START)
                blocking = [k for k in kept if k.status != "failed" and status != "failed"
                            and k.facility_id == facility_id and k.event_start < event.event_end
                            and event.event_start < k.event_end]
                created = await s.create_dr_events([event])
                assert created.inserted == (() if blocking else (event,))
                assert set(created.conflicts) == set(blocking)
                kept += created.inserted
            assert sorted(e.id for e in await s.dr_events()) == sorted(e.id for e in kept)
        finally:
            await s.close()

    asyncio.run(run())
