"""The embedded store's schema migrations on real files: a file made by the last release before
numbered migrations (cf168ae, tests/fixtures/sqlite_cf168ae.sql) upgrades with its data and
ends with the schema of a new file; opening a current file changes nothing; a file from a
newer SEMS is refused untouched."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.sqlite import SqliteStore
from connectors.sqlite.migrations import LATEST, MIGRATIONS, SchemaTooNew, migrate
from core.metrics import Metrics
from schemas.dr import DrEvent
from schemas.identity import Organisation, PasswordReset, PersonRole, User
from schemas.metadata import Facility, MeterType
from schemas.reading import SensorReading
from schemas.rollup import Scope, WindowName
from tables.ports.timeseries import CommitBatch
from tables.rollups import Checkpoint

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sqlite_cf168ae.sql"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # the fixture's rows are around it
EVENT_ID = "6e18d396-0415-596c-a2f1-4005a88345da"  # webhook_event_uuid("gridco", "E-1", ...)
PLANT_A = Facility(facility_id="plant-a", name="Plant A", timezone="Europe/Berlin",
                   contract_demand_kw=400.0, latitude=52.52, longitude=13.405, country="DE",
                   dr_baseline="caiso_10_in_10")


def cf168ae_file(path: Path) -> Path:
    """A file as the cf168ae store left it: its schema script run by executescript (WAL
    included), then its rows."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(FIXTURE.read_text(encoding="utf-8"))
    finally:
        conn.close()
    return path


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    """Every table and index as SQLite keeps it (``rootpage`` aside: where it is in the file)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "ORDER BY type, name").fetchall()
    finally:
        conn.close()


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path, metrics=Metrics())
    await store.open()
    return store


async def test_a_store_made_by_cf168ae_upgrades_with_its_data(tmp_path: Path) -> None:
    path = cf168ae_file(tmp_path / "sems.db")
    assert user_version(path) == 0
    store = await opened(path)
    try:
        assert user_version(path) == LATEST
        assert await store.facilities() == [
            PLANT_A, Facility(facility_id="plant-b", name="Plant B", contract_demand_kw=150.0)]
        assert await store.facility("plant-a") == PLANT_A
        assert [m.meter_id for m in await store.meters()] == ["a-hvac", "a-main", "b-main"]
        latest = await store.latest_readings("plant-a")
        assert [(r.meter_id, r.timestamp, r.active_power_kw, r.reactive_power_kvar)
                for r in latest] == [("a-hvac", T0 + timedelta(seconds=30), 12.5, 1.5625),
                                     ("a-main", T0 + timedelta(seconds=30), 12.5, 1.5625)]
        [rollup] = await store.rollups(scope=Scope.METER, scope_id="a-main",
                                       window=WindowName.MIN_1, start=T0,
                                       end=T0 + timedelta(hours=1), limit=10)
        assert (rollup.avg_power_kw, rollup.max_power_kw, rollup.coverage) == (11.25, 12.5, 0.75)
        [letter] = await store.dead_letters(limit=10)
        assert letter.raw_payload == "garbage 1"
        assert await store.checkpoints() == [
            Checkpoint("plant-a", 1_793_613_600_000, 1_793_613_630_000)]
        utility = await store.utility("gridco")
        assert utility is not None and utility.facility_ids == ("plant-a",)
        assert utility.webhook_secret.get_secret_value() == "whsec-gridco"
        key = await store.api_key("0123456789abcdef")
        assert key is not None and key.utility_id == "gridco" and key.revoked_at is None
        rows = await store.forecast_rows("plant-a", start=T0, end=T0 + timedelta(hours=1))
        assert [(r.point.predicted_load_kw, r.model) for r in rows] == [
            (100.0, "fourier_ols"), (110.0, "fourier_ols")]
        event = await store.dr_event(EVENT_ID)
        assert event is not None and event.failures == ("zone-1: fault [injected]",)
        assert event.event_end == T0 + timedelta(hours=7)
        [command] = await store.bms_commands(EVENT_ID)
        assert (command.target_id, command.restore_value) == ("zone-1", 0.5)

        # ... and it works on: a write, and the overlap check on the old event's end.
        await store.commit(CommitBatch(readings=[SensorReading(
            facility_id="plant-b", meter_id="b-main", meter_type=MeterType.MAIN,
            timestamp=T0 + timedelta(minutes=5), active_power_kw=9.0, reactive_power_kvar=1.0,
            voltage_v=230.0, frequency_hz=50.0)]))
        assert await store.has_reading("b-main", T0 + timedelta(minutes=5))
        late = event.model_copy(update={"id": "0b7c0e53-6d4c-4c55-9a43-7b6a3c1f2e10",
                                        "event_id": "E-2", "failures": (),
                                        "event_start": T0 + timedelta(hours=6, minutes=30),
                                        "event_end": T0 + timedelta(hours=8)})
        created = await store.create_dr_events([late])
        assert [e.id for e in created.conflicts] == [EVENT_ID]
    finally:
        await store.close()


async def test_a_new_store_and_an_upgraded_one_have_the_same_schema(tmp_path: Path) -> None:
    await (await opened(tmp_path / "new.db")).close()
    await (await opened(cf168ae_file(tmp_path / "old.db"))).close()
    new, upgraded = schema(tmp_path / "new.db"), schema(tmp_path / "old.db")
    assert new == upgraded
    assert {name for kind, name, _, _ in new if kind == "table"} >= {
        "facilities", "meters", "readings", "rollups", "dead_letters", "window_checkpoints",
        "utilities", "utility_api_keys", "load_forecasts", "dr_events", "bms_commands",
        "organisations", "organisation_facilities", "users", "memberships",
        "facility_assignments", "personal_tokens", "sign_in_failures", "audit_log", "sessions",
        "password_resets"}
    assert user_version(tmp_path / "new.db") == user_version(tmp_path / "old.db") == LATEST


async def test_opening_a_current_store_again_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "sems.db"
    with caplog.at_level(logging.INFO, logger="connectors.sqlite.db"):
        store = await opened(path)
        await store.upsert_facilities([PLANT_A])
        await store.close()
        assert any("migrated to schema version" in r.getMessage() for r in caplog.records)
        before = schema(path)
        caplog.clear()

        store = await opened(path)
        try:
            assert await store.facilities() == [PLANT_A]
        finally:
            await store.close()
        assert not any("migrated" in r.getMessage() for r in caplog.records)
    assert schema(path) == before
    assert user_version(path) == LATEST
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn) == []
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["empty", "current"])
async def test_a_store_from_a_newer_sems_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "sems.db"
    if kind == "current":
        await (await opened(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    before = schema(path)

    store = SqliteStore(path, metrics=Metrics())
    with pytest.raises(SchemaTooNew, match=rf"version {LATEST + 1}.* up to {LATEST}"):
        await store.open()
    await store.close()
    assert user_version(path) == LATEST + 1
    assert schema(path) == before


async def test_a_store_older_than_cf168ae_gets_the_columns_it_lacks(tmp_path: Path) -> None:
    """Files from before facilities had a location and DR events an end column: the columns
    are added and every event's end filled in from its record."""
    path = cf168ae_file(tmp_path / "sems.db")
    conn = sqlite3.connect(path)
    conn.executescript("""
        DROP INDEX dr_events_by_facility_end;
        ALTER TABLE dr_events DROP COLUMN event_end_ms;
        ALTER TABLE facilities DROP COLUMN latitude;
        ALTER TABLE facilities DROP COLUMN longitude;
        ALTER TABLE facilities DROP COLUMN country;
        ALTER TABLE facilities DROP COLUMN dr_baseline;
    """)
    conn.close()

    store = await opened(path)
    try:
        assert await store.facility("plant-a") == PLANT_A.model_copy(update={
            "latitude": None, "longitude": None, "country": None, "dr_baseline": None})
        event = await store.dr_event(EVENT_ID)
        assert isinstance(event, DrEvent)
        overlapping = event.model_copy(update={"id": "5f0d3c1e-2b8a-4a57-9d3e-1c2b3a4d5e6f",
                                               "event_id": "E-3",
                                               "event_start": event.event_end
                                               - timedelta(minutes=1),
                                               "event_end": event.event_end
                                               + timedelta(hours=1)})
        created = await store.create_dr_events([overlapping])
        assert [e.id for e in created.conflicts] == [EVENT_ID]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT event_end_ms FROM dr_events").fetchall() == [
            (round((T0 + timedelta(hours=7)).timestamp() * 1000),)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name = "
                            "'dr_events_by_facility_end'").fetchall() == [
            ("dr_events_by_facility_end",)]
    finally:
        conn.close()
    assert user_version(path) == LATEST


