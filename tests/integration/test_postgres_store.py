"""The PostgreSQL adapter on a real PostgreSQL 15: migrations, constraints, the events half of
the store, and its behaviour while the server is down and after it is back.

Each test has a database of its own, created with an ICU en-US collation (where ``plant-b``
sorts before ``Plant-c``) to prove that ids come back in byte order, as from SQLite.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

from connectors.postgres import PostgresStore
from connectors.postgres.migrate import (
    MIGRATION_LOCK_KEY,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.deadletter import DeadLetter, RejectReason
from schemas.dr import DrEvent, webhook_event_uuid
from schemas.metadata import Facility, Meter, MeterType
from tables.ports.store import StoreUnavailable
from tables.rollups import Checkpoint
from tests.servers import Postgres

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TABLES = {"facilities", "meters", "dr_events", "load_forecasts", "dead_letters",
          "window_checkpoints", "utilities", "utility_api_keys", "bms_commands",
          "organisations", "organisation_facilities", "users", "memberships",
          "facility_assignments", "personal_tokens", "sign_in_failures", "audit_log",
          "password_resets"}
TIMEOUT_S = 1.0  # the outage tests' store timeout
PASSWORD = "hunter2-secret"  # trust authentication accepts it; it must never show in an error


def dead_letter(n: int, *, source: str = "meters/plant-a/a-main") -> DeadLetter:
    return DeadLetter(reason=RejectReason.MALFORMED_JSON, message="not JSON", source=source,
                      received_at=T0 + timedelta(seconds=n), raw_payload=f"garbage {n}")


def facility(facility_id: str, kw: float = 100.0) -> Facility:
    return Facility(facility_id=facility_id, name=f"Site {facility_id}", timezone="Europe/Berlin",
                    contract_demand_kw=kw)


def execute(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def tables(dsn: str) -> set[str]:
    rows = execute(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows} - {"alembic_version"}


def sample(store: PostgresStore, name: str, **labels: str) -> float | None:
    return store.metrics.registry.get_sample_value(name, {"store": "postgres", **labels})


async def eventually(condition: Callable[[], Awaitable[bool]], *, timeout_s: float,
                     what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting until {what}")
        await asyncio.sleep(0.05)


async def answers_again(store: PostgresStore) -> None:
    async def available() -> bool:
        try:
            await store.ping()
        except StoreUnavailable:
            return False
        return True

    await eventually(available, timeout_s=10 * TIMEOUT_S, what="the store answers again")


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:
    """A database of the test's own on the shared server (not migrated)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    execute(postgres.dsn, f'CREATE DATABASE "{name}" TEMPLATE template0 '
                          "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    execute(postgres.dsn, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def migrated(database: str) -> str:
    upgrade(database)
    return database


