-- 0003: one-time password-reset tokens (issue 16). Only the token's SHA-256 is stored; a
-- token sets its user's password once, before it expires (connectors/sqlite/identity.py,
-- use_password_reset). Times are epoch microseconds, UTC.

CREATE TABLE password_resets (
    token_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    organisation_id TEXT,
    created_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    used_at_us INTEGER,
    CHECK (expires_at_us > created_at_us)
) WITHOUT ROWID;

CREATE INDEX password_resets_by_user ON password_resets (user_id);

-- A deleted user's tokens go with them (the store does not enforce foreign keys, and
-- delete_user, which predates this table, does not name it).
CREATE TRIGGER password_resets_of_a_deleted_user AFTER DELETE ON users
BEGIN
    DELETE FROM password_resets WHERE user_id = OLD.user_id;
END;