async def test_a_store_at_version_1_gains_the_identity_tables_with_its_data(
    tmp_path: Path,
) -> None:
    """A file of the release before people (migration 1 only, issue 16) opens at the latest
    version with its rows, and takes organisations, users and roles at once."""
    path = cf168ae_file(tmp_path / "sems.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, MIGRATIONS[:1]) == [1]
    finally:
        conn.close()
    assert user_version(path) == 1
    store = await opened(path)
    try:
        assert user_version(path) == LATEST
        assert await store.facility("plant-a") == PLANT_A
        assert await store.organisations() == []
        await store.add_organisation(Organisation(organisation_id="acme", name="Acme"))
        await store.set_facility_organisation("plant-a", "acme")
        await store.add_user(User(user_id="u-1", email="Ops@Acme.example", display_name="Ops",
                                  created_at=T0))
        await store.set_membership("u-1", "acme", PersonRole.OPERATOR)
        await store.set_assignments("u-1", "acme", ["plant-a"])
        membership = await store.membership("u-1", "acme")
        assert membership is not None and membership.facility_ids == ("plant-a",)
        found = await store.user_by_email("ops@acme.example")
        assert found is not None and found.user_id == "u-1"
    finally:
        await store.close()
    new = tmp_path / "new.db"
    await (await opened(new)).close()
    assert schema(new) == schema(path)


async def test_a_store_at_version_2_gains_password_resets_that_go_with_their_user(
    tmp_path: Path,
) -> None:
    """A file of the release before password resets (issue 16) keeps its users, and a
    deleted user's resets are deleted with them (the trigger of migration 3)."""
    path = cf168ae_file(tmp_path / "sems.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn, MIGRATIONS[:2]) == [1, 2]
    finally:
        conn.close()
    store = await opened(path)
    try:
        assert user_version(path) == LATEST >= 3
        await store.add_user(User(user_id="u-1", email="ops@acme.example", display_name="Ops",
                                  created_at=T0))
        reset = PasswordReset(token_sha256="a" * 64, user_id="u-1", created_at=T0,
                              expires_at=T0 + timedelta(minutes=30), created_by="cli")
        await store.add_password_reset(reset)
        assert await store.password_reset("a" * 64) == reset
        await store.delete_user("u-1")
        assert await store.password_reset("a" * 64) is None
    finally:
        await store.close()