@pytest.fixture
async def store(migrated: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(migrated, metrics=Metrics())
    await s.open()
    yield s
    await s.close()


# -- migrations ------------------------------------------------------------------------------


def test_upgrade_applies_every_migration_and_a_second_upgrade_is_a_no_op(database: str) -> None:
    assert current_revision(database) is None
    upgrade(database)
    assert current_revision(database) == head_revision() == "0009"
    assert tables(database) == TABLES
    oids = execute(database, "SELECT relname, oid FROM pg_class WHERE relkind = 'r'")
    execute(database, "INSERT INTO facilities VALUES ('plant-a', 'A', 'UTC', 10)")

    upgrade(database)

    assert current_revision(database) == head_revision()
    assert execute(database, "SELECT relname, oid FROM pg_class WHERE relkind = 'r'") == oids
    assert execute(database, "SELECT facility_id FROM facilities") == [("plant-a",)]


def test_a_database_at_0007_gains_the_identity_tables_with_its_rows(database: str) -> None:
    """The release before people (issue 16): its facilities stay, and get an organisation."""
    upgrade(database, "0007")
    execute(database, "INSERT INTO facilities VALUES ('plant-a', 'A', 'UTC', 10)")
    upgrade(database, "0008")
    assert current_revision(database) == "0008"
    execute(database, "INSERT INTO organisations VALUES ('acme', 'Acme')")
    execute(database, "INSERT INTO organisation_facilities VALUES ('plant-a', 'acme')")
    assert execute(database, "SELECT f.facility_id, o.organisation_id FROM facilities f JOIN "
                             "organisation_facilities o USING (facility_id)") == [
        ("plant-a", "acme")]
    with pytest.raises(psycopg.errors.CheckViolation):  # emails are kept lower-case
        execute(database, "INSERT INTO users (user_id, email, display_name, status, created_at) "
                          "VALUES ('u-1', 'Ops@Acme.example', 'Ops', 'active', now())")
    downgrade(database, "0007")
    assert tables(database) == TABLES - {
        "organisations", "organisation_facilities", "users", "memberships",
        "facility_assignments", "personal_tokens", "sign_in_failures", "audit_log",
        "password_resets"}


def test_a_database_at_0008_gains_password_resets_that_go_with_their_user(
    database: str,
) -> None:
    """The release before password resets (issue 16): its users stay and may take resets;
    a deleted user's resets are deleted with them."""
    upgrade(database, "0008")
    execute(database, "INSERT INTO users (user_id, email, display_name, status, created_at) "
                      "VALUES ('u-1', 'ops@acme.example', 'Ops', 'active', now())")
    upgrade(database)
    assert current_revision(database) == "0009"
    execute(database, "INSERT INTO password_resets (token_sha256, user_id, created_at, "
                      "expires_at, created_by) VALUES ('d1', 'u-1', now(), "
                      "now() + interval '30 minutes', 'cli')")
    with pytest.raises(psycopg.errors.CheckViolation):  # it must expire after it is made
        execute(database, "INSERT INTO password_resets (token_sha256, user_id, created_at, "
                          "expires_at, created_by) VALUES ('d2', 'u-1', now(), now(), 'cli')")
    execute(database, "DELETE FROM users WHERE user_id = 'u-1'")
    assert execute(database, "SELECT token_sha256 FROM password_resets") == []
    downgrade(database, "0008")
    assert tables(database) == TABLES - {"password_resets"}


def test_downgrade_to_base_drops_the_tables_and_upgrade_works_again(migrated: str) -> None:
    downgrade(migrated, "base")
    assert current_revision(migrated) is None
    assert tables(migrated) == set()

    upgrade(migrated)
    assert current_revision(migrated) == head_revision()
    assert tables(migrated) == TABLES


async def test_concurrent_upgrades_take_turns(database: str) -> None:
    """Hosts starting at once all run the upgrade: they queue on an advisory lock (held here
    until all three wait), and the later ones find nothing left to do."""
    script = f"from connectors.postgres.migrate import upgrade; upgrade({database!r})"
    holder = await psycopg.AsyncConnection.connect(database, autocommit=True)
    await holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    upgrades = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stderr=asyncio.subprocess.PIPE)
        for _ in range(3)]
    try:
        async def all_wait() -> bool:
            cursor = await holder.execute("SELECT count(*) FROM pg_locks WHERE "
                                          "locktype = 'advisory' AND NOT granted")
            return await cursor.fetchone() == (3,)

        await eventually(all_wait, timeout_s=30, what="three upgrades wait for the lock")
        await holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        for upgrade_process in upgrades:
            _, stderr = await upgrade_process.communicate()
            assert upgrade_process.returncode == 0, stderr.decode()
    finally:
        await holder.close()
        for upgrade_process in upgrades:
            if upgrade_process.returncode is None:
                upgrade_process.kill()
                await upgrade_process.wait()
    assert current_revision(database) == head_revision()


