-- 0002: people (issue 16): organisations and their facilities, users, memberships (one role
-- per user per organisation), facility assignments, personal tokens, sign-in failures, the
-- audit log and signed-in sessions. Times are epoch microseconds, UTC (the identity records
-- keep what PostgreSQL's timestamptz keeps). Emails are lower-cased by the schema before they
-- get here; NOCASE keeps them unique whatever a writer did. Secrets are SHA-256 digests.
-- The rules across rows (the last active admin, assignments within the organisation) are the
-- adapter's, in the write transaction (connectors/sqlite/identity.py).

CREATE TABLE organisations (
    organisation_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

-- Kept apart from facilities, whose registry contract stays as it was.
CREATE TABLE organisation_facilities (
    facility_id TEXT PRIMARY KEY REFERENCES facilities (facility_id),
    organisation_id TEXT NOT NULL REFERENCES organisations (organisation_id),
    UNIQUE (facility_id, organisation_id)
);

CREATE INDEX organisation_facilities_by_organisation
    ON organisation_facilities (organisation_id);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    email TEXT NOT NULL COLLATE NOCASE UNIQUE,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at_us INTEGER NOT NULL,
    last_sign_in_at_us INTEGER,
    password_hash TEXT,
    oidc_issuer TEXT,
    oidc_subject TEXT,
    CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL)),
    UNIQUE (oidc_issuer, oidc_subject)
);

CREATE TABLE memberships (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    organisation_id TEXT NOT NULL REFERENCES organisations (organisation_id),
    role TEXT NOT NULL CHECK (role IN ('admin', 'energy_manager', 'facility_manager',
                                       'operator', 'viewer')),
    PRIMARY KEY (user_id, organisation_id)
) WITHOUT ROWID;

CREATE INDEX memberships_by_organisation ON memberships (organisation_id, role);

CREATE TABLE facility_assignments (
    user_id TEXT NOT NULL,
    organisation_id TEXT NOT NULL,
    facility_id TEXT NOT NULL,
    PRIMARY KEY (user_id, organisation_id, facility_id),
    FOREIGN KEY (user_id, organisation_id) REFERENCES memberships (user_id, organisation_id),
    -- A facility of the member's own organisation.
    FOREIGN KEY (facility_id, organisation_id)
        REFERENCES organisation_facilities (facility_id, organisation_id)
) WITHOUT ROWID;

CREATE INDEX facility_assignments_by_facility ON facility_assignments (facility_id);

CREATE TABLE personal_tokens (
    token_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    organisation_id TEXT NOT NULL REFERENCES organisations (organisation_id),
    token_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    facility_ids TEXT,  -- JSON array; NULL: every facility the owner has
    created_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
);

CREATE INDEX personal_tokens_by_user ON personal_tokens (user_id, created_at_us);

CREATE TABLE sign_in_failures (
    account TEXT PRIMARY KEY,
    failures INTEGER NOT NULL CHECK (failures > 0),
    first_failed_at_us INTEGER NOT NULL,
    last_failed_at_us INTEGER NOT NULL
);

CREATE TABLE audit_log (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    organisation_id TEXT,
    target TEXT,
    client_address TEXT,
    details TEXT NOT NULL  -- JSON object
);

CREATE INDEX audit_log_by_organisation ON audit_log (organisation_id, audit_id);
CREATE INDEX audit_log_by_at ON audit_log (at_us);

CREATE TABLE sessions (
    session_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    organisation_id TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    last_seen_at_us INTEGER NOT NULL,
    idle_timeout_s REAL NOT NULL,
    absolute_expires_at_us INTEGER NOT NULL,
    client_address TEXT,
    user_agent TEXT,
    revoked_at_us INTEGER
) WITHOUT ROWID;

CREATE INDEX sessions_by_user ON sessions (user_id);
