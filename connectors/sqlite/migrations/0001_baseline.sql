-- 0001: the schema of the last release before migrations were numbered (cf168ae). Times are
-- epoch milliseconds, UTC.
--
-- Idempotent (IF NOT EXISTS), because a file that release made has user_version 0 and all of
-- this already; a file made by an older one still lacks some columns, which the migration's
-- Python part adds (migrations/__init__.py, BASELINE_COLUMNS). Frozen: the statements are
-- those that release ran, comments inside them included, since SQLite keeps that text in the
-- file's schema and a new file must end with the same schema as an upgraded one. Change the
-- schema with a new migration, never here. (The journal mode is set by the connection.)

CREATE TABLE IF NOT EXISTS facilities (
    facility_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    contract_demand_kw REAL NOT NULL,
    latitude REAL,
    longitude REAL,
    country TEXT,
    dr_baseline TEXT
);

CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    facility_id TEXT NOT NULL REFERENCES facilities (facility_id),
    meter_type TEXT NOT NULL,
    sample_interval_s REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS readings (
    meter_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    facility_id TEXT NOT NULL,
    meter_type TEXT NOT NULL,
    active_power_kw REAL NOT NULL,
    reactive_power_kvar REAL NOT NULL,
    voltage_v REAL NOT NULL,
    frequency_hz REAL NOT NULL,
    PRIMARY KEY (meter_id, ts_ms)
) WITHOUT ROWID;

-- No secondary index: every query goes through a facility's meters and the primary key, and
-- a second B-tree per row was a visible share of the ingest cost.
DROP INDEX IF EXISTS readings_by_facility_time;

CREATE TABLE IF NOT EXISTS rollups (
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    window TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms INTEGER NOT NULL,
    facility_id TEXT NOT NULL,
    meter_id TEXT,
    avg_power_kw REAL NOT NULL,
    max_power_kw REAL,
    min_power_kw REAL,
    total_energy_kwh REAL NOT NULL,
    sample_count INTEGER NOT NULL,
    covered_s REAL NOT NULL,
    coverage REAL NOT NULL,
    PRIMARY KEY (scope, scope_id, window, window_start_ms)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS rollups_by_facility ON rollups (facility_id, window, window_start_ms);

-- One row per distinct (source, payload): MQTT delivers at least once, so a message that is
-- redelivered after a crash must not become a second dead letter.
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (source, payload_sha256)
);

CREATE TABLE IF NOT EXISTS window_checkpoints (
    facility_id TEXT PRIMARY KEY,
    closed_until_ms INTEGER,
    max_ts_ms INTEGER NOT NULL
);

-- Utilities that send demand-response events, and their API keys (SHA-256 of the secret only).
CREATE TABLE IF NOT EXISTS utilities (
    utility_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    facility_ids TEXT NOT NULL,  -- JSON array of the enrolled facilities
    webhook_secret TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS utility_api_keys (
    key_id TEXT PRIMARY KEY,
    utility_id TEXT NOT NULL REFERENCES utilities (utility_id),
    key_sha256 TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

-- One row per facility and forecast time; a newer run replaces an older one's values.
CREATE TABLE IF NOT EXISTS load_forecasts (
    facility_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    predicted_load_kw REAL NOT NULL,
    confidence_lower REAL NOT NULL,
    confidence_upper REAL NOT NULL,
    lower_95 REAL NOT NULL,
    upper_95 REAL NOT NULL,
    model TEXT NOT NULL,
    made_at_ms INTEGER NOT NULL,
    weather_used INTEGER NOT NULL,
    PRIMARY KEY (facility_id, ts_ms)
) WITHOUT ROWID;

-- Demand-response events (schemas/dr.py DrEvent as JSON in record; the columns are its keys).
CREATE TABLE IF NOT EXISTS dr_events (
    id TEXT PRIMARY KEY,
    utility_id TEXT,
    event_id TEXT,
    facility_id TEXT NOT NULL,
    status TEXT NOT NULL,
    event_start_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    -- Added after dr_events first shipped (store.py ADDED_COLUMNS); always written since.
    event_end_ms INTEGER
);

CREATE INDEX IF NOT EXISTS dr_events_by_facility ON dr_events (facility_id, event_start_ms);
CREATE INDEX IF NOT EXISTS dr_events_by_status ON dr_events (status);

-- The BMS command audit trail: one row per command, written before it is sent.
CREATE TABLE IF NOT EXISTS bms_commands (
    command_id TEXT PRIMARY KEY,
    dr_event_id TEXT NOT NULL,
    requested_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS bms_commands_by_event ON bms_commands (dr_event_id, requested_at_ms);