# Column by column, as psql's \d prints them; ids sort byte by byte (collation "C"), as in SQLite.
SCHEMA = {
    "facilities": "facility_id text C not null, name text not null, timezone text not null, "
                  "contract_demand_kw double precision not null, latitude double precision, "
                  "longitude double precision, country text, dr_baseline text",
    "meters": "meter_id text C not null, facility_id text C not null, meter_type text not null, "
              "sample_interval_s double precision not null",
    "dr_events": "id uuid not null, event_id text, facility_id text C not null, "
                 "event_start timestamp with time zone not null, "
                 "event_end timestamp with time zone not null, "
                 "target_reduction_kw double precision, "
                 "target_reduction_percentage double precision, status text not null, "
                 "baseline_kw jsonb, plan jsonb, achieved_reduction_kw double precision, "
                 "created_at timestamp with time zone not null, "
                 "updated_at timestamp with time zone not null, utility_id text C, "
                 "source text not null, report jsonb, failures jsonb not null, "
                 "release_stages_sent integer not null, trace_id text",
    # The BMS command audit trail (migration 0004).
    "bms_commands": "command_id uuid not null, dr_event_id uuid not null, "
                    "facility_id text C not null, kind text not null, target_id text not null, "
                    "value double precision not null, phase text not null, "
                    "release_stage integer, why text not null, trace_id text, "
                    "requested_at timestamp with time zone not null, "
                    "sent_at timestamp with time zone, result text not null, "
                    "applied_at timestamp with time zone, failure text, fault_code text, "
                    "error text, replayed boolean not null, "
                    "released_at timestamp with time zone, "
                    "restore_value double precision",  # migration 0007
    "load_forecasts": "facility_id text C not null, "
                      "forecast_timestamp timestamp with time zone not null, "
                      "predicted_load_kw double precision not null, "
                      "confidence_lower double precision, confidence_upper double precision, "
                      "lower_95 double precision, upper_95 double precision, "
                      "model text not null, made_at timestamp with time zone not null, "
                      "weather_used boolean not null",
    "dead_letters": "id bigint not null, received_at timestamp with time zone not null, "
                    "reason text not null, source text not null, payload_sha256 text not null, "
                    "record jsonb not null",
    "window_checkpoints": "facility_id text C not null, closed_until_ms bigint, "
                          "max_ts_ms bigint not null",
    "utilities": "utility_id text C not null, name text not null, facility_ids text[] C not "
                 "null, webhook_secret text not null",
    # Key ids are random hex, so byte order needs no collation.
    "utility_api_keys": "key_id text not null, utility_id text C not null, key_sha256 text not "
                        "null, created_at timestamp with time zone not null, revoked_at "
                        "timestamp with time zone",
    # People (issue 16, 0008).
    "organisations": "organisation_id text C not null, name text not null",
    "organisation_facilities": "facility_id text C not null, organisation_id text C not null",
    "users": "user_id text C not null, email text C not null, display_name text not null, "
             "status text not null, created_at timestamp with time zone not null, "
             "last_sign_in_at timestamp with time zone, password_hash text, oidc_issuer text, "
             "oidc_subject text",
    "memberships": "user_id text C not null, organisation_id text C not null, role text not "
                   "null",
    "facility_assignments": "user_id text C not null, organisation_id text C not null, "
                            "facility_id text C not null",
    "personal_tokens": "token_id text not null, user_id text C not null, organisation_id text C "
                       "not null, token_sha256 text not null, name text not null, role text "
                       "not null, facility_ids text[] C, created_at timestamp with time zone "
                       "not null, expires_at timestamp with time zone not null, revoked_at "
                       "timestamp with time zone",
    "sign_in_failures": "account text C not null, failures integer not null, first_failed_at "
                        "timestamp with time zone not null, last_failed_at timestamp with time "
                        "zone not null",
    "audit_log": "audit_id bigint not null, at timestamp with time zone not null, actor_id "
                 "text, action text not null, organisation_id text C, target text, "
                 "client_address text, details jsonb not null",
    "password_resets": "token_sha256 text not null, user_id text C not null, organisation_id "
                       "text C, created_at timestamp with time zone not null, expires_at "
                       "timestamp with time zone not null, created_by text not null, used_at "
                       "timestamp with time zone",
}


def test_column_types_are_the_reviewed_ones(migrated: str) -> None:
    rows = execute(migrated, """
        SELECT c.relname, string_agg(concat_ws(' ', a.attname, format_type(a.atttypid, -1),
                   CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
                   CASE WHEN a.attnotnull THEN 'not null' END), ', ' ORDER BY a.attnum)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE c.relkind = 'r' AND c.relname <> 'alembic_version' GROUP BY c.relname""")
    assert dict(rows) == SCHEMA


@pytest.mark.parametrize(("sql", "error"), [
    # contract demand must be positive
    ("INSERT INTO facilities VALUES ('plant-b', 'B', 'UTC', 0)", psycopg.errors.CheckViolation),
    # a meter of an unknown facility
    ("INSERT INTO meters VALUES ('m-1', 'plant-x', 'main', 15)",
     psycopg.errors.ForeignKeyViolation),
    # an event must end after it starts
    ("INSERT INTO dr_events (facility_id, event_start, event_end, status) VALUES "
     "('plant-a', '2026-07-01 14:00Z', '2026-07-01 14:00Z', 'scheduled')",
     psycopg.errors.CheckViolation),
    # the status is one of four
    ("INSERT INTO dr_events (facility_id, event_start, event_end, status) VALUES "
     "('plant-a', '2026-07-01 14:00Z', '2026-07-01 16:00Z', 'postponed')",
     psycopg.errors.CheckViolation),
    # the utility's event id is unique (event U-1 exists)
    ("INSERT INTO dr_events (event_id, facility_id, event_start, event_end, status) VALUES "
     "('U-1', 'plant-a', '2026-07-02 14:00Z', '2026-07-02 16:00Z', 'scheduled')",
     psycopg.errors.UniqueViolation),
])
def test_constraints_reject_bad_rows(migrated: str, sql: str,
                                     error: type[psycopg.Error]) -> None:
    execute(migrated, "INSERT INTO facilities VALUES ('plant-a', 'A', 'UTC', 10)")
    execute(migrated, "INSERT INTO dr_events (event_id, facility_id, event_start, event_end, "
                      "status) VALUES ('U-1', 'plant-a', '2026-07-01 14:00Z', "
                      "'2026-07-01 16:00Z', 'scheduled')")
    with pytest.raises(error):
        execute(migrated, sql)


def test_load_forecasts_are_unique_per_facility_and_time(
    migrated: str,
) -> None:
    execute(migrated, "INSERT INTO facilities VALUES ('plant-a', 'A', 'UTC', 10)")
    at = T0 + timedelta(hours=1)
    insert = ("INSERT INTO load_forecasts VALUES ('plant-a', %s, 50, 45, 55, 40, 60, 'gbm', %s)")
    execute(migrated, insert, (at, T0))
    with pytest.raises(psycopg.errors.UniqueViolation):
        execute(migrated, insert, (at, T0 + timedelta(minutes=15)))



# -- the store -------------------------------------------------------------------------------


async def test_record_is_idempotent_and_lists_dead_letters_newest_first(
    store: PostgresStore,
) -> None:
    await store.record([dead_letter(1), dead_letter(2), dead_letter(1)],
                       [Checkpoint("plant-a", None, 1_000), Checkpoint("plant-a", None, 2_000)])
    # a redelivered message is the same dead letter; a checkpoint is replaced
    await store.record([dead_letter(2), dead_letter(3)], [Checkpoint("plant-a", 60_000, 75_000),
                                                          Checkpoint("plant-b", None, 5)])
    assert await store.dead_letters(limit=10) == [dead_letter(3), dead_letter(2), dead_letter(1)]
    assert await store.dead_letters(limit=2) == [dead_letter(3), dead_letter(2)]
    # the same payload from another topic is another dead letter
    await store.record([dead_letter(1, source="meters/plant-b/b-main")], [])
    assert len(await store.dead_letters(limit=10)) == 4
    assert await store.checkpoints() == [Checkpoint("plant-a", 60_000, 75_000),
                                         Checkpoint("plant-b", None, 5)]
    # rows inserted, not rows offered
    assert sample(store, "sems_store_rows_written_total", table="dead_letters") == 4


async def test_a_utility_event_stored_under_another_id_is_a_replay(
    store: PostgresStore,
) -> None:
    """The utility's (utility, event id, facility) key is unique too: a notification whose
    event was stored under another id (by a tool, an older SEMS) is answered as a replay, not
    by the unique violation (which was a 500)."""
    await store.upsert_facilities([Facility(facility_id="plant-a", name="A",
                                            contract_demand_kw=100)])
    start = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)
    first = DrEvent(id=str(uuid.uuid4()), event_id="E-1", utility_id="gridco",
                    facility_id="plant-a", source="webhook", event_start=start,
                    event_end=start + timedelta(hours=1), target_reduction_percentage=20.0,
                    created_at=start, updated_at=start)
    assert await store.insert_dr_event(first)
    again = first.model_copy(update={"id": webhook_event_uuid("gridco", "E-1", "plant-a")})
    created = await store.create_dr_events([again])
    assert created.events == (first,) and created.replayed == {first.id}
    assert created.inserted == () and created.conflicts == ()
    assert [e.id for e in await store.dr_events()] == [first.id]


async def test_record_is_atomic(store: PostgresStore) -> None:
    await store.record([dead_letter(1)], [Checkpoint("plant-a", None, 1_000)])
    # The checkpoint overflows bigint: the dead letters written before it in the same
    # transaction must go too.
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        await store.record([dead_letter(2)], [Checkpoint("plant-a", 60_000, 2**63)])
    assert await store.dead_letters(limit=10) == [dead_letter(1)]
    assert await store.checkpoints() == [Checkpoint("plant-a", None, 1_000)]
    assert sample(store, "sems_store_errors_total", operation="record") == 1


async def test_a_payload_with_a_nul_byte_is_kept_as_base64(store: PostgresStore) -> None:
    """jsonb cannot hold U+0000; the batch must not fail (it would on every retry)."""
    nul = dead_letter(1).model_copy(update={"raw_payload": "{\x00}", "message": "bad \x00"})
    await store.record([nul], [])
    await store.record([nul], [])  # redelivered: still one
    assert await store.dead_letters(limit=10) == [nul.model_copy(update={
        "raw_payload": "ewB9", "payload_encoding": "base64",  # base64 of b"{\x00}"
        "message": "bad \ufffd",
    })]


async def test_prune_dead_letters_deletes_those_received_before(store: PostgresStore) -> None:
    await store.record([dead_letter(n) for n in range(5)], [])
    assert await store.prune_dead_letters(T0 + timedelta(seconds=3)) == 3
    assert await store.dead_letters(limit=10) == [dead_letter(4), dead_letter(3)]
    with pytest.raises(ValueError, match="aware"):
        await store.prune_dead_letters(datetime(2026, 1, 1))


async def test_store_answers_as_sqlite_does(store: PostgresStore, tmp_path: Path) -> None:
    """The orderings and last-one-wins upserts, side by side with the embedded store."""
    sqlite = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await sqlite.open()
    try:
        for s in (store, sqlite):
            await s.upsert_facilities([facility("plant_a"), facility("plant-b"),
                                       facility("Plant-c"), facility("plant_a", 250.0)])
            await s.upsert_meters([
                Meter(meter_id=m, facility_id="plant-b", meter_type=MeterType.MAIN)
                for m in ("b.main", "b-main", "B-hvac", "b_plug")
            ] + [Meter(meter_id="b-main", facility_id="plant-b", meter_type=MeterType.HVAC,
                       sample_interval_s=5)])
            await s.upsert_facilities([facility("plant-b", 80.0)])
        assert await store.facilities() == await sqlite.facilities()
        assert [f.facility_id for f in await store.facilities()] == ["Plant-c", "plant-b",
                                                                    "plant_a"]
        assert (await store.facilities())[2].contract_demand_kw == 250.0
        assert await store.meters() == await sqlite.meters()
        assert [m.meter_id for m in await store.meters()] == ["B-hvac", "b-main", "b.main",
                                                             "b_plug"]
        await store.ping()
    finally:
        await sqlite.close()


async def test_a_missing_schema_is_reported_as_unavailable(database: str) -> None:
    s = PostgresStore(database, metrics=Metrics())
    await s.open()
    try:
        with pytest.raises(StoreUnavailable, match="sems db upgrade"):
            await s.facilities()
    finally:
        await s.close()


async def test_a_closed_store_is_unavailable(store: PostgresStore) -> None:
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()


# -- outages ---------------------------------------------------------------------------------


def secret_dsn(server: Postgres) -> str:
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{server.port}/sems"


async def assert_unavailable(call: Awaitable[object]) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as failure:
        await call
    assert time.monotonic() - started < 3 * TIMEOUT_S
    message = f"{failure.value} {failure.value.__cause__!r}"
    assert "PostgreSQL at 127.0.0.1:" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_calls_fail_fast_while_the_server_is_down_and_the_store_recovers_by_itself(
    own_postgres: Postgres, outage: Literal["stop", "kill"],
) -> None:
    upgrade(own_postgres.dsn)
    store = PostgresStore(secret_dsn(own_postgres), metrics=Metrics(), max_size=4,
                          timeout_s=TIMEOUT_S)
    await store.open()
    try:
        await store.upsert_facilities([facility("plant-a")])
        # Several pooled connections, all of which the outage breaks.
        await asyncio.gather(*(store.facilities() for _ in range(4)))

        if outage == "stop":
            own_postgres.stop()
        else:
            own_postgres.kill()
        for _ in range(2):
            await assert_unavailable(store.ping())
            await assert_unavailable(store.facilities())
            await assert_unavailable(store.record([dead_letter(1)], []))
        assert sample(store, "sems_store_errors_total", operation="record") == 2

        own_postgres.start()
        await answers_again(store)
        # Everything works again, on the same store object, with the data of before.
        assert await asyncio.gather(*(store.facilities() for _ in range(8))) == \
            [[facility("plant-a")]] * 8
        await store.record([dead_letter(1)], [])
        assert await store.dead_letters(limit=10) == [dead_letter(1)]
    finally:
        await store.close()


async def test_the_store_opens_while_the_server_is_down(own_postgres: Postgres) -> None:
    """SEMS starts before PostgreSQL: open() does not wait, calls fail until the server is up."""
    upgrade(own_postgres.dsn)
    own_postgres.stop()
    store = PostgresStore(secret_dsn(own_postgres), metrics=Metrics(), timeout_s=TIMEOUT_S)
    started = time.monotonic()
    await store.open()
    try:
        assert time.monotonic() - started < TIMEOUT_S
        await assert_unavailable(store.checkpoints())

        own_postgres.start()
        await answers_again(store)
        assert await store.checkpoints() == []
    finally:
        await store.close()


async def sems_sessions(server: Postgres) -> int:
    async with await psycopg.AsyncConnection.connect(server.dsn) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sems'"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_a_restart_between_calls_fails_no_call(own_postgres: Postgres) -> None:
    """Every pooled connection dies with the server; the first call after the restart still
    succeeds: connections are checked before use and the first broken one sweeps the pool
    (checking them one by one would back off 1 + 2 s, past the timeout)."""
    store = PostgresStore(own_postgres.dsn, metrics=Metrics(), min_size=4, max_size=4,
                          timeout_s=TIMEOUT_S)
    await store.open()
    try:
        async def pool_is_full() -> bool:
            return await sems_sessions(own_postgres) == 4

        await eventually(pool_is_full, timeout_s=10, what="the pool opened 4 connections")
        own_postgres.stop()
        own_postgres.start()
        await store.ping()
        assert sample(store, "sems_store_errors_total", operation="ping") is None
    finally:
        await store.close()


async def test_a_long_outage_does_not_delay_the_recovery(own_postgres: Postgres) -> None:
    """The pool's reconnection backs off (attempts at about 1, 3, 7, 15, 31 s) until
    ``reconnect_timeout``; with the default (5 min) a server back after 20 s stayed unused for
    about 10 s more. Giving up after ``timeout_s`` lets the next call try at once."""
    store = PostgresStore(own_postgres.dsn, metrics=Metrics(), timeout_s=TIMEOUT_S)
    await store.open()
    try:
        await store.ping()
        own_postgres.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < 20:  # the calls themselves take the time
            await assert_unavailable(store.ping())
        own_postgres.start()
        back_at = time.monotonic()
        await answers_again(store)
        assert time.monotonic() - back_at < 3 * TIMEOUT_S
    finally:
        await store.close()
